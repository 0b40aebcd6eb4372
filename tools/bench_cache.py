"""The decoded cache (data.cache=true) against the per-image PIL path (data.cache=false) on image folders of JPEGs,
timed alternately in one invocation (this machine's run-to-run noise is about 15%).

    .venv/bin/python tools/bench_cache.py [--images 4000] [--sizes 32,64,96] [--rounds 3]
        [--train-sizes 64] [--backbones resnet10t] [--train-steps 0] [--accuracy-size 32] [--accuracy-epochs 3]
        [--seeds 2] [--work DIR] [--out bench_out/cache.json] [key=value ...]

For each size S, the first --images Fashion-MNIST training images are resized to S x S (bilinear), saved as RGB JPEGs
(quality 90) in one folder per class, and cached at S (the cache build is timed: --work keeps the folders; the cache
is rebuilt for the timing). Then, per round, each path in turn:
  (a) input alone: one epoch of training batches (64 images, two views each) drawn with no training step, views/s;
      the per-image path with its default data.num_workers (4), DataLoader start-up included as in training; the
      cache path with its batched augmentation on this CPU, and the cache's uint8 batches gathered alone (read:
      the CPU's share when the augmentation runs on a GPU);
  (b) end to end: SimCLR training images/s (both views) over --train-steps steps (0: a whole epoch, DataLoader
      start-up included) after a warm-up round, batch 64, for each --backbones at each --train-sizes, through
      run.setup and trainer.train_epoch (the loop itself; configs/fashion_mnist.yaml's timm stem and fp32);
  (c) accuracy: SimCLR trained --accuracy-epochs epochs each way at --accuracy-size, --seeds seeds, scored on the
      validation split (data.val_fraction=0.1): kNN and linear top-1.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from selfsup_clusters.data import load_dataset  # noqa: E402
from selfsup_clusters.data.augment import BatchAugment  # noqa: E402
from selfsup_clusters.data.cache import cache_dataset  # noqa: E402
from selfsup_clusters.data.fashion_mnist import CLASS_NAMES  # noqa: E402
from selfsup_clusters.data.loader import make_batches  # noqa: E402
from selfsup_clusters.recipes import load_config  # noqa: E402
from selfsup_clusters.studies.bench import timed_run, write_report  # noqa: E402
from selfsup_clusters.studies.tables import format_table  # noqa: E402
from selfsup_clusters.training.trainer import epoch_generator, train, train_epoch  # noqa: E402

PATHS = {"files": "data.cache=false", "cache": "data.cache=true"}
BATCH = 64


def make_folder(root: Path, images: int, size: int) -> Path:
    """`images` Fashion-MNIST training images as size x size RGB JPEGs, one folder per class (kept if present)."""
    folder = root / f"jpeg{size}"
    if (folder / ".complete").is_file():
        return folder
    data = load_dataset(load_config(overrides=["data.cache=false"]).data)
    for i in range(images):
        name = CLASS_NAMES[int(data.train.labels[i])].replace("/", "-").replace(" ", "-")
        (folder / name).mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(data.train.images[i, 0].numpy()).resize((size, size), Image.Resampling.BILINEAR)
        image.convert("RGB").save(folder / name / f"{i:05d}.jpg", quality=90)
    (folder / ".complete").touch()
    return folder


def settings(folder: Path, size: int, work: Path, overrides: list[str]) -> list[str]:
    return [f"data.name=imagefolder:{folder}", f"data.image_size={size}", f"data.cache_dir={work / f'cache{size}'}",
            f"batch_size={BATCH}", "log.progress=false", "log.tensorboard=false",
            "log.every_steps=0", "eval.projector=0", "device=cpu", *overrides]


def build_time(folder: Path, size: int, work: Path, overrides: list[str]) -> dict:
    """Seconds and bytes of building the cache from scratch with the default workers."""
    cfg = load_config(overrides=[*settings(folder, size, work, overrides), "data.cache=false"])
    data = load_dataset(cfg.data)
    shutil.rmtree(work / f"cache{size}", ignore_errors=True)
    _, info = cache_dataset(data, load_config(overrides=settings(folder, size, work, overrides)).data)
    return {"size": size, "images": info.images, "build_s": info.built_seconds, "bytes": info.bytes,
            "images_per_s": info.images / info.built_seconds}


def input_rate(cfg, data) -> float:
    """Views per second of one epoch of training batches, drawn with no training step."""
    augment = BatchAugment(cfg.augment, cfg.data.image_size, data.mean, data.std)
    batches = make_batches(data, augment, torch.device("cpu"), cfg.data.num_workers)
    generator = epoch_generator(cfg, 0, torch.device("cpu"))
    order = torch.randperm(len(data.train), generator=generator)
    start, views = time.perf_counter(), 0
    for batch_views, _, _ in batches.train(data.train, order, BATCH, generator):
        views += sum(len(v) for v in batch_views)
    return views / (time.perf_counter() - start)


def read_rate(data) -> float:
    """Views per second of one epoch of the cache's uint8 batches gathered with no augmentation (two views a
    sample, counted as the training batches count them): the CPU's share of the cache path when the augmentation
    runs on a GPU."""
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0))
    start, views = time.perf_counter(), 0
    for step in range(len(order) // BATCH):
        batch = data.train.images[order[step * BATCH : (step + 1) * BATCH]]
        views += 2 * len(batch)
    return views / (time.perf_counter() - start)


def alternate(measures: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Each measure once per round, in turn (round 0 untimed: a warm-up)."""
    results = {name: [] for name in measures}
    for round_ in range(rounds + 1):
        for name, measure in measures.items():
            value = measure()
            if round_:
                results[name].append(value)
    return results


