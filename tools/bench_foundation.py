"""Foundation benchmark: training throughput (ours vs the classic per-image DataLoader pipeline), data-path share,
raw-pixel kNN, and kNN quality of a trained run at the reference protocol (k=20, T=0.07).

    python tools/bench_foundation.py throughput [--steps 15] [--batch-size 256]
    python tools/bench_foundation.py raw-knn
    python tools/bench_foundation.py quality --run DIR      # kNN of a finished run at k=20/T=0.07 and k=200/T=0.1
    python tools/bench_foundation.py stems [--minutes 2]    # kNN per CPU-minute: timm stem vs small stem

Results are printed and merged into bench_out/foundation.json. Numbers are whatever this machine measures.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from selfsup_clusters.config import load_config
from selfsup_clusters.data import load_dataset
from selfsup_clusters.data.augment import BatchAugment
from selfsup_clusters.data.loader import InMemoryBatches
from selfsup_clusters.evaluate import extract_features, raw_pixel_knn, weighted_knn
from selfsup_clusters.trainer import build_method, build_optimizer, epoch_generator

OUT = Path("bench_out/foundation.json")


class PerImageViews(Dataset):
    """The classic pipeline: per-image torchvision transforms in DataLoader worker processes."""

    def __init__(self, images: torch.Tensor, cfg, mean, std):
        a = cfg.augment
        self.images = images
        self.transform = v2.Compose([
            v2.RandomResizedCrop(cfg.data.image_size, scale=tuple(a.crop_scale), ratio=tuple(a.crop_ratio),
                                 antialias=True),
            v2.RandomHorizontalFlip(a.flip_prob),
            v2.RandomApply([v2.ColorJitter(a.brightness, a.contrast)], p=a.jitter_prob),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean, std),
        ])

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int):
        image = self.images[i]
        return self.transform(image), self.transform(image), i


def time_steps(method, optimizer, batches, steps: int, bf16: bool = False) -> tuple[float, float]:
    """Run `steps` training steps (under bf16 autocast if asked); return (total seconds, seconds waiting for data)."""
    data_time, start = 0.0, time.perf_counter()
    iterator = iter(batches)
    for _ in range(steps):
        t0 = time.perf_counter()
        views, index = next(iterator)
        data_time += time.perf_counter() - t0
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = method.training_step(views, index, index)
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        optimizer.step()
    return time.perf_counter() - start, data_time


def throughput(args) -> dict:
    cfg = load_config(overrides=[f"batch_size={args.batch_size}"])
    data = load_dataset(cfg.data)
    images = data.train.images
    torch.manual_seed(0)
    results = {}
    for pipeline in ("in_memory_batched", "per_image_dataloader_2_workers"):
        method = build_method(cfg, data.channels).to(memory_format=torch.channels_last)
        method.train()
        optimizer, _ = build_optimizer(cfg, method, 100)
        if pipeline == "in_memory_batched":
            augment = BatchAugment(cfg.augment, cfg.data.image_size, data.mean, data.std)
            generator = epoch_generator(cfg, 0, torch.device("cpu"))
            order = torch.randperm(len(images), generator=generator)

            def batches(order=order, augment=augment, generator=generator):
                for s in range(len(images) // args.batch_size):
                    index = order[s * args.batch_size : (s + 1) * args.batch_size]
                    yield augment.views(images[index], generator), index
            source = batches()
        else:
            loader = DataLoader(PerImageViews(images, cfg, data.mean, data.std), batch_size=args.batch_size,
                                shuffle=True, num_workers=2, drop_last=True, persistent_workers=False)
            source = ((list(v), i) for v1, v2_, i in loader for v in [(v1, v2_)])
        source = iter(source)
        bf16 = args.precision == "bf16"
        time_steps(method, optimizer, source, 2, bf16)  # warm-up: worker start, oneDNN kernel choice
        seconds, data_seconds = time_steps(method, optimizer, source, args.steps, bf16)
        results[pipeline] = {
            "images_per_s": args.steps * args.batch_size * 2 / seconds,
            "data_time_frac": data_seconds / seconds,
        }
        print(f"{pipeline:32s} {results[pipeline]['images_per_s']:7.0f} img/s (both views)  "
              f"data share {results[pipeline]['data_time_frac']:.1%}", flush=True)
    ratio = results["in_memory_batched"]["images_per_s"] / results["per_image_dataloader_2_workers"]["images_per_s"]
    print(f"speed-up of the in-memory batched pipeline: {ratio:.2f}x")
    return {f"throughput_{args.precision}": {
        "backbone": cfg.model.backbone, "stem": cfg.model.stem, "batch_size": args.batch_size,
        "precision": args.precision, "image_size": cfg.data.image_size, "steps": args.steps, **results,
        "speedup": ratio, "threads": torch.get_num_threads()}}


def raw_knn(args) -> dict:
    data = load_dataset(load_config().data)
    out = {}
    for k, t in ((20, 0.07), (200, 0.1)):
        out[f"k{k}_t{t}"] = raw_pixel_knn(data.train.images, data.train.labels, data.test.images, data.test.labels,
                                          k=k, temperature=t)
        print(f"raw-pixel kNN top-1 (k={k}, T={t}): {out[f'k{k}_t{t}']:.4f}")
    return {"raw_pixel_knn": out}


def trained_encoder(run_dir: Path, dataset):
    """(method, centre-view transform) of a finished run's checkpoint, for images of `dataset`."""
    from omegaconf import OmegaConf

    from selfsup_clusters.checkpoint import load_checkpoint
    from selfsup_clusters.config import Config

    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Config), state["config"]))
    method = build_method(cfg, dataset.channels)
    method.load_state_dict(state["model"])
    augment = BatchAugment(cfg.augment, cfg.data.image_size, dataset.mean, dataset.std)
    return method, augment


