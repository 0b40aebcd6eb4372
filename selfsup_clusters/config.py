"""Typed configuration: dataclass defaults, a YAML file, then dotted `key=value` overrides (OmegaConf).

An unknown key anywhere is an error, so a typo never silently trains the wrong experiment.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from selfsup_clusters.core.errors import UserError, first_line
from selfsup_clusters.evaluation.protocols import check_eval

# Shipped inside the package, so an installed copy finds its defaults; the repository's configs/ links here.
CONFIG_DIR = Path(__file__).resolve().parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "fashion_mnist.yaml"
PRECISIONS = ("auto", "fp32", "bf16")
OPTIMIZER_KERNELS = ("auto", "fused", "foreach", "loop")


@dataclass
class CsvConfig:
    """Columns of a `csv:PATH` dataset: a table of image paths (relative to data.root) with a class, an optional
    train/test split and attribute columns (see data/csv_table.py)."""

    path_column: str = "path"
    class_column: str | None = "class"  # None: a dataset without labels (kNN evaluation off)
    split_column: str = "split"  # values train/test; a table without this column gets a seeded 80/20 split
    attribute_columns: list[str] | None = None  # None: every column except path, class, split and tag columns
    # Columns holding several tags per image ("red leather strap"): one binary attribute per tag, for the
    # max_tags most frequent tags of each column (0: all)
    tag_columns: list[str] = field(default_factory=list)
    tag_separator: str = " "
    max_tags: int = 100


@dataclass
class DataConfig:
    # fashion-mnist, cifar10, cifar100, stl10, imagefolder:PATH, csv:PATH (see data/__init__.py)
    name: str = "fashion-mnist"
    root: str | None = None  # None: the dataset's default location (Debian's package for Fashion-MNIST)
    download: bool = False  # fetch the dataset if missing (never done otherwise)
    subset: int | None = None  # train on the first N training images
    # > 0: hold this fraction of the training set out (stratified by label, fixed seed) and evaluate on it instead
    # of the test set: every choice of hyperparameters is made this way (`tune`), the test set only reports
    val_fraction: float = 0.0
    test_subset: int | None = None  # evaluate on the first N test images (None: all)
    image_size: int = 28  # the size the network sees; images are resized on the fly when it differs
    num_workers: int = 4  # image folders and CSV tables: DataLoader processes decoding images (0: the main process)
    # image folders and CSV tables: decode every image once into a memory-mapped uint8 cache (short side resized
    # to cache_size, centre crop) and train from it like an in-memory dataset (data/cache.py); false: PIL per image
    cache: bool = True
    cache_size: int | None = None  # side of the cached images; None: data.image_size
    cache_dir: str | None = None  # None: $XDG_CACHE_HOME/selfsup-clusters/decoded (default ~/.cache/...)
    skip_unreadable: bool = False  # an undecodable image file is left out, counted (data/cache.py); false: stop
    unlabeled: bool = True  # stl10: pre-train on its 100,000 unlabeled images (label -1) too, beside the 5,000 labelled
    wnid_map: str | None = None  # imagefolder/csv: a CSV `class,wnid` giving class names WordNet ids (wordnet:LEVEL)
    csv: CsvConfig = field(default_factory=CsvConfig)


@dataclass
class AugmentConfig:
    """Multi-view augmentation applied to whole uint8 batches (see data/augment.py)."""

    views: int = 2
    crop_scale: tuple[float, float] = (0.2, 1.0)
    crop_ratio: tuple[float, float] = (0.75, 1.3333333)
    flip_prob: float = 0.5
    jitter_prob: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4  # colour images only
    grayscale_prob: float = 0.2  # colour images only
    hue: float = 0.1  # image folders and CSV tables only (per-image torchvision pipeline)
    blur_prob: float = 0.5  # image folders and CSV tables only: Gaussian blur, kernel ~10% of the image size


@dataclass
class ModelConfig:
    backbone: str = "resnet18"  # any timm model name
    stem: str = "timm"  # "timm": the model's own stem; "small": 3x3 stride-1 conv, no max-pool (ResNets)
    proj_hidden_dim: int = 2048
    proj_dim: int = 128
    channels_last: bool = True  # NHWC memory layout: measured ~15% faster for ResNets on this CPU
    # CPU: convolutions with a 1x1 output (a ResNet's last stage at 28 px) as unfold + matmul; oneDNN's backward
    # for them measured 6x slower (selfsup_clusters/methods/backbones.py, PointOutputConv2d)
    point_conv_matmul: bool = True
    compile: bool = False  # torch.compile the backbone (a minute or more of compiling first; pays off on GPUs)
    sync_bn: bool = False  # under torchrun: BatchNorm statistics over the global batch (all ranks), not per rank


@dataclass
class OptimConfig:
    name: str = "sgd"  # "sgd" (momentum) or "adamw"
    # The optimizer settings below are the fallback; each method's recipe (its own file) sets its own.
    lr: float = 0.5  # for a batch of 256; scaled linearly with the batch size
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.0  # the cosine ends at lr * min_lr_ratio
    # how the update is computed (torch's optimizer kernels): "fused" (one kernel over all parameters), "foreach"
    # (all parameters at once; bitwise the per-tensor "loop"), "loop", or "auto": fused on a CPU (end to end on the
    # cpu budget: the same time and accuracy as foreach, docs/speed.md), foreach on a GPU (torch's own default)
    kernel: str = "auto"


@dataclass
class ClusterConfig:
    """Where cluster ids come from and when k-means re-runs (see selfsup_clusters/clusters/)."""

    spec: str = "none"  # the grammar: selfsup_clusters/clusters/spec.py (SPEC_HELP)
    warmup: int = 0  # first epoch (0-based) that k-means runs before; earlier epochs train without clusters
    every: int = 1  # re-run k-means before every N-th epoch from `warmup` on
    # k-means input: "memory" (the memory bank; a fresh pass until every sample has been seen once) or "forward"
    # (a fresh eval-mode pass over the training set, centre view)
    features: str = "memory"
    niter: int = 20  # Lloyd iterations
    nredo: int = 1  # restarts per K; the best objective is kept
    min_points_per_centroid: int = 10  # fewer samples per cluster than this: one warning
    use_gpu: str = "auto"  # FAISS on GPU when faiss-gpu sees one ("auto"), or "cpu" / "gpu"
    wordnet_dir: str = "/usr/share/wordnet"  # Debian's wordnet-base


@dataclass
class EvalConfig:
    every: int = 1  # kNN every N epochs (and always after the last one); 0: only at the end
    # A learning curve: after each of these epochs (counted from 1) kNN *and* the linear probe, into metrics.jsonl
    # (claims reads its budget curve from them), e.g. [1, 2, 4]
    at: list[int] = field(default_factory=list)
    knn_k: int = 200
    knn_t: float = 0.1
    batch_size: int = 1024
    linear: bool = True  # after the last epoch: the linear probe on frozen features (see evaluate.tuned_probe)
    # The probe's L2 penalty, chosen per representation from this grid on its own training features (evaluation.md)
    probe_l2: list[float] = field(default_factory=lambda: [1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1])
    probe_fixed_l2: float = 3e-3  # protocol linear_fixed: one penalty for every representation
    # Wherever the probe runs, also these protocols, which every verdict is checked against (protocols.py)
    protocols: list[str] = field(default_factory=lambda: ["linear_fixed", "knn20", "knn200"])
    cluster_metrics: bool = True  # after the last epoch: k-means (K = classes) on test features, NMI/AMI/ARI
    projector: int = 1000  # after the last epoch: this many test images to TensorBoard's projector (0 = off)
    # > 0: the linear probe trains on this many epochs of augmented views through the frozen backbone instead
    linear_augmented_epochs: int = 0


@dataclass
class LogConfig:
    tensorboard: bool = True
    every_steps: int = 20  # scalars per step to TensorBoard every N steps
    progress: bool = True  # progress bars (training, features, linear probe) when stderr is a terminal
    save_every: int = 0  # > 0: also keep checkpoints/epochNNNN.pt every N epochs, besides last.pt


@dataclass
class CheckpointConfig:
    # > 0: also write checkpoints/last.pt every N steps inside an epoch (a step checkpoint, which resume continues
    # from mid-epoch); SIGTERM and SIGINT write one whatever this says (stopping.py)
    every_steps: int = 0


@dataclass
class ClaimsConfig:
    """The `claims` command only: the cluster sources its comparisons use (selfsup_clusters/studies/claims.py)."""

    auxiliary: str = "wordnet:8"  # C1, C3: the auxiliary clusters Cl-InfoNCE (and CE) learn from
    kmeans: int = 1000  # C2: K of cl-infonce's and pcl's k-means (the same K for both)
    # C4: synthetic sets beside every auxiliary level of the data (nested merges, random splits)
    synthetic: list[str] = field(default_factory=lambda: ["merge:2", "merge:5", "split:2", "split:4", "split:8"])
    # C4's cluster sets that no other claim trains run on the first N seeds only (0: every seed): one seed buys
    # the other claims a longer budget, and C4's interval is over the sets, not the seeds
    level_seeds: int = 0
    # C4's cluster sets (all of them, the one C1 shares included) train with these key=value settings on top of the
    # budget, e.g. ["epochs=3", "eval.at=[1,2]"]: C4's own budget; empty: the budget itself
    level_overrides: list[str] = field(default_factory=list)
    # The k-means loop explained: K of a second k-means run whose clusters give an anchor several cluster-mates in its
    # batch (batch * (N / K - 1) / (N - 1) of them), beside claims.kmeans and instance clusters
    kmeans_mates: int = 20
    # seeds per run when --seeds is not given: "3" (fixed) or "MIN..MAX" (seeds until decided; intervals.SeedRule)
    seeds: str = "3"
    # compare and claims: a paired difference whose interval lies inside +-margin is "equivalent" (TOST). One point
    # of top-1: about twice the binomial standard error of one run's accuracy on 5,000 test images (docs/claims.md)
    margin: float = 0.01


@dataclass
class Config:
    method: str = "simclr"
    seed: int = 0
    epochs: int = 10
    batch_size: int = 256
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", ...
    # "fp32", "bf16" (autocast of forward passes; losses stay float32) or "auto": bf16 on CUDA GPUs and on CPUs
    # with AVX512-BF16 or AMX, else fp32. The run's final.json records the one used.
    precision: str = "auto"
    out: str | None = None  # None: runs/<method>-<timestamp>
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    # The chosen method's own options (temperature, queue_size, ...): declared as a dataclass in the method's file
    # (Method.Options) with its reference's defaults; a mapping here, which recipes.load_config checks against that
    # class and makes an instance of it (the schema imports no method). Only that method's options are recorded.
    method_args: Any = field(default_factory=dict)
    clusters: ClusterConfig = field(default_factory=ClusterConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    log: LogConfig = field(default_factory=LogConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    claims: ClaimsConfig = field(default_factory=ClaimsConfig)


def read_config(path: str | Path | None = None, overrides: list[str] | None = None,
                recipe: Callable[[str], dict] | None = None) -> Config:
    """Typed defaults <- `recipe(method)` <- YAML file (default: configs/fashion_mnist.yaml) <- `key=value`.

    The schema's own loader: it imports no method. `recipes.load_config`, which every command uses, passes the
    method's recipe (its authors' optimizer, lr, temperature, ...), so that it sits beneath what the user writes.
    """
    schema = OmegaConf.structured(Config)
    path = Path(path) if path is not None else DEFAULT_CONFIG
    if not path.is_file():
        raise UserError(f"config file {path} not found; pass --config with an existing YAML file")
    user = _load_yaml(path)
    try:
        probe = OmegaConf.merge(schema, user)
    except (OmegaConfBaseException, TypeError) as e:  # TypeError: "Cannot merge incompatible container types"
        raise UserError(_container_mismatch(path, schema, user) or f"{path}: {_describe(e)}") from None
    beneath = recipe(_final_method(probe, overrides or [])) if recipe is not None else {}
    items = [f"{key}={'null' if value is None else value}" for key, value in beneath.items()]
    merged = OmegaConf.merge(schema, OmegaConf.from_dotlist(items), user)
    return merge_overrides(merged, overrides or [])


def _load_yaml(path: Path) -> DictConfig:
    """The YAML file at `path` as a mapping; text that is not UTF-8, is not YAML or is not a mapping at its top
    level (a list, a single value) is one UserError naming the file and the line."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise UserError(f"{path}, line {line}: byte {data[e.start]:#04x} is not UTF-8 text; a config file is YAML "
                        "text (key: value lines)") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is not None and not isinstance(node, yaml.MappingNode):
            kind = "a list" if isinstance(node, yaml.SequenceNode) else f"a single value ({node.value!r})"
            raise UserError(f"{path}, line {node.start_mark.line + 1}: the top level is {kind}, not a mapping; a "
                            "config file holds key: value lines (e.g. epochs: 10)")
        user = OmegaConf.load(io.StringIO(text))  # its own loader: duplicate keys, its number formats, ...
    except yaml.YAMLError as e:
        raise UserError(f"{path}{_yaml_problem(e)}") from None
    except OmegaConfBaseException as e:
        raise UserError(f"{path}: {_describe(e)}") from None
    return user  # type: ignore[return-value]


