"""Building a run: device and precision, data, augmentation, the method, its optimizer and schedule, the cluster
source, the memory bank; from a config (a new run), a checkpoint (resume) or a trained checkpoint (evaluation)."""

from __future__ import annotations

import copy
import importlib.util
import math
import random
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import torch
from omegaconf import OmegaConf

from selfsup_clusters.clusters import (
    Assignments,
    ClusterSource,
    KMeansOptions,
    Shard,
    build_cluster_source,
    refuse_uninformative,
)
from selfsup_clusters.config import Config, merge_overrides, to_dict, to_yaml, validate
from selfsup_clusters.core import distributed
from selfsup_clusters.core.errors import DIVERGED_FILE, UserError, first_line
from selfsup_clusters.core.files import writable_folder
from selfsup_clusters.core.seeds import derived_seed
from selfsup_clusters.data import ImageDataset, load_dataset
from selfsup_clusters.data.augment import BatchAugment
from selfsup_clusters.data.loader import Batches, make_batches
from selfsup_clusters.evaluation.evaluate import extract_features
from selfsup_clusters.methods.base import Method
from selfsup_clusters.methods.memory import MemoryBank, ShardedMemoryBank
from selfsup_clusters.methods.registry import build_method, method_class, method_options
from selfsup_clusters.training.checkpoint import load_checkpoint, mismatch
from selfsup_clusters.training.run_identity import check_identity, new_run_id, write_config_file


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name!r} asked for, but no CUDA GPU is available; use device=cpu or device=auto")
    return device


def resolve_precision(name: str, device: torch.device) -> str:
    """"auto" is bf16 where the hardware computes it natively (CUDA GPUs with bf16; CPUs with AVX512-BF16 or AMX),
    else fp32 (elsewhere bf16 is emulated and slower than fp32)."""
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    native = device.type == "cpu" and (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    return "bf16" if native else "fp32"


def epoch_generator(cfg: Config, epoch: int, device: torch.device) -> torch.Generator:
    """The epoch's shuffling and augmentation randomness depends only on (seed, epoch): resume is exact."""
    return torch.Generator(device=device).manual_seed(derived_seed(cfg.seed, epoch))


def autocast(run: Run):
    """bf16 autocast for forward passes when the run's precision is bf16; the losses compute in float32."""
    return torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=run.precision == "bf16")