def input_path(folders: dict[int, Path], work: Path, overrides: list[str], rounds: int) -> list[dict]:
    measures = {}
    for size, folder in folders.items():
        for path, setting in PATHS.items():
            cfg = load_config(overrides=[*settings(folder, size, work, overrides), setting])
            data = load_dataset(cfg.data)
            measures[(size, path)] = lambda cfg=cfg, data=data: input_rate(cfg, data)
        measures[(size, "read")] = lambda data=data: read_rate(data)  # the cache's data, loaded last
    results = alternate(measures, rounds)
    rows = []
    for size in folders:
        files, cache, read = (statistics.median(results[(size, path)]) for path in ("files", "cache", "read"))
        rows.append({"size": size, "files_views_per_s": files, "cache_views_per_s": cache, "ratio": cache / files,
                     "cache_read_views_per_s": read, "read_ratio": read / files})
    return rows


def training_rate(args, folders: dict[int, Path], work: Path) -> list[dict]:
    runs, loggers, measures = {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.train_sizes:
            for backbone in args.backbones:
                for path, setting in PATHS.items():
                    key = (size, backbone, path)
                    cfg = load_config(overrides=[*settings(folders[size], size, work, args.overrides), setting,
                                                 f"model.backbone={backbone}", f"out={tmp}/{'-'.join(map(str, key))}"])
                    data = load_dataset(cfg.data)
                    runs[key], loggers[key] = timed_run(cfg, data, args.train_steps or len(data.train) // BATCH)
                    measures[key] = lambda key=key: train_epoch(runs[key], 1, loggers[key])["images_per_s"]
        results = alternate(measures, args.rounds)
    rows = []
    for size in args.train_sizes:
        for backbone in args.backbones:
            files, cached = (statistics.median(results[(size, backbone, path)]) for path in PATHS)
            rows.append({"size": size, "backbone": backbone, "files_images_per_s": files,
                         "cache_images_per_s": cached, "ratio": cached / files})
    return rows


def accuracy(args, folder: Path, work: Path) -> list[dict]:
    """Validation kNN and linear top-1 of short SimCLR runs each way, seed by seed."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            for path, setting in PATHS.items():
                cfg = load_config(overrides=[*settings(folder, args.accuracy_size, work, args.overrides), setting,
                                             "data.val_fraction=0.1", f"epochs={args.accuracy_epochs}",
                                             f"seed={seed}", "eval.every=0", f"out={tmp}/{path}-{seed}"])
                final = train(cfg)
                rows.append({"seed": seed, "path": path, "knn_top1": final["knn_top1"],
                             "linear_top1": final["linear_top1"], "train_s": final["train_time_s"]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument("--sizes", default="32,64,96")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--train-sizes", default="64", help="'': skip (b)")
    parser.add_argument("--backbones", default="resnet10t")
    parser.add_argument("--train-steps", type=int, default=0, help="0: a whole epoch")
    parser.add_argument("--accuracy-size", type=int, default=32)
    parser.add_argument("--accuracy-epochs", type=int, default=3, help="0: skip (c)")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--work", default="bench_out/cache_work", help="the JPEG folders and their caches")
    parser.add_argument("--out", default="bench_out/cache.json")
    parser.add_argument("overrides", nargs="*", help="key=value for every run, e.g. method=cl-infonce")
    args = parser.parse_args()
    args.train_sizes = [int(s) for s in args.train_sizes.split(",") if s]  # none: skip (b)
    args.backbones = args.backbones.split(",")
    work = Path(args.work)
    sizes = sorted({*(int(s) for s in args.sizes.split(",")), *args.train_sizes, args.accuracy_size})
    folders = {size: make_folder(work, args.images, size) for size in sizes}
    report = {"images": args.images, "build": [build_time(folders[s], s, work, args.overrides) for s in sizes]}
    print(format_table(report["build"]), flush=True)
    report["input"] = input_path({s: folders[s] for s in map(int, args.sizes.split(","))}, work, args.overrides,
                                 args.rounds)
    print(format_table(report["input"]), flush=True)
    if args.train_sizes:
        report["training"] = training_rate(args, folders, work)
        print(format_table(report["training"]), flush=True)
    if args.accuracy_epochs:
        report["accuracy"] = accuracy(args, folders[args.accuracy_size], work)
        print(format_table(report["accuracy"]), flush=True)
    write_report(report, args.out)


if __name__ == "__main__":
    main()