def _container_mismatch(path: Path, schema: DictConfig, user: DictConfig) -> str | None:
    """"FILE, line 2: eval.at is a mapping here, but it must be a list": the first key the file gives a mapping
    where the schema has a list, or a list where it has a mapping (None: no such key)."""
    kinds = {dict: "a mapping", list: "a list"}

    def first(want, have, keys: tuple = ()) -> tuple | None:
        if isinstance(want, dict) and isinstance(have, dict):
            return next((found for key, value in have.items() if key in want
                         and (found := first(want[key], value, (*keys, key)))), None)
        wanted, given = kinds.get(type(want)), kinds.get(type(have))
        return (keys, given, wanted) if wanted and given and wanted != given else None

    found = first(OmegaConf.to_container(schema, resolve=False, throw_on_missing=False),
                  OmegaConf.to_container(user, resolve=False))
    if not found:
        return None
    keys, given, wanted = found
    node, line = yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader), 1
    for key in keys:  # the line of the key's own `key:`
        pair = next((pair for pair in getattr(node, "value", []) if isinstance(pair, tuple)
                     and getattr(pair[0], "value", None) == str(key)), None)
        if pair is None:
            break
        line, node = pair[0].start_mark.line + 1, pair[1]
    return f"{path}, line {line}: {'.'.join(map(str, keys))} is {given} here, but it must be {wanted}"


