"""The comparison suite: train several methods (and seeds), each at its own recipe with the same shared options, one
run folder each under DIR (so TensorBoard overlays them), and tabulate their final evaluation with intervals.

DIR/<method>[_<clusters>]/seed<S>/   each run (final.json once it finished)
DIR/raw_pixels.json                  the reference rows: kNN and linear probe on raw pixels
DIR/results.csv, results.md          one row per method and cluster source: mean and 95% t-interval over seeds,
                                     and each row's paired difference to the first row (same seeds)
DIR/results.png                      linear and kNN top-1 per row, with the intervals as error bars

Re-running the same command skips finished runs and resumes interrupted ones.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from selfsup_clusters.clusters import parse_spec, split_spec_list
from selfsup_clusters.config import Config, UserConfig
from selfsup_clusters.errors import Interrupted, UserError, first_line
from selfsup_clusters.evaluate import linear_probe, raw_pixel_features, weighted_knn
from selfsup_clusters.intervals import paired_difference, t_interval
from selfsup_clusters.methods import method_class
from selfsup_clusters.tables import write_csv

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


def parse_clusters_for(text: str | None) -> dict[str, list[str]]:
    """"cl-infonce=wordnet:8,pcl=kmeans:25,50,100" -> {"cl-infonce": ["wordnet:8"], "pcl": ["kmeans:25,50,100"]};
    "|" gives one method several rows ("cl-infonce=wordnet:7|wordnet:9")."""
    specs: dict[str, list[str]] = {}
    for item in split_spec_list(text):
        method, equals, spec = item.partition("=")
        if not equals:
            raise UserError(f"--clusters-for {text!r}: expected METHOD=SPEC[,METHOD=SPEC...], "
                            "e.g. cl-infonce=wordnet:8,pcl=kmeans:25,50,100")
        specs[method.strip()] = [str(parse_spec(s)) for s in spec.split("|")]
    return specs


def plan(methods: list[str], clusters_for: dict[str, list[str]], shared_clusters: str) -> list[Entry]:
    """The rows to run; methods that learn from clusters need a source (theirs, or the shared --clusters)."""
    for method in methods:
        method_class(method)  # unknown names fail here, listing the valid ones
    unused = set(clusters_for) - set(methods)
    if unused:
        raise UserError(f"--clusters-for names {', '.join(sorted(unused))}, which is not in --methods")
    entries = []
    for method in methods:
        if not method_class(method).uses_clusters:
            if method in clusters_for:
                raise UserError(f"{method} does not learn from clusters; drop it from --clusters-for")
            entries.append(Entry(method))
            continue
        specs = clusters_for.get(method) or ([shared_clusters] if shared_clusters != "none" else [])
        if not specs:
            raise UserError(f"{method} learns from clusters; give it a source, e.g. --clusters-for "
                            f"{method}=wordnet:8 (or kmeans:100, labels)")
        entries.extend(Entry(method, str(parse_spec(spec))) for spec in specs)
    return entries


def run_config(user: UserConfig, entry: Entry, seed: int, run_dir: Path) -> Config:
    """The run's config: the entry's method recipe beneath the user's file and overrides, then the entry itself."""
    return user.load(f"method={entry.method}", f"clusters.spec={entry.clusters}", *entry.overrides, f"seed={seed}",
                     f"out={run_dir}")


def run_one(user: UserConfig, entry: Entry, seed: int, out: Path, tag: str = "compare") -> dict:
    """Train one row's run (resuming an interrupted one); the finished run's final.json."""
    from selfsup_clusters.trainer import train

    run_dir = out / entry.folder / f"seed{seed}"
    final_path = run_dir / "final.json"
    if final_path.exists():
        print(f"[{tag}] {entry.name} seed {seed}: finished before, skipped ({run_dir})", flush=True)
        return json.loads(final_path.read_text())
    if (run_dir / "checkpoints" / "last.pt").exists():
        print(f"[{tag}] {entry.name} seed {seed}: resuming {run_dir}", flush=True)
        return train(run_config(user, entry, seed, run_dir), resume=run_dir)
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
    if cfg.data.val_fraction > 0:
        data = data.holdout(cfg.data.val_fraction)
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


def summarise(result: Result, baseline: Result | None = None) -> dict:
    """One table row: per metric the mean with its 95% t-interval over seeds; against `baseline` (same seeds) the
    paired difference of linear and kNN top-1."""
    entry = result.entry
    row = {"name": entry.name, "method": entry.method, "clusters": entry.clusters, "seeds": len(result.finals)}
    for metric in METRICS:
        values = list(result.values(metric).values())
        if values:
            interval = t_interval(values)
            row[metric], row[f"{metric}_low"], row[f"{metric}_high"] = interval.mean, interval.low, interval.high
    if baseline is not None and baseline is not result:
        for metric in ("linear_top1", "knn_top1"):
            try:
                diff = paired_difference(result.values(metric), baseline.values(metric))
            except ValueError:
                continue
            row[f"{metric}_diff"], row[f"{metric}_diff_low"], row[f"{metric}_diff_high"] = \
                diff.mean, diff.low, diff.high
    return row


