"""The run suite every multi-run command trains through (compare, analyze, tune, claims): entries (a method, its
clusters, its own settings), their runs per seed (one folder each, finished runs skipped, interrupted ones
resumed), raw pixels' reference rows, and summaries with a 95% interval (intervals.Interval) per metric and each
entry's paired difference to a baseline. report.py writes them; compare.py is the `compare` command.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from selfsup_clusters.clusters import parse_spec
from selfsup_clusters.config import Config
from selfsup_clusters.errors import Interrupted, first_line
from selfsup_clusters.evaluate import linear_probe, raw_pixel_features, weighted_knn
from selfsup_clusters.intervals import Interval, paired_difference, t_interval
from selfsup_clusters.recipes import UserConfig

# linear first: the paper's metric
METRICS = ("linear_top1", "knn_top1", "nmi", "train_time_s", "eval_time_s", "images_per_s")


@dataclass(frozen=True)
class Entry:
    """One row of a comparison: a method with one cluster source ("none" for methods without clusters) and, for a
    tuning grid point, its own `key=value` settings."""

    method: str
    clusters: str = "none"
    overrides: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        parts = [self.method] + ([str(parse_spec(self.clusters))] if self.clusters != "none" else [])
        return " ".join(parts + list(self.overrides))

    @property
    def folder(self) -> str:
        parts = [self.method] + ([parse_spec(self.clusters).name] if self.clusters != "none" else [])
        parts += [re.sub(r"[^A-Za-z0-9.=-]+", "-", item) for item in self.overrides]
        return "_".join(parts)


@dataclass
class Result:
    """An entry's finished runs: final.json per seed."""

    entry: Entry
    finals: dict[int, dict] = field(default_factory=dict)

    def values(self, metric: str) -> dict[int, float]:
        return {seed: final[metric] for seed, final in self.finals.items() if metric in final}


def run_config(user: UserConfig, entry: Entry, seed: int, run_dir: Path) -> Config:
    """The run's config: the entry's method recipe beneath the user's file and overrides, then the entry itself."""
    return user.load(f"method={entry.method}", f"clusters.spec={entry.clusters}", *entry.overrides, f"seed={seed}",
                     f"out={run_dir}")


def run_one(user: UserConfig, entry: Entry, seed: int, out: Path, tag: str = "compare") -> dict:
    """Train one row's run (resuming an interrupted one); the finished run's final.json."""
    from selfsup_clusters.trainer import resume, train

    run_dir = out / entry.folder / f"seed{seed}"
    final_path = run_dir / "final.json"
    if final_path.exists():
        print(f"[{tag}] {entry.name} seed {seed}: finished before, skipped ({run_dir})", flush=True)
        return json.loads(final_path.read_text())
    if (run_dir / "checkpoints" / "last.pt").exists():
        print(f"[{tag}] {entry.name} seed {seed}: resuming {run_dir}", flush=True)
        return resume(run_dir)
    print(f"[{tag}] {entry.name} seed {seed}: training into {run_dir}", flush=True)
    return train(run_config(user, entry, seed, run_dir))


def train_entries(user: UserConfig, entries: list[Entry], seeds: list[int], out: Path,
                  tag: str = "compare") -> tuple[list[Result], list[str]]:
    """Train every entry and seed (skipping finished runs), with a progress line and an estimate of the time left;
    the results of entries that finished at least once, and one line per failed run. A failure does not stop
    the others; Ctrl-C does."""
    results, failures = [], []
    total, done, trained_seconds, trained = len(entries) * len(seeds), 0, 0.0, 0
    for entry in entries:
        result = Result(entry)
        for seed in seeds:
            start = time.perf_counter()
            fresh = not (out / entry.folder / f"seed{seed}" / "final.json").exists()
            try:
                result.finals[seed] = run_one(user, entry, seed, out, tag)
            except Interrupted:
                raise
            except Exception as e:  # noqa: BLE001 - one failed run must not lose the others' results
                failures.append(f"{entry.name} seed {seed}: {first_line(e)}")
                print(f"[{tag}] FAILED {failures[-1]}", flush=True)
            done += 1
            if fresh:
                trained_seconds, trained = trained_seconds + time.perf_counter() - start, trained + 1
            left = f", about {(total - done) * trained_seconds / trained / 60:.0f} min left" if trained else ""
            print(f"[{tag}] {done}/{total} runs done{left}", flush=True)
        if result.finals:
            results.append(result)
    return results, failures


def raw_pixel_rows(cfg: Config, out: Path) -> list[dict]:
    """kNN and linear probe on raw pixels (mean-centred, L2-normalised) of the same train/test images."""
    from selfsup_clusters.data import load_dataset

    path = out / "raw_pixels.json"
    if path.exists():
        return json.loads(path.read_text())
    data = load_dataset(cfg.data)
    if not torch.is_tensor(data.train.images):
        return []  # image files: no raw-pixel reference
    train_features, test_features = raw_pixel_features(data.train.images, data.test.images)
    labels, test_labels = data.train.labels, data.test.labels
    row = {"name": "raw pixels", "method": "raw pixels", "clusters": "none", "seeds": 1,
           "knn_top1": weighted_knn(train_features, labels, test_features, test_labels, cfg.eval.knn_k,
                                    cfg.eval.knn_t),
           "linear_top1": linear_probe(train_features, labels, test_features, test_labels, seed=cfg.seed)}
    path.write_text(json.dumps([row], indent=2) + "\n")
    return [row]


@dataclass(frozen=True)
class Summary:
    """One row of a comparison: per metric the mean with its 95% t-interval over the seeds (`intervals`), per
    metric the paired difference to the baseline row (`differences`, same seeds), and single measurements that
    have no interval (`values`: the raw-pixel reference's)."""

    name: str
    method: str
    clusters: str
    seeds: int
    intervals: dict[str, Interval] = field(default_factory=dict)
    differences: dict[str, Interval] = field(default_factory=dict)
    values: dict[str, float] = field(default_factory=dict)

    @classmethod
    def reference(cls, row: dict) -> Summary:
        """A raw_pixels.json row, its numbers as single values."""
        identity = ("name", "method", "clusters", "seeds")
        return cls(*(row[key] for key in identity), values={k: v for k, v in row.items() if k not in identity})

    def get(self, metric: str) -> Interval | float | None:
        """The metric's interval over seeds, else its single value, else None."""
        return self.intervals.get(metric, self.values.get(metric))

    def mean(self, metric: str) -> float | None:
        value = self.get(metric)
        return value.mean if isinstance(value, Interval) else value

    def row(self) -> dict:
        """Every field under one key, the paired differences as `<metric>_diff`: a row for tables.write_csv,
        which writes each interval as its mean, _low and _high columns."""
        return {"name": self.name, "method": self.method, "clusters": self.clusters, "seeds": self.seeds,
                **self.intervals, **self.values, **{f"{m}_diff": d for m, d in self.differences.items()}}


def summarise(result: Result, baseline: Result | None = None) -> Summary:
    """One table row: per metric the mean with its 95% t-interval over seeds; against `baseline` (same seeds) the
    paired difference of linear and kNN top-1."""
    entry = result.entry
    intervals = {metric: t_interval(list(values.values())) for metric in METRICS
                 for values in [result.values(metric)] if values}
    differences = {}
    if baseline is not None and baseline is not result:
        for metric in ("linear_top1", "knn_top1"):
            try:
                differences[metric] = paired_difference(result.values(metric), baseline.values(metric))
            except ValueError:
                continue
    return Summary(entry.name, entry.method, entry.clusters, len(result.finals), intervals, differences)