def _yaml_problem(e: yaml.YAMLError) -> str:
    """What follows the file's name: ", line 2, column 1: not valid YAML: did not find expected ',' or ']' (while
    parsing a flow sequence that starts at line 1, column 9)"."""
    mark, problem = getattr(e, "problem_mark", None), getattr(e, "problem", None)
    if mark is None or not problem:
        return f": not valid YAML: {first_line(e)}"
    context, context_mark = getattr(e, "context", None), getattr(e, "context_mark", None)
    started = f" ({context} that starts at line {context_mark.line + 1}, column {context_mark.column + 1})" \
        if context and context_mark is not None else ""
    return f", line {mark.line + 1}, column {mark.column + 1}: not valid YAML: {problem}{started}"


def split_values(text: str) -> list[str]:
    """"a=1,b=[0.3,1.0]" -> ["a=1", "b=[0.3,1.0]"]: a comma list whose bracketed values keep their commas (how
    `tune --grid` and the benchmark tools' --variant list key=value settings and values)."""
    return [part.strip() for part in re.split(r",(?![^\[]*\])", text) if part.strip()]


def _final_method(merged, overrides: list[str]) -> str:
    """The method the overrides leave in place (the last `method=` wins, as when merging)."""
    method = merged.method
    for item in overrides:
        key, _, value = item.partition("=")
        if key.strip() == "method":
            method = value.strip()
    return method