def interval_text(row: dict, metric: str, digits: int = 4) -> str:
    """"0.8123 [0.8050, 0.8196]" (a 95% interval), the mean alone for one seed, "-" when missing."""
    if metric not in row:
        return "-"
    low, high = row.get(f"{metric}_low", math.nan), row.get(f"{metric}_high", math.nan)
    if not (math.isfinite(low) and math.isfinite(high)):
        return f"{row[metric]:.{digits}f}"
    return f"{row[metric]:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def budget_line(cfg: Config, seeds: list[int]) -> str:
    subset = f"first {cfg.data.subset} training images" if cfg.data.subset else "all training images"
    split = (f", {cfg.data.val_fraction:.0%} held out: scores are on the VALIDATION split"
             if cfg.data.val_fraction else ", scores on the test split")
    return (f"{cfg.data.name}, {subset}{split}, {cfg.epochs} epochs, batch {cfg.batch_size}, {cfg.model.backbone}, "
            f"precision {cfg.precision}; seeds {', '.join(map(str, seeds))}; each method at its own recipe "
            "(`selfsup-clusters methods`); 95% t-intervals over seeds")


def write_results(rows: list[dict], out: Path, cfg: Config, seeds: list[int], failures: list[str]) -> str:
    """results.csv, results.md and results.png; returns the Markdown table."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    write_csv(out / "results.csv", columns, rows)  # every key is a column
    first = rows[0]["name"] if rows else ""
    lines = [f"| method | linear top-1 | kNN top-1 (k={cfg.eval.knn_k}, T={cfg.eval.knn_t}) | linear - {first} "
             f"(paired) | kNN - {first} (paired) | NMI | run time (s) | of which evaluation (s) | seeds |",
             "|" + "---|" * 9]
    for row in rows:
        lines.append(f"| {row['name']} | {interval_text(row, 'linear_top1')} | {interval_text(row, 'knn_top1')} | "
                     f"{interval_text(row, 'linear_top1_diff')} | {interval_text(row, 'knn_top1_diff')} | "
                     f"{interval_text(row, 'nmi', 3)} | {interval_text(row, 'train_time_s', 0)} | "
                     f"{interval_text(row, 'eval_time_s', 0)} | {row['seeds']} |")
    notes = [budget_line(cfg, seeds)] + [f"FAILED: {failure}" for failure in failures]
    table = "\n".join(lines)
    (out / "results.md").write_text(table + "\n\n" + "\n".join(notes) + "\n")
    plot(rows, out / "results.png")
    return table + "\n" + "\n".join(notes)


def plot(rows: list[dict], path: Path, reference: dict | None = None) -> None:
    """Linear and kNN top-1 per row with their intervals; `reference` (the raw-pixel row): its two levels drawn
    across, so a bar below its line learned less than the pixels hold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [row["name"] for row in rows]
    x = range(len(rows))
    width = 0.38
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(rows)), 4))
    for offset, metric, label in ((-width / 2, "linear_top1", "linear"), (width / 2, "knn_top1", "kNN")):
        means = [row.get(metric, 0.0) for row in rows]
        errors = [[m - row.get(f"{metric}_low", m) if math.isfinite(row.get(f"{metric}_low", m)) else 0.0
                   for m, row in zip(means, rows, strict=True)],
                  [row.get(f"{metric}_high", m) - m if math.isfinite(row.get(f"{metric}_high", m)) else 0.0
                   for m, row in zip(means, rows, strict=True)]]
        bars = ax.bar([i + offset for i in x], means, width, yerr=errors, capsize=3, label=label)
        if reference is not None and metric in reference:
            ax.axhline(reference[metric], color=bars.patches[0].get_facecolor(), linestyle="--", linewidth=1,
                       label=f"{label}: raw pixels")
    values = [row[m] for row in rows + [reference or {}] for m in ("linear_top1", "knn_top1") if m in row]
    ax.set_ylim(max(0.0, min(values, default=0.0) - 0.1), 1.0)
    ax.set_xticks(list(x), names, rotation=20, ha="right")
    ax.set_ylabel("top-1 accuracy (95% interval)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def compare(user: UserConfig, methods: list[str], clusters_for: dict[str, list[str]], seeds: list[int],
            out: Path) -> tuple[str, list[str]]:
    """Train every row and seed (skipping finished runs), write the results; the table and the failures."""
    base = user.load()
    entries = plan(methods, clusters_for, base.clusters.spec)
    out.mkdir(parents=True, exist_ok=True)
    results, failures = train_entries(user, entries, seeds, out)
    rows = [summarise(result, results[0]) for result in results] + raw_pixel_rows(base, out)
    return write_results(rows, out, base, seeds, failures), failures