def knn_scores(run_dir: Path, dataset, bank, test) -> dict:
    """kNN top-1 of a finished run at the reference protocol (k=20, T=0.07) and the default (k=200, T=0.1)."""
    method, augment = trained_encoder(run_dir, dataset)

    batches = InMemoryBatches(augment, torch.device("cpu"))

    def encode(split):
        return extract_features(method.features, batches.eval(split, 1024), [method])

    bank_features, test_features = encode(bank), encode(test)
    return {f"knn_k{k}_t{t}": weighted_knn(bank_features, bank.labels, test_features, test.labels, k, t)
            for k, t in ((20, 0.07), (200, 0.1))}


def quality(args) -> dict:
    """A finished run scored with the full training set as the bank and the full test set."""
    data = load_dataset(load_config().data)
    final = json.loads((Path(args.run) / "final.json").read_text())
    out = {"run": args.run, "epochs": final["epochs"], "train_time_s": final["train_time_s"],
           **knn_scores(Path(args.run), data, data.train, data.test)}
    print(f"{args.run}: kNN top-1 {out['knn_k20_t0.07']:.4f} (k=20, T=0.07), {out['knn_k200_t0.1']:.4f} "
          f"(k=200, T=0.1) after {final['epochs']} epochs, {final['train_time_s'] / 60:.1f} min")
    return {f"quality:{Path(args.run).name}": out}


def stems(args) -> dict:
    """kNN per CPU-minute of the two stems: each trains for about `--minutes` (its measured step time decides how
    many images that is), then both are scored on the same bank (first 10,000 training images) and test images
    (first 2,000)."""
    from selfsup_clusters.trainer import train

    full = load_dataset(load_config().data)
    bank, test = full.train.first(10000), full.test.first(2000)
    out = {}
    for stem in ("timm", "small"):
        overrides = [f"model.stem={stem}", "epochs=1", "eval.every=0", "data.test_subset=100", "eval.knn_k=20",
                     "log.progress=false", "log.tensorboard=false"]
        cfg = load_config(overrides=overrides)
        method = build_method(cfg, full.channels).to(memory_format=torch.channels_last)
        optimizer, _ = build_optimizer(cfg, method, 100)
        augment = BatchAugment(cfg.augment, cfg.data.image_size, full.mean, full.std)
        generator = torch.Generator().manual_seed(0)
        batches = ((augment.views(full.train.images[: cfg.batch_size], generator), torch.arange(cfg.batch_size))
                   for _ in range(3))
        time_steps(method, optimizer, batches, 1)
        seconds, _ = time_steps(method, optimizer, batches, 2)
        images_per_s = 2 * cfg.batch_size * 2 / seconds
        subset = max(cfg.batch_size, int(images_per_s * 60 * args.minutes / 2) // cfg.batch_size * cfg.batch_size)
        run_dir = Path(f"bench_out/stem-{stem}")
        if not (run_dir / "final.json").exists():
            train(load_config(overrides=[*overrides, f"data.subset={subset}", f"out={run_dir}"]))
        final = json.loads((run_dir / "final.json").read_text())
        out[stem] = {"images_per_s": images_per_s, "train_images": subset, "train_time_s": final["train_time_s"],
                     **knn_scores(run_dir, full, bank, test)}
        print(f"stem={stem}: {images_per_s:.0f} img/s, {subset} images in {final['train_time_s'] / 60:.1f} min "
              f"-> kNN top-1 {out[stem]['knn_k20_t0.07']:.4f} (k=20, T=0.07; bank 10k, test 2k)", flush=True)
    return {"stems": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("throughput")
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="bf16: autocast in both pipelines")
    sub.add_parser("raw-knn")
    p = sub.add_parser("quality")
    p.add_argument("--run", required=True)
    p = sub.add_parser("stems")
    p.add_argument("--minutes", type=float, default=2.0)
    args = parser.parse_args()
    result = {"throughput": throughput, "raw-knn": raw_knn, "quality": quality, "stems": stems}[args.what](args)
    OUT.parent.mkdir(exist_ok=True)
    merged = json.loads(OUT.read_text()) if OUT.exists() else {}
    merged.update(result)
    OUT.write_text(json.dumps(merged, indent=2) + "\n")


if __name__ == "__main__":
    main()