def build_optimizer(cfg: Config, model: torch.nn.Module, steps_per_epoch: int):
    """SGD with momentum (optionally Nesterov) or AdamW; lr scaled by batch/256; linear warm-up then cosine, stepped
    per batch. Norm-layer weights and biases (ndim <= 1) get no weight decay."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
    o = cfg.optim
    lr = o.lr * cfg.batch_size / 256
    kernel = o.kernel if o.kernel != "auto" else "fused" if next(model.parameters()).device.type == "cpu" \
        else "foreach"
    how = {"fused": {"fused": True}, "foreach": {"foreach": True}, "loop": {"foreach": False}}[kernel]
    if o.name == "sgd":
        optimizer = torch.optim.SGD(groups, lr=lr, momentum=o.momentum, weight_decay=o.weight_decay,
                                    nesterov=o.nesterov, **how)
    else:
        optimizer = torch.optim.AdamW(groups, lr=lr, weight_decay=o.weight_decay, **how)
    total = cfg.epochs * steps_per_epoch
    warmup = min(int(o.warmup_epochs * steps_per_epoch), total - 1)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@dataclass
class EpochProgress:
    """An epoch in progress: the steps done and what they have added up (the clusterings made before its first
    step included). A step checkpoint keeps it, so a stopped epoch continues where it stopped and ends as it would
    have."""

    step: int = 0
    clusters: list[dict] = field(default_factory=list)  # the rows of the clusterings made for this epoch
    loss_sum: torch.Tensor | None = None  # 0-d, on the device (in a step checkpoint: (ranks,), every rank's)
    mates_sum: torch.Tensor | None = None  # (clusterings,): each clustering's cluster-mates per anchor, summed
    data_time: float = 0.0
    seconds: float = 0.0  # this epoch's training time before the last stop
    # a `makes_clusters` method's own clusters of the bank at the epoch's start, [(name, ids)]: its diagnostics
    own_clusters: list | None = None

    def state_dict(self) -> dict:
        return {"step": self.step, "clusters": self.clusters, "data_time": self.data_time, "seconds": self.seconds,
                "own_clusters": self.own_clusters,
                **{key: None if value is None else value.cpu() for key, value in
                   (("loss_sum", self.loss_sum), ("mates_sum", self.mates_sum))}}

    @classmethod
    def from_state_dict(cls, state: dict, device: torch.device) -> EpochProgress:
        """The progress a step checkpoint saved, this rank's loss sum taken from every rank's (their mean when the
        run resumes on another number of processes: only the logged loss is then approximate)."""
        losses = state["loss_sum"]
        if losses.dim() == 1:
            losses = losses[distributed.rank()] if len(losses) == distributed.world_size() else losses.mean()
        mates = state["mates_sum"]
        return cls(state["step"], state["clusters"], losses.to(device), None if mates is None else mates.to(device),
                   state["data_time"], state["seconds"], state.get("own_clusters"))


@dataclass
class Run:
    """Everything the loop touches, built once by `setup`."""

    cfg: Config
    out_dir: Path
    device: torch.device
    data: ImageDataset
    augment: BatchAugment
    batches: Batches
    method: Method
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    memory: MemoryBank | ShardedMemoryBank
    steps_per_epoch: int
    cluster_source: ClusterSource | None = None
    assignments: Assignments | None = None
    start_epoch: int = 0
    train_time_s: float = 0.0  # training wall time of the epochs before start_epoch (resume keeps counting)
    precision: str = "fp32"  # resolved: "fp32" or "bf16"
    model: torch.nn.Module | None = None  # what a step calls: the method, in DistributedDataParallel under torchrun
    resumed_progress: EpochProgress | None = None  # the epoch a step checkpoint stopped in (resume goes on in it)
    cluster_stats: dict[str, dict] = field(default_factory=dict)  # each clustering's statistics, by name
    started: float = 0.0  # perf_counter when this process began training (train_time_s counts on from there)
    run_id: str = ""  # in config.yaml, final.json and every checkpoint (run_identity.py)


def config_from_checkpoint(checkpoint: dict, overrides: list[str] | None = None) -> Config:
    """The config a checkpoint was trained with (on today's schema), with `overrides` applied. A checkpoint from
    before optim.kernel keeps the step it trained with (optim.foreach: true/false -> "foreach"/"loop")."""
    saved = copy.deepcopy(checkpoint["config"])
    optim = saved.get("optim", {})
    if "foreach" in optim:
        optim["kernel"] = "foreach" if optim.pop("foreach") else "loop"
    cfg = merge_overrides(OmegaConf.merge(OmegaConf.structured(Config), saved), overrides or [])
    # A checkpoint from before per-method options holds every method's settings: its own are kept
    cfg.method_args = method_options(cfg.method, cfg.method_args)
    return cfg


def build_clusters(cfg: Config, data: ImageDataset) -> ClusterSource | None:
    """The cluster source of `--clusters`; bad specs (e.g. K larger than the data) fail here, before training."""
    c = cfg.clusters
    options = KMeansOptions(niter=c.niter, nredo=c.nredo, seed=cfg.seed, use_gpu=c.use_gpu,
                            min_points_per_centroid=c.min_points_per_centroid, progress=cfg.log.progress)
    return build_cluster_source(c.spec, data.auxiliary, kmeans_options=options, wordnet_dir=c.wordnet_dir)


def require_faiss(needs: list[str]) -> None:
    """FAISS is an extra (faiss-cpu or faiss-gpu-cu12, never both): what `needs` it stops before any work when
    neither is installed."""
    if needs and importlib.util.find_spec("faiss") is None:
        raise UserError(f"{' and '.join(needs)} need FAISS, which is not installed: pip install faiss-cpu (or "
                        "faiss-gpu-cu12 on a CUDA 12 machine), or install selfsup-clusters with its [cpu] extra")


def build_parts(cfg: Config, data: ImageDataset | None, device: torch.device):
    """Data (load_dataset's, unless given), batches, cluster source and method: what a training run and an
    evaluation of a trained one share."""
    data = load_dataset(cfg.data) if data is None else data
    augment = BatchAugment(cfg.augment, cfg.data.image_size, data.mean, data.std)
    batches = make_batches(data, augment, device, cfg.data.num_workers)
    cluster_source = build_clusters(cfg, data)
    method = build_method(cfg, data.channels, num_classes=len(data.class_names),
                          num_clusters=cluster_source.num_clusters if cluster_source else None).to(device)
    if cfg.model.channels_last:  # for training and for evaluating a checkpoint alike
        method = method.to(memory_format=torch.channels_last)
    return data, augment, batches, cluster_source, method


def run_folder(cfg: Config) -> Path:
    """The folder a new run writes: `out`, or runs/METHOD-STAMP (one stamp for every rank)."""
    stamp = distributed.broadcast_object(datetime.now().strftime("%Y%m%d-%H%M%S"))
    return writable_folder(cfg.out or f"runs/{cfg.method}-{stamp}")


def preflight(cfg: Config) -> None:
    """What must fail before any data loads: the method's name, the batch's split over processes, clusters for a
    method that learns from them, FAISS where it is needed."""
    kind = method_class(cfg.method)
    if cfg.batch_size % distributed.world_size():
        raise UserError(f"batch_size={cfg.batch_size} is the global batch and must split evenly over the "
                        f"{distributed.world_size()} processes; pick a multiple of {distributed.world_size()}")
    if kind.needs_cluster_spec and cfg.clusters.spec.strip().lower() == "none":
        raise UserError(f"method {cfg.method!r} learns from clusters; pass --clusters (e.g. wordnet:7, kmeans:100, "
                        "labels)")
    require_faiss([need for need, used in (("k-means clusters", "kmeans" in cfg.clusters.spec.lower()),
                                           ("eval.cluster_metrics (or pass eval.cluster_metrics=false)",
                                            cfg.eval.cluster_metrics)) if used])


def setup(cfg: Config, out_dir: Path | None = None, data: ImageDataset | None = None) -> Run:
    """A new run from `cfg` into `out_dir` (default: run_folder(cfg)). `data`: a dataset already in memory (the
    benchmark's synthetic images) instead of loading `cfg.data`."""
    validate(cfg)  # a config built in Python (the library API) gets the checks a loaded one gets
    out_dir = run_folder(cfg) if out_dir is None else out_dir
    if (out_dir / "checkpoints" / "last.pt").exists():
        raise UserError(f"{out_dir} already holds a run; continue it with --resume {out_dir} or pick another --out")
    preflight(cfg)
    cfg.method_args = method_options(cfg.method, cfg.method_args)  # config.yaml records the method's own options
    run = build_run(cfg, out_dir, data)
    run.run_id = new_run_id()
    return start(run)


def setup_resumed(run_dir: str | Path) -> Run:
    """The run in `run_dir` continued from its checkpoint, on the checkpoint's own config; a finished run is
    refused before any data loads."""
    out_dir = Path(run_dir)
    checkpoint = load_checkpoint(out_dir / "checkpoints" / "last.pt")
    run_id = check_identity(out_dir, checkpoint)
    cfg = config_from_checkpoint(checkpoint)
    if epochs_done(checkpoint) >= cfg.epochs:
        raise UserError(f"{out_dir} already finished its {cfg.epochs} epochs; its results are in final.json")
    preflight(cfg)
    run = build_run(cfg, out_dir, None)
    restore(run, checkpoint)
    run.run_id = run_id or new_run_id()  # a checkpoint from before run ids gets one now
    return start(run)


def build_run(cfg: Config, out_dir: Path, data: ImageDataset | None) -> Run:
    """Seeds, device, data, method, optimizer and memory bank of a run at its first step."""
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    if device.type == "cpu":
        # Late in training some gradients turn denormal and x86 slows down on them: measured here, resnet18 bf16
        # fell from ~960 to 750-850 images/s after epoch 1, and kept ~1,000 with flushing; losses were unchanged.
        torch.set_flush_denormal(True)
    data, augment, batches, cluster_source, method = build_parts(cfg, data, device)
    refuse_uninformative(cluster_source, data.auxiliary)  # training only: evaluating a trained run needs no check
    if method_class(cfg.method).needs_labels and not data.train.fully_labelled:
        raise UserError(f"method {cfg.method!r} needs a label for every training image; this data has unlabelled "
                        "ones - use a self-supervised method")
    if cfg.model.compile:
        method.backbone.compile()  # in place: the state_dict keeps its keys, so checkpoints stay interchangeable
    if cfg.model.sync_bn:
        method = distributed.sync_batchnorm(method, device)
    fit_batch(cfg, len(data.train))
    problem = method_class(cfg.method).check_data(cfg, len(data.train))
    if problem:
        raise UserError(problem)
    steps_per_epoch = len(data.train) // cfg.batch_size
    optimizer, scheduler = build_optimizer(cfg, method, steps_per_epoch)
    memory = ShardedMemoryBank(len(data.train), method.embedding_dim, steps_per_epoch, cfg.batch_size, device) \
        if distributed.enabled() else MemoryBank(len(data.train), method.embedding_dim, device, seed=cfg.seed)
    return Run(cfg, out_dir, device, data, augment, batches, method, optimizer, scheduler, memory, steps_per_epoch,
               cluster_source, precision=resolve_precision(cfg.precision, device))


def fit_batch(cfg: Config, images: int) -> None:
    """A batch larger than the training images (after data.subset and data.val_fraction) becomes the largest that
    fits (a multiple of the processes), said in one line; the run's config.yaml then holds the batch it trains with.
    Fewer than two images a process: an error (a contrastive step needs two)."""
    parts = distributed.world_size()
    if cfg.batch_size <= images:
        return
    fitted = images // parts * parts
    if fitted < max(2, parts):
        raise UserError(f"only {images} training images (after data.subset and data.val_fraction), fewer than a "
                        f"batch of 2 per process needs; use more images or a smaller data.val_fraction")
    if distributed.is_main():
        print(f"batch_size={cfg.batch_size} is more than the {images} training images (after data.subset and "
              f"data.val_fraction): training with batch_size={fitted}, which config.yaml records", flush=True)
    cfg.batch_size = fitted


def restore(run: Run, checkpoint: dict) -> None:
    """The checkpoint's weights, optimizer, schedule, memory bank, clusters and random state, into `run`."""
    try:
        run.method.load_state_dict(checkpoint["model"])
        run.optimizer.load_state_dict(checkpoint["optimizer"])
        run.scheduler.load_state_dict(checkpoint["scheduler"])
        restore_memory(run, checkpoint)
    except (KeyError, RuntimeError, ValueError) as e:
        why = mismatch(checkpoint, to_dict(run.cfg), run.data.channels, len(run.data.class_names))
        raise UserError(f"checkpoint in {run.out_dir} does not fit this run: {why}" if why else
                        f"checkpoint in {run.out_dir} does not match its own config ({first_line(e)}); "
                        "it is damaged - start a new run") from None
    if checkpoint.get("assignments") is not None:
        run.assignments = Assignments.from_state_dict(checkpoint["assignments"])
        if run.method.needs_cluster_spec:
            run.method.set_clusters(run.assignments)
    torch.set_rng_state(checkpoint["rng"]["torch"])
    random.setstate(checkpoint["rng"]["python"])
    run.start_epoch = epochs_done(checkpoint)
    run.train_time_s = checkpoint.get("train_time_s", 0.0)
    if checkpoint.get("progress") is not None:  # a step checkpoint: the epoch goes on from its step
        run.resumed_progress = EpochProgress.from_state_dict(checkpoint["progress"], run.device)


def restore_memory(run: Run, checkpoint: dict) -> None:
    """The checkpoint's whole bank; under torchrun laid out as this rank's shard of the epoch the checkpoint
    stopped in (a step checkpoint) or finished, on any number of processes."""
    if not isinstance(run.memory, ShardedMemoryBank):
        run.memory.load_state_dict(checkpoint["memory"])
        return
    step = checkpoint["progress"]["step"] if checkpoint.get("progress") is not None else None
    order = torch.randperm(len(run.data.train), generator=epoch_generator(run.cfg, checkpoint["epoch"], run.device),
                           device=run.device)  # the epoch's order, as train_epoch draws it
    run.memory.load_state_dict(checkpoint["memory"], order, step)


def clustering_features(run: Run) -> torch.Tensor | Shard:
    """k-means input: the memory bank once every sample has been through a step (before that it holds random
    vectors), else a fresh pass. Under torchrun each rank's shard: its part of the bank, or its contiguous
    1/world_size of the training set for a fresh pass."""
    if run.cfg.clusters.features == "memory" and run.memory.all_seen():
        return run.memory.shard() if distributed.enabled() else run.memory.features
    train, parts = run.data.train, distributed.world_size()
    index = torch.arange(len(train))[distributed.rank() * len(train) // parts:
                                     (distributed.rank() + 1) * len(train) // parts]
    split = train.select(index) if distributed.enabled() else train
    with autocast(run):
        features = extract_features(run.method.embed, run.batches.eval(split, run.cfg.eval.batch_size),
                                    modules=[run.method])
    return Shard(features, index, len(train)) if distributed.enabled() else features


def epochs_done(checkpoint: dict) -> int:
    """The epochs a checkpoint has finished: its epoch, and the one it stopped in unless it stopped mid-epoch."""
    return checkpoint["epoch"] + (0 if checkpoint.get("progress") is not None else 1)


def start(run: Run) -> Run:
    """The method wrapped for the processes (DistributedDataParallel under torchrun) and config.yaml written."""
    run.model = distributed.data_parallel(run.method, run.device)
    if distributed.is_main():
        (run.out_dir / DIVERGED_FILE).unlink(missing_ok=True)  # about an earlier attempt, which this one replaces
        kept = write_config_file(run.out_dir, to_yaml(run.cfg), run.run_id)
        if kept is not None:
            print(f"{run.out_dir}/config.yaml held another config or could not be read: kept as {kept.name}; this run "
                  "trains with (and writes) its own config", flush=True)
    return run


@dataclass
class Trained:
    """A trained run rebuilt from its checkpoint for evaluation (what `backbone_features` and `autocast` read):
    no optimizer, no memory bank."""

    cfg: Config
    device: torch.device
    data: ImageDataset
    batches: Batches
    method: Method  # eval mode
    epochs_done: int
    precision: str = "fp32"


def load_trained(checkpoint_path: str | Path, overrides: list[str] | None = None) -> Trained:
    """A checkpoint's run for evaluation: config, data, batches and the method with its weights (eval mode).
    `overrides` change the data settings (e.g. data.subset=null for the full sets)."""
    checkpoint = load_checkpoint(Path(checkpoint_path))
    cfg = config_from_checkpoint(checkpoint, overrides)
    device = resolve_device(cfg.device)
    data, _, batches, _, method = build_parts(cfg, None, device)
    try:
        method.load_state_dict(checkpoint["model"])
    except (KeyError, RuntimeError) as e:
        why = mismatch(checkpoint, to_dict(cfg), data.channels, len(data.class_names))
        raise UserError(f"{checkpoint_path} does not fit: {why}" if why else
                        f"{checkpoint_path} does not match its own config ({first_line(e)}); it is damaged") from None
    return Trained(cfg, device, data, batches, method.eval(), epochs_done(checkpoint),
                   resolve_precision(cfg.precision, device))