def merge_overrides(merged, overrides: list[str]) -> Config:
    """Apply dotted `key=value` overrides to a structured OmegaConf config and validate the result."""
    for item in overrides:
        if "=" not in item:
            raise UserError(f"override {item!r} is not of the form key=value (e.g. optim.lr=0.1)")
        try:
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist([item]))
        except OmegaConfBaseException as e:
            raise UserError(f"override {item!r}: {_describe(e)}") from None
        except (TypeError, yaml.YAMLError) as e:  # "eval.at.0=", "epochs=[" (found by tests/test_grammar_fuzz.py)
            raise UserError(f"override {item!r}: {first_line(e)}; a value is YAML (quote text, close brackets) and a "
                            "list is set whole (eval.at=[1,2])") from None
    try:  # interpolations (${epochs}) resolve here, after every override: one that does not fit its key fails here
        cfg: Config = OmegaConf.to_object(merged)  # type: ignore[assignment]
    except OmegaConfBaseException as e:
        raise UserError(f"config: {_describe(e)}") from None
    validate(cfg)
    return cfg


def _describe(e: OmegaConfBaseException) -> str:
    msg = first_line(e)
    if "not in struct" in msg or "Key '" in msg and "not" in msg:
        return f"{msg} (unknown key; see selfsup_clusters/config.py for the valid ones)"
    return msg


