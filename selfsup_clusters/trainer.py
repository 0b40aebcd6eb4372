"""THE loop: config -> data -> backbone -> method -> epochs of (steps, evaluation, logging, checkpoint).

Read it top to bottom; everything method-specific lives in the method's own file.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from baselines.cross_entropy import ClusterCrossEntropy, Supervised
from baselines.moco import MoCo
from baselines.pcl import PCL
from baselines.simclr import SimCLR
from selfsup_clusters import distributed
from selfsup_clusters.backbones import create_backbone
from selfsup_clusters.checkpoint import load_checkpoint, save_checkpoint
from selfsup_clusters.cl_infonce import ClInfoNCE
from selfsup_clusters.clusters import (
    Assignments,
    ClusterSource,
    KMeansOptions,
    build_cluster_source,
    cluster_statistics,
    statistics_table,
)
from selfsup_clusters.config import Config, merge_overrides, to_dict, to_yaml, validate
from selfsup_clusters.data import ImageDataset, load_dataset
from selfsup_clusters.data.augment import BatchAugment
from selfsup_clusters.data.loader import Batches, make_batches
from selfsup_clusters.errors import Interrupted, UserError, first_line
from selfsup_clusters.evaluate import evaluate_features, extract_features, linear_probe_augmented
from selfsup_clusters.logger import NullLogger, RunLogger
from selfsup_clusters.memory import MemoryBank
from selfsup_clusters.method import Method

METHODS: dict[str, type[Method]] = {
    "simclr": SimCLR,
    "cl-infonce": ClInfoNCE,
    "moco": MoCo,
    "pcl": PCL,
    "ce": ClusterCrossEntropy,
    "supervised": Supervised,
}


def method_class(name: str) -> type[Method]:
    if name not in METHODS:
        raise UserError(f"unknown method {name!r}; choose one of: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def build_method(cfg: Config, in_chans: int, num_classes: int = 0, num_clusters: list[int] | None = None) -> Method:
    return method_class(cfg.method)(cfg, create_backbone(cfg.model, in_chans), num_classes=num_classes,
                               num_clusters=num_clusters)


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


def autocast(run: Run):
    """bf16 autocast for forward passes when the run's precision is bf16; the losses compute in float32."""
    return torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=run.precision == "bf16")


def build_optimizer(cfg: Config, model: torch.nn.Module, steps_per_epoch: int):
    """SGD with momentum (or AdamW); lr scaled by batch/256; linear warm-up then cosine, stepped per batch.

    Norm-layer weights and biases get no weight decay.
    """
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
    o = cfg.optim
    lr = o.lr * cfg.batch_size / 256
    if o.name == "sgd":
        optimizer = torch.optim.SGD(groups, lr=lr, momentum=o.momentum, weight_decay=o.weight_decay)
    else:
        optimizer = torch.optim.AdamW(groups, lr=lr, weight_decay=o.weight_decay)
    total = cfg.epochs * steps_per_epoch
    warmup = min(int(o.warmup_epochs * steps_per_epoch), total - 1)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


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
    memory: MemoryBank
    steps_per_epoch: int
    cluster_source: ClusterSource | None = None
    assignments: Assignments | None = None
    start_epoch: int = 0
    train_time_s: float = 0.0  # training wall time of the epochs before start_epoch (resume keeps counting)
    precision: str = "fp32"  # resolved: "fp32" or "bf16"
    model: torch.nn.Module | None = None  # what a step calls: the method, in DistributedDataParallel under torchrun


