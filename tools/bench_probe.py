"""The linear probe's solver: the protocol before (AdamW on mini-batches, at least 1,000 steps) against full-batch
L-BFGS (`evaluate.linear_probe`) at several L2 penalties, on the features of trained runs' checkpoints, alternately
in one invocation: accuracy (the paired difference per feature set, with its 95% t-interval) and time.

    .venv/bin/python tools/bench_probe.py RUN_DIR [RUN_DIR ...] [--l2 1e-4,1e-3,1e-2] [--out bench_out/probe.json]

Every checkpoints/epochNNNN.pt of every run folder (train with log.save_every=1) is one feature set: its run's
training split and its evaluation split (the validation split when the run held one out: choose the penalty there,
never on the test set).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from selfsup_clusters.evaluation.evaluate import linear_probe  # noqa: E402
from selfsup_clusters.evaluation.intervals import t_interval  # noqa: E402
from selfsup_clusters.studies.bench import write_report  # noqa: E402
from selfsup_clusters.studies.tables import format_table  # noqa: E402
from selfsup_clusters.training.run import load_trained  # noqa: E402
from selfsup_clusters.training.run_eval import backbone_features  # noqa: E402


def adamw_probe(train_features, train_labels, test_features, test_labels, seed: int = 0) -> float:
    """The probe before L-BFGS, as it was: standardised features, nn.Linear, AdamW (lr 1e-3, weight decay 1e-5),
    batch 512, 30 epochs but at least 1,000 steps, cosine schedule, cross-entropy."""
    keep = train_labels >= 0
    x, y = train_features[keep].float(), train_labels[keep]
    mean, std = x.mean(dim=0), x.std(dim=0).clamp_min(1e-6)
    x = (x - mean) / std
    num_classes = int(max(y.max(), test_labels.max())) + 1
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        classifier = nn.Linear(x.shape[1], num_classes)
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=1e-3, weight_decay=1e-5)
    batches_per_epoch = math.ceil(len(x) / 512)
    epochs = max(30, math.ceil(1000 / batches_per_epoch))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * batches_per_epoch)
    for _ in range(epochs):
        for index in torch.randperm(len(x), generator=generator).split(512):
            loss = F.cross_entropy(classifier(x[index]), y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    with torch.no_grad():
        predictions = classifier((test_features.float() - mean) / std).argmax(dim=1)
    return (predictions == test_labels).float().mean().item()


def timed(l2: float | None, train, test, labels) -> tuple[float, float]:
    """(accuracy, seconds) of the AdamW probe (l2 None) or L-BFGS at `l2`."""
    start = time.perf_counter()
    accuracy = adamw_probe(train, labels[0], test, labels[1]) if l2 is None else \
        linear_probe(train, labels[0], test, labels[1], l2=l2)
    return accuracy, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--l2", default="1e-4,1e-3,1e-2")
    parser.add_argument("--out", default="bench_out/probe.json")
    args = parser.parse_args()
    penalties = [float(v) for v in args.l2.split(",")]
    solvers = {"adamw (before)": None, **{f"lbfgs l2={p:g}": p for p in penalties}}
    accuracy = {name: [] for name in solvers}
    seconds = {name: [] for name in solvers}
    sets = []
    for checkpoint in sorted(p for run in args.runs for p in Path(run).glob("**/checkpoints/epoch*.pt")):
        run = load_trained(checkpoint)
        train, test = (backbone_features(run, split) for split in (run.data.train, run.data.test))
        labels = (run.data.train.labels, run.data.test.labels)
        for name, l2 in solvers.items():
            found = timed(l2, train, test, labels)
            accuracy[name].append(found[0])
            seconds[name].append(found[1])
        sets.append(str(checkpoint))
        print(f"{checkpoint}: " + ", ".join(f"{name} {accuracy[name][-1]:.4f}" for name in solvers), flush=True)
    before = accuracy["adamw (before)"]
    rows = [{"solver": name, "mean accuracy": statistics.mean(values),
             "minus adamw [95% t-interval]": "-" if name.startswith("adamw") else
             f"{t_interval([a - b for a, b in zip(values, before, strict=True)]):+.4f}",
             "median seconds": statistics.median(seconds[name]),
             "speed-up": statistics.median(b / a for a, b in zip(seconds[name], seconds["adamw (before)"],
                                                                  strict=True))}
            for name, values in accuracy.items()]
    print(f"{len(sets)} feature sets; evaluation splits as each run held them")
    print(format_table(rows))
    write_report({"sets": sets, "accuracy": accuracy, "seconds": seconds, "rows": rows}, args.out)


if __name__ == "__main__":
    main()
