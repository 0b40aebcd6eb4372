"""Foundation benchmark: training throughput (ours vs the classic per-image DataLoader pipeline), data-path share,
raw-pixel kNN, and kNN quality of a trained run at the reference protocol (k=20, T=0.07).

    python tools/bench_foundation.py throughput [--steps 15] [--batch-size 256]
    python tools/bench_foundation.py raw-knn
    python tools/bench_foundation.py quality --run DIR      # kNN of a finished run at k=20/T=0.07 and k=200/T=0.1

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

from selfsup_clusters.data import load_dataset
from selfsup_clusters.data.augment import BatchAugment
from selfsup_clusters.evaluation.evaluate import raw_pixel_knn, weighted_knn
from selfsup_clusters.methods.registry import build_method
from selfsup_clusters.recipes import load_config
from selfsup_clusters.training.run import build_optimizer
from selfsup_clusters.training.trainer import epoch_generator

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


def knn_scores(run_dir: Path, bank_size: int | None = None, test_size: int | None = None) -> dict:
    """kNN top-1 of a finished run at the reference protocol (k=20, T=0.07) and the default (k=200, T=0.1), with the
    first `bank_size` training images (default all) as the bank and the first `test_size` test images."""
    from selfsup_clusters.training.run import load_trained
    from selfsup_clusters.training.run_eval import backbone_features

    run = load_trained(run_dir / "checkpoints" / "last.pt", [f"data.subset={bank_size or 'null'}",
                                                              f"data.test_subset={test_size or 'null'}"])
    bank, test = run.data.train, run.data.test
    bank_features, test_features = backbone_features(run, bank), backbone_features(run, test)
    return {f"knn_k{k}_t{t}": weighted_knn(bank_features, bank.labels, test_features, test.labels, k, t)
            for k, t in ((20, 0.07), (200, 0.1))}


def quality(args) -> dict:
    """A finished run scored with the full training set as the bank and the full test set."""
    final = json.loads((Path(args.run) / "final.json").read_text())
    out = {"run": args.run, "epochs": final["epochs"], "train_time_s": final["train_time_s"],
           **knn_scores(Path(args.run))}
    print(f"{args.run}: kNN top-1 {out['knn_k20_t0.07']:.4f} (k=20, T=0.07), {out['knn_k200_t0.1']:.4f} "
          f"(k=200, T=0.1) after {final['epochs']} epochs, {final['train_time_s'] / 60:.1f} min")
    return {f"quality:{Path(args.run).name}": out}


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
    args = parser.parse_args()
    result = {"throughput": throughput, "raw-knn": raw_knn, "quality": quality}[args.what](args)
    OUT.parent.mkdir(exist_ok=True)
    merged = json.loads(OUT.read_text()) if OUT.exists() else {}
    merged.update(result)
    OUT.write_text(json.dumps(merged, indent=2) + "\n")


if __name__ == "__main__":
    main()