def setup(cfg: Config, resume: str | Path | None = None, data: ImageDataset | None = None) -> Run:
    """`data`: a dataset already in memory (the benchmark's synthetic images) instead of loading `cfg.data`."""
    checkpoint = None
    if resume is not None:
        out_dir = Path(resume)
        checkpoint = load_checkpoint(out_dir / "checkpoints" / "last.pt")
        cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Config), checkpoint["config"]))
        validate(cfg)
    else:
        stamp = distributed.broadcast_object(datetime.now().strftime("%Y%m%d-%H%M%S"))  # one folder for all ranks
        out_dir = Path(cfg.out or f"runs/{cfg.method}-{stamp}")
        if (out_dir / "checkpoints" / "last.pt").exists():
            raise UserError(f"{out_dir} already holds a run; continue it with --resume {out_dir} or pick another --out")
    method_class(cfg.method)  # before loading data: a typo should fail fast
    if cfg.batch_size % distributed.world_size():
        raise UserError(f"batch_size={cfg.batch_size} is the global batch and must split evenly over the "
                        f"{distributed.world_size()} processes; pick a multiple of {distributed.world_size()}")

    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    if device.type == "cpu":
        # Late in training some gradients turn denormal and x86 slows down on them: measured here, resnet18 bf16
        # fell from ~960 to 750-850 images/s after epoch 1, and kept ~1,000 with flushing; losses were unchanged.
        torch.set_flush_denormal(True)
    data = load_dataset(cfg.data) if data is None else data
    if method_class(cfg.method).needs_labels and bool((data.train.labels < 0).any()):
        raise UserError(f"method {cfg.method!r} needs a label for every training image; this data has unlabelled "
                        "ones - use a self-supervised method")
    augment = BatchAugment(cfg.augment, cfg.data.image_size, data.mean, data.std)
    batches = make_batches(data, augment, device, cfg.data.num_workers)
    cluster_source = build_clusters(cfg, data)
    if method_class(cfg.method).uses_clusters and cluster_source is None:
        raise UserError(f"method {cfg.method!r} learns from clusters; pass --clusters (e.g. wordnet:7, kmeans:100, "
                        "labels)")
    method = build_method(cfg, data.channels, num_classes=len(data.class_names),
                          num_clusters=cluster_source.num_clusters if cluster_source else None).to(device)
    if cfg.model.channels_last:
        method = method.to(memory_format=torch.channels_last)
    if cfg.model.compile:
        method.backbone.compile()  # in place: the state_dict keeps its keys, so checkpoints stay interchangeable
    if cfg.model.sync_bn:
        method = distributed.sync_batchnorm(method, device)
    steps_per_epoch = max(1, len(data.train) // cfg.batch_size)
    optimizer, scheduler = build_optimizer(cfg, method, steps_per_epoch)
    memory = MemoryBank(len(data.train), method.embedding_dim, device, seed=cfg.seed)
    run = Run(cfg, out_dir, device, data, augment, batches, method, optimizer, scheduler, memory, steps_per_epoch,
              cluster_source, precision=resolve_precision(cfg.precision, device))
    if checkpoint is not None:
        try:
            method.load_state_dict(checkpoint["model"])
            optimizer.load_state_dict(checkpoint["optimizer"])
            scheduler.load_state_dict(checkpoint["scheduler"])
            memory.load_state_dict(checkpoint["memory"])
        except (KeyError, RuntimeError, ValueError) as e:
            raise UserError(f"checkpoint in {out_dir} does not match its own config ({first_line(e)}); "
                            "it is damaged - start a new run") from None
        if checkpoint.get("assignments") is not None:
            run.assignments = Assignments.from_state_dict(checkpoint["assignments"])
            if method.uses_clusters:
                method.set_clusters(run.assignments)
        torch.set_rng_state(checkpoint["rng"]["torch"])
        random.setstate(checkpoint["rng"]["python"])
        run.start_epoch = checkpoint["epoch"] + 1
        run.train_time_s = checkpoint.get("train_time_s", 0.0)
    run.model = distributed.data_parallel(method, device)
    if distributed.is_main():
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.yaml").write_text(to_yaml(cfg))
    return run


def build_clusters(cfg: Config, data: ImageDataset) -> ClusterSource | None:
    """The cluster source of `--clusters`; bad specs (e.g. K larger than the data) fail here, before training."""
    c = cfg.clusters
    options = KMeansOptions(niter=c.niter, nredo=c.nredo, seed=cfg.seed, use_gpu=c.use_gpu,
                            min_points_per_centroid=c.min_points_per_centroid, temperature=c.concentration_temperature)
    return build_cluster_source(c.spec, labels=data.train.labels, class_names=data.class_names, wnids=data.wnids,
                                attributes=data.train.attributes, attribute_names=data.attribute_names or None,
                                kmeans_options=options, wordnet_dir=c.wordnet_dir, superclasses=data.superclasses,
                                superclass_names=data.superclass_names)


def cluster_statistics_table(cfg: Config, data: ImageDataset) -> list[dict]:
    """Statistics (H, I, NMI, AMI against the labels) of every auxiliary cluster level the dataset has: the labels,
    superclasses, WordNet levels, attribute levels."""
    return statistics_table(data.train.labels, data.class_names, wnids=data.wnids, attributes=data.train.attributes,
                            attribute_names=data.attribute_names or None, wordnet_dir=cfg.clusters.wordnet_dir,
                            superclasses=data.superclasses, superclass_names=data.superclass_names)


def clustering_due(run: Run, epoch: int) -> bool:
    source, c = run.cluster_source, run.cfg.clusters
    if source is None:
        return False
    if not source.dynamic:
        return run.assignments is None  # fixed clusters: computed once
    return epoch >= c.warmup and (epoch - c.warmup) % c.every == 0


def update_clusters(run: Run, epoch: int, logger: RunLogger) -> list[dict]:
    """Re-cluster (k-means on the memory bank or a fresh pass; fixed sources once), hand the result to the
    method and log its statistics against the labels."""
    features = None
    if run.cluster_source.dynamic and distributed.is_main():
        # Until every sample has been through a step the bank holds random vectors: use a fresh pass instead.
        if run.cfg.clusters.features == "memory" and bool(run.memory.seen.all()):
            features = run.memory.features
        else:
            with autocast(run):
                features = extract_features(run.method.embed,
                                            run.batches.eval(run.data.train, run.cfg.eval.batch_size),
                                            modules=[run.method])
    start = time.perf_counter()
    # Once, on rank 0 (every rank's memory bank is the same); every rank trains with rank 0's assignments.
    run.assignments = distributed.broadcast_object(run.cluster_source.assign(features) if distributed.is_main()
                                                   else None)
    seconds = time.perf_counter() - start
    if run.method.uses_clusters:
        run.method.set_clusters(run.assignments)
    rows = []
    for i, ids in enumerate(run.assignments.ids):
        k = run.assignments.num_clusters[i]
        name = f"kmeans{k}" if run.cluster_source.dynamic else run.cluster_source.spec.replace(":", "")
        rows.append({"name": name, **cluster_statistics(ids, run.data.train.labels), "seconds": seconds})
    logger.clusters(rows, [torch.bincount(ids) for ids in run.assignments.ids], step=epoch * run.steps_per_epoch)
    return rows


def epoch_generator(cfg: Config, epoch: int, device: torch.device) -> torch.Generator:
    """The epoch's shuffling and augmentation randomness depends only on (seed, epoch): resume is exact."""
    return torch.Generator(device=device).manual_seed(cfg.seed * 1_000_003 + epoch)


def train_epoch(run: Run, epoch: int, logger: RunLogger) -> dict:
    cfg, method, train = run.cfg, run.method, run.data.train
    method.train()
    generator = epoch_generator(cfg, epoch, run.device)
    order = torch.randperm(len(train), generator=generator, device=run.device)
    batch_size = min(cfg.batch_size, len(train))
    loss_sum = torch.zeros((), device=run.device)
    data_time = 0.0
    start = time.perf_counter()
    bar = tqdm(range(run.steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
               disable=not (cfg.log.progress and distributed.is_main()), dynamic_ncols=True)
    batches = run.batches.train(train, order, batch_size, generator)
    for step in bar:
        t0 = time.perf_counter()
        views, index, labels = next(batches)
        data_time += time.perf_counter() - t0

        with autocast(run):
            out = run.model(views, index, labels)  # method.training_step
        run.optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        run.optimizer.step()
        run.scheduler.step()
        run.memory.update(distributed.all_gather(index), distributed.all_gather(out["z"]))  # all ranks' samples
        method.after_step()

        loss_sum += out["loss"].detach()
        global_step = epoch * run.steps_per_epoch + step
        if cfg.log.every_steps and global_step % cfg.log.every_steps == 0:
            scalars = distributed.mean_scalars({k: float(v.detach()) if torch.is_tensor(v) else float(v)
                                                for k, v in out.items() if k != "z"})
            scalars["lr"] = run.optimizer.param_groups[0]["lr"]
            logger.scalars(scalars, global_step, prefix="step/")
            bar.set_postfix(loss=f"{scalars['loss']:.3f}")
    loss = float(distributed.mean(loss_sum)) / run.steps_per_epoch  # waits for queued GPU work: timed below
    seconds = time.perf_counter() - start
    images = run.steps_per_epoch * batch_size * cfg.augment.views
    return {
        "loss": loss,
        "lr": run.optimizer.param_groups[0]["lr"],
        "epoch_time_s": seconds,
        "images_per_s": images / seconds,
        "data_time_frac": data_time / seconds,
    }


def backbone_features(run: Run, split) -> torch.Tensor:
    """L2-normalised backbone features of a split's centre views, in eval mode (the evaluation protocol)."""
    with autocast(run):
        return extract_features(run.method.features, run.batches.eval(split, run.cfg.eval.batch_size),
                                modules=[run.method])


def evaluate(run: Run, final: bool = False, logger: RunLogger | None = None) -> dict:
    """kNN top-1 on backbone features (eval mode); after the last epoch also the linear probe, the cluster
    quality of the test features and the TensorBoard projector, as `cfg.eval` asks."""
    cfg, data = run.cfg, run.data
    train_features, test_features = backbone_features(run, data.train), backbone_features(run, data.test)
    augmented_probe = final and cfg.eval.linear and cfg.eval.linear_augmented_epochs > 0
    results = evaluate_features(train_features, data.train.labels, test_features, data.test.labels, cfg.eval,
                                linear=final and cfg.eval.linear and not augmented_probe,
                                clusters=final and cfg.eval.cluster_metrics, seed=cfg.seed)
    kmeans_ids = results.pop("kmeans_ids", None)
    if augmented_probe and results:
        results["linear_top1"] = augmented_linear_probe(run, test_features)
    if final and logger is not None and cfg.eval.projector:
        n = min(cfg.eval.projector, len(data.test))
        metadata = {"label": data.test.labels[:n].tolist(),
                    "class": [data.class_names[i] if i >= 0 else "-" for i in data.test.labels[:n].tolist()]}
        if kmeans_ids is not None:
            metadata["kmeans"] = kmeans_ids[:n].tolist()
        if run.assignments is not None and not run.cluster_source.dynamic:
            metadata["train_cluster"] = class_clusters(run.assignments.ids[0], data.train.labels,
                                                       data.test.labels[:n])
        images = None if data.test.images is None else data.test.images[:n]  # file-backed data: no thumbnails
        logger.projector(test_features[:n], metadata, images, step=cfg.epochs * run.steps_per_epoch)
    return results


def load_trained(checkpoint_path: str | Path, overrides: list[str] | None = None) -> Run:
    """A trained run rebuilt from its checkpoint for evaluation: config, data, batches and the method with its
    weights (eval mode). `overrides` change the data settings (e.g. data.subset=null for the full sets)."""
    checkpoint = load_checkpoint(Path(checkpoint_path))
    schema = OmegaConf.merge(OmegaConf.structured(Config), checkpoint["config"])
    cfg = merge_overrides(schema, overrides or [])
    device = resolve_device(cfg.device)
    data = load_dataset(cfg.data)
    augment = BatchAugment(cfg.augment, cfg.data.image_size, data.mean, data.std)
    batches = make_batches(data, augment, device, cfg.data.num_workers)
    cluster_source = build_clusters(cfg, data) if method_class(cfg.method).uses_clusters else None
    method = build_method(cfg, data.channels, num_classes=len(data.class_names),
                          num_clusters=cluster_source.num_clusters if cluster_source else None).to(device)
    try:
        method.load_state_dict(checkpoint["model"])
    except (KeyError, RuntimeError) as e:
        raise UserError(f"{checkpoint_path} does not match its own config ({first_line(e)}); it is damaged") from None
    method.eval()
    optimizer, scheduler = build_optimizer(cfg, method, 1)
    return Run(cfg, Path(checkpoint_path).parent, device, data, augment, batches, method, optimizer, scheduler,
               MemoryBank(1, method.embedding_dim, device), 1, cluster_source, start_epoch=checkpoint["epoch"] + 1,
               precision=resolve_precision(cfg.precision, device))


def evaluate_checkpoint(checkpoint_path: str | Path, knn: bool = True, linear: bool = True, clusters: bool = True,
                        overrides: list[str] | None = None) -> dict:
    """Offline evaluation of a checkpoint (by default over the full train/test sets); the results also go to
    eval.json beside the checkpoint."""
    run = load_trained(checkpoint_path, ["data.subset=null", "data.test_subset=null", *(overrides or [])])
    cfg, data = run.cfg, run.data
    features = [backbone_features(run, split) for split in (data.train, data.test)]
    results = evaluate_features(features[0], data.train.labels, features[1], data.test.labels, cfg.eval, knn=knn,
                                linear=linear, clusters=clusters, seed=cfg.seed)
    results.pop("kmeans_ids", None)
    if not results:
        raise UserError(f"{cfg.data.name} has no labels to evaluate against")
    results = {"checkpoint": str(checkpoint_path), "epoch": run.start_epoch, "method": cfg.method,
               "clusters": cfg.clusters.spec, "train_images": len(data.train), "test_images": len(data.test),
               **results}
    (Path(checkpoint_path).parent / "eval.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def augmented_linear_probe(run: Run, test_features: torch.Tensor) -> float:
    """The linear probe on `eval.linear_augmented_epochs` epochs of freshly augmented views (the first view of the
    training pipeline) through the frozen backbone, in eval mode."""
    cfg, train = run.cfg, run.data.train

    def epoch_batches(epoch: int):
        generator = torch.Generator(device=run.device).manual_seed(cfg.seed * 1_000_003 + 7919 + epoch)
        order = torch.randperm(len(train), generator=generator, device=run.device)
        for views, _, labels in run.batches.train(train, order, min(cfg.eval.batch_size, len(train)), generator):
            yield views[0], labels

    was_training = run.method.training
    run.method.eval()
    try:
        with autocast(run):
            return linear_probe_augmented(run.method.features, epoch_batches, test_features,
                                          run.data.test.labels, cfg.eval.linear_augmented_epochs, run.device,
                                          seed=cfg.seed)
    finally:
        run.method.train(was_training)


def class_clusters(ids: torch.Tensor, train_labels: torch.Tensor, labels: torch.Tensor) -> list[int]:
    """The training cluster of each label's class (the most common id among that class's training samples):
    fixed clusters (WordNet, labels, superclasses) are functions of the class, so test samples get one too."""
    keep = train_labels >= 0
    pairs = torch.stack([train_labels[keep], ids[keep]], dim=1)
    values, counts = pairs.unique(dim=0, return_counts=True)
    best = {}
    for (label, cluster), count in zip(values.tolist(), counts.tolist(), strict=True):
        if count > best.get(label, (0, -1))[0]:
            best[label] = (count, cluster)
    return [best.get(label, (0, -1))[1] for label in labels.tolist()]


def checkpoint_state(run: Run, epoch: int, train_time_s: float) -> dict:
    return {
        "epoch": epoch,
        "train_time_s": train_time_s,
        "config": to_dict(run.cfg),
        "model": run.method.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "memory": run.memory.state_dict(),
        "assignments": run.assignments.state_dict() if run.assignments is not None else None,
        "rng": {"torch": torch.get_rng_state(), "python": random.getstate()},
    }


def train(cfg: Config, resume: str | Path | None = None) -> dict:
    """Train (or continue) one run; returns the final metrics that also go to final.json.

    Under torchrun every process runs this; rank 0 alone evaluates, logs, prints and writes checkpoints.
    """
    distributed.init()
    run = setup(cfg, resume)
    cfg = run.cfg
    logger = RunLogger(run.out_dir, cfg.log.tensorboard, resume_epoch=run.start_epoch,
                       purge_step=run.start_epoch * run.steps_per_epoch if run.start_epoch else None
                       ) if distributed.is_main() else NullLogger()
    record: dict = {}
    total_start = time.perf_counter()
    try:
        if run.start_epoch >= cfg.epochs:
            raise UserError(f"{run.out_dir} already finished its {cfg.epochs} epochs; its results are in final.json")
        labelled = bool((run.data.train.labels >= 0).any() and (run.data.test.labels >= 0).any())
        if not labelled and distributed.is_main():
            print(f"{cfg.data.name} has no labels: kNN and linear evaluation are off", flush=True)
        for epoch in range(run.start_epoch, cfg.epochs):
            cluster_rows = update_clusters(run, epoch, logger) if clustering_due(run, epoch) else []
            record = {"epoch": epoch, **train_epoch(run, epoch, logger)}
            if cluster_rows:
                record["clusters"] = cluster_rows
            last = epoch == cfg.epochs - 1
            if labelled and distributed.is_main() and (last or (cfg.eval.every and (epoch + 1) % cfg.eval.every == 0)):
                record.update(evaluate(run, final=last, logger=logger))
            # Log first, then checkpoint: resume drops logged epochs the checkpoint does not cover.
            logger.epoch(record, step=(epoch + 1) * run.steps_per_epoch)
            train_time_s = run.train_time_s + time.perf_counter() - total_start
            if distributed.is_main():
                save_checkpoint(checkpoint_state(run, epoch, train_time_s), run.out_dir / "checkpoints" / "last.pt")
                print(_epoch_line(record, cfg.epochs), flush=True)
            distributed.barrier()  # every rank leaves the epoch with its checkpoint written
        final = {
            "config": to_dict(cfg),
            "out_dir": str(run.out_dir),
            "epochs": cfg.epochs,
            "precision": run.precision,
            "train_time_s": train_time_s,  # all invocations of a resumed run, up to the last checkpoint
            **{k: v for k, v in record.items() if k not in ("epoch", "clusters")},
        }
        logger.final(final, hparams(run))
        return final
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted; the last finished epoch is saved - continue with --resume {run.out_dir}"
                          ) from None
    finally:
        logger.close()
        distributed.cleanup()


def hparams(run: Run) -> dict:
    """The settings a comparison varies, for TensorBoard's HPARAMS tab."""
    cfg = run.cfg
    return {"method": cfg.method, "clusters": cfg.clusters.spec, "dataset": cfg.data.name,
            "backbone": cfg.model.backbone, "epochs": cfg.epochs, "batch_size": cfg.batch_size, "lr": cfg.optim.lr,
            "temperature": run.method.temperature, "seed": cfg.seed, "subset": cfg.data.subset or 0}


def _epoch_line(record: dict, epochs: int) -> str:
    line = (f"epoch {record['epoch'] + 1}/{epochs}  loss {record['loss']:.4f}  "
            f"{record['images_per_s']:.0f} img/s  {record['epoch_time_s']:.1f}s")
    if "knn_top1" in record:
        line += f"  kNN top-1 {record['knn_top1']:.4f} (k={record['knn_k']}, T={record['knn_t']})"
    if "linear_top1" in record:
        line += f"  linear top-1 {record['linear_top1']:.4f}"
    if "nmi" in record:
        line += f"  NMI {record['nmi']:.3f}"
    for row in record.get("clusters", []):
        line += f"  [{row['name']}: {row['num_clusters']} clusters, NMI {row['NMI']:.3f}]"
    return line
