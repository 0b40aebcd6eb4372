"""Our SimCLR against a SimCLR built from lightly, on this machine, in one invocation.

    PYTHONPATH=DIR .venv/bin/python tools/bench_lightly.py [--backbone NAME] [--batch-size N] [--steps 20]
        [--rounds 3] [--race-images 0 [--race-variant NAME=key=value,...]] [--out bench_out/lightly.json]
        [key=value ...]

lightly is not a dependency of this project; install it beside it, without touching .venv:
    .venv/bin/pip install --target DIR --no-deps lightly==1.6.0 lightning-utilities

Speed: training images/s (both views counted) of `selfsup-clusters`' SimCLR at the default settings (its own
batched tensor augmentation, `run.setup` + `trainer.train_epoch`) and of lightly's pipeline at the same backbone,
batch and image size (torchvision-style dataset of RGB-converted PIL images, lightly's `SimCLRTransform`, a
DataLoader with 2 workers, `SimCLRProjectionHead`, `NTXentLoss`, SGD), timed alternately: `--rounds` rounds of
`--steps` steps each after one untimed warm-up round. The ratio of medians is the number to compare; this machine's
run-to-run noise is about 15%.

Race (`--race-images N`): each side trains on the same first N training images of the validation set-up
(`data.val_fraction` of the training set held out, never the test set) for one pass, then weighted kNN (k=20,
T=0.07, all N as the bank) and the linear probe on the held-out images: accuracy at equal images seen, with each
side's seconds. `--race-variant NAME=key=value,...` (repeatable) races several of our settings against lightly's
(ours: one epoch of its cosine schedule; default: one variant, the defaults). lightly's settings are the issue's
"lightly defaults": crop scale 0.3-1, NT-Xent T=0.2, SGD lr 0.3 momentum 0.9, constant. `--rounds 0` skips the
speed part.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from selfsup_clusters.data import load_dataset  # noqa: E402
from selfsup_clusters.evaluation.evaluate import linear_probe, weighted_knn  # noqa: E402
from selfsup_clusters.methods.backbones import create_backbone  # noqa: E402
from selfsup_clusters.recipes import load_config  # noqa: E402
from selfsup_clusters.studies.bench import parse_variants, timed_run, write_report  # noqa: E402
from selfsup_clusters.training.run_eval import backbone_features  # noqa: E402
from selfsup_clusters.training.trainer import train_epoch  # noqa: E402

LIGHTLY = {"min_scale": 0.3, "temperature": 0.2, "lr": 0.3, "momentum": 0.9, "workers": 2}


class PILViews(Dataset):
    """uint8 (N, C, H, W) images as RGB PIL images through a lightly transform (a list of views)."""

    def __init__(self, images: torch.Tensor, transform) -> None:
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        image = self.images[index]
        pil = Image.fromarray(image[0].numpy() if image.shape[0] == 1 else image.permute(1, 2, 0).numpy())
        return self.transform(pil.convert("RGB"))


class LightlySimCLR:
    """SimCLR the lightly way: its transform, projection head and NT-Xent loss around the same timm backbone."""

    def __init__(self, cfg, images: torch.Tensor, seed: int = 0) -> None:
        from lightly.loss import NTXentLoss
        from lightly.models.modules import SimCLRProjectionHead
        from lightly.transforms import SimCLRTransform

        torch.manual_seed(seed)
        # the stock timm model, as a lightly user builds it (without our PointOutputConv2d)
        self.backbone = create_backbone(dataclasses.replace(cfg.model, point_conv_matmul=False), in_chans=3)
        self.head = SimCLRProjectionHead(self.backbone.num_features, cfg.model.proj_hidden_dim, cfg.model.proj_dim)
        self.model = torch.nn.Sequential(self.backbone, self.head)
        if cfg.model.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.loss = NTXentLoss(temperature=LIGHTLY["temperature"])
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=LIGHTLY["lr"], momentum=LIGHTLY["momentum"])
        transform = SimCLRTransform(input_size=cfg.data.image_size, min_scale=LIGHTLY["min_scale"])
        self.loader = DataLoader(PILViews(images, transform), batch_size=cfg.batch_size, shuffle=True,
                                 num_workers=LIGHTLY["workers"], drop_last=True, persistent_workers=True,
                                 generator=torch.Generator().manual_seed(seed))
        self.batches = iter(self.loader)
        self.batch_size = cfg.batch_size

    def next_views(self):
        try:
            return next(self.batches)
        except StopIteration:
            self.batches = iter(self.loader)
            return next(self.batches)

    def train_steps(self, steps: int) -> float:
        """Seconds for `steps` steps (data loading included)."""
        self.model.train()
        start = time.perf_counter()
        for _ in range(steps):
            x0, x1 = self.next_views()
            z0, z1 = self.model(x0), self.model(x1)
            loss = self.loss(z0, z1)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        return time.perf_counter() - start

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised backbone features (as `run_eval.backbone_features` gives ours) of un-augmented images,
        the input normalised as lightly's transform does (RGB, ImageNet statistics)."""
        self.model.eval()
        rgb = images.float().div(255).expand(-1, 3, -1, -1)
        mean_t = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std_t = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        return torch.cat([F.normalize(self.backbone((chunk - mean_t) / std_t), dim=1) for chunk in rgb.split(1024)])