def validate(cfg: Config) -> None:
    checks = [
        (cfg.epochs >= 1, "epochs must be >= 1"),
        (cfg.batch_size >= 2, "batch_size must be >= 2 (contrastive losses need negatives)"),
        (cfg.data.subset is None or cfg.data.subset >= 2, "data.subset must be >= 2"),
        (cfg.data.image_size >= 8, "data.image_size must be >= 8"),
        (cfg.data.cache_size is None or cfg.data.cache_size >= 8,
         "data.cache_size must be >= 8 (or null: data.image_size)"),
        (cfg.augment.views >= 2, "augment.views must be >= 2"),
        (cfg.model.stem in ("timm", "small"), "model.stem must be 'timm' or 'small'"),
        (cfg.optim.name in ("sgd", "adamw"), "optim.name must be 'sgd' or 'adamw'"),
        (cfg.optim.kernel in OPTIMIZER_KERNELS, f"optim.kernel={cfg.optim.kernel!r}; use one of "
                                                f"{', '.join(OPTIMIZER_KERNELS)}"),
        (0 < cfg.augment.crop_scale[0] <= cfg.augment.crop_scale[1] <= 1, "augment.crop_scale must be 0<a<=b<=1"),
        (cfg.eval.knn_k >= 1, "eval.knn_k must be >= 1"),
        (check_eval(cfg.eval) is None, check_eval(cfg.eval)),
        (all(1 <= epoch <= cfg.epochs for epoch in cfg.eval.at),
         f"eval.at={list(cfg.eval.at)} names an epoch outside 1..{cfg.epochs} (epochs are counted from 1)"),
        (cfg.clusters.features in ("memory", "forward"), "clusters.features must be 'memory' or 'forward'"),
        (cfg.clusters.every >= 1 and cfg.clusters.warmup >= 0, "clusters.every must be >= 1, clusters.warmup >= 0"),
        (cfg.precision in PRECISIONS, f"precision={cfg.precision!r}; use one of {', '.join(PRECISIONS)}"),
        (0 <= cfg.data.val_fraction < 1, "data.val_fraction must lie in [0, 1): e.g. 0.1 holds 10% out"),
        (cfg.claims.level_seeds >= 0, "claims.level_seeds must be >= 0 (0: every seed)"),
        (cfg.claims.margin > 0, f"claims.margin={cfg.claims.margin}: the equivalence margin must be above 0, e.g. "
                                "0.01 (one point of top-1)"),
        (cfg.log.save_every >= 0, "log.save_every must be >= 0 (0: keep only checkpoints/last.pt)"),
        (cfg.checkpoint.every_steps >= 0, "checkpoint.every_steps must be >= 0 (0: at epoch ends and on a signal)"),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(message)


def to_yaml(cfg: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def to_dict(cfg: Config) -> dict:
    return OmegaConf.to_container(OmegaConf.structured(cfg))  # type: ignore[return-value]