def speed(cfg, data, steps: int, rounds: int) -> dict:
    run, logger = timed_run(cfg, data, steps)
    theirs = LightlySimCLR(cfg, data.train.images)
    images = steps * cfg.batch_size * 2
    ours_rates, theirs_rates = [], []
    for round_ in range(rounds + 1):  # round 0 is the warm-up
        ours_seconds = train_epoch(run, round_, logger)["epoch_time_s"]
        theirs_seconds = theirs.train_steps(steps)
        if round_:
            ours_rates.append(images / ours_seconds)
            theirs_rates.append(images / theirs_seconds)
        print(f"round {round_}{' (warm-up)' if not round_ else ''}: ours {images / ours_seconds:.0f} images/s, "
              f"lightly {images / theirs_seconds:.0f} images/s", flush=True)
    ours_median, theirs_median = statistics.median(ours_rates), statistics.median(theirs_rates)
    return {"ours_images_per_s": ours_rates, "lightly_images_per_s": theirs_rates,
            "ours_median": ours_median, "lightly_median": theirs_median, "ratio": ours_median / theirs_median}


def race(cfg, overrides: list[str], data, images: int, variants: dict[str, list[str]]) -> dict:
    """One pass over the first `images` training images each (our variants, then lightly); kNN and the linear probe
    on the held-out validation images."""
    train = data.train.first(images)
    subset = dataclasses.replace(data, train=train)
    steps = images // cfg.batch_size
    scores = {}

    def score(name: str, seconds: float, bank: torch.Tensor, query: torch.Tensor) -> None:
        scores[name] = {"seconds": seconds, "validation_images": len(data.test),
                        "knn_top1": weighted_knn(bank, train.labels, query, data.test.labels, k=20, temperature=0.07),
                        "linear_top1": linear_probe(bank, train.labels, query, data.test.labels)}
        print(f"race, {images} images: {name} {json.dumps(scores[name])}", flush=True)

    for name, settings in variants.items():
        ours = load_config(overrides=[*overrides, *settings, "epochs=1"])
        run, logger = timed_run(ours, subset, steps)
        start = time.perf_counter()
        train_epoch(run, 0, logger)
        seconds = time.perf_counter() - start
        score(name, seconds, backbone_features(run, train), backbone_features(run, data.test))
    theirs = LightlySimCLR(cfg, train.images)
    seconds = theirs.train_steps(steps)
    score("lightly", seconds, theirs.features(train.images), theirs.features(data.test.images))
    return {"images": images, "steps": steps, "variants": variants, "scores": scores}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--race-images", type=int, default=0)
    parser.add_argument("--race-variant", action="append", metavar="NAME=key=value,...",
                        help="our settings to race (repeatable; default: ours=, the defaults)")
    parser.add_argument("--out", default="bench_out/lightly.json")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        overrides = ["method=simclr", "log.progress=false", "log.tensorboard=false", "log.every_steps=0",
                     f"out={tmp}/ours", *([f"model.backbone={args.backbone}"] if args.backbone else []),
                     *([f"batch_size={args.batch_size}"] if args.batch_size else []), *args.overrides]
        cfg = load_config(overrides=overrides)
        data = load_dataset(cfg.data)
        report = {"settings": {"backbone": cfg.model.backbone, "batch_size": cfg.batch_size,
                               "image_size": cfg.data.image_size, "precision": cfg.precision,
                               "threads": torch.get_num_threads(), "lightly": LIGHTLY, "overrides": overrides[5:]}}
        if args.rounds:
            report["speed"] = speed(cfg, data, args.steps, args.rounds)
            print(f"images/s, median of {args.rounds}: ours {report['speed']['ours_median']:.0f}, lightly "
                  f"{report['speed']['lightly_median']:.0f}, ratio {report['speed']['ratio']:.2f}", flush=True)
        if args.race_images:
            variants = parse_variants(args.race_variant or ["ours="])
            held_out = dataclasses.replace(cfg.data, val_fraction=cfg.data.val_fraction or 0.1)
            report["race"] = race(cfg, overrides, load_dataset(held_out), args.race_images, variants)
    write_report(report, args.out)


if __name__ == "__main__":
    main()
