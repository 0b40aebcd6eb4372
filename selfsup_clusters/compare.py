"""The comparison suite: train several methods (and seeds) with the same shared options, one run folder each
under DIR (so TensorBoard overlays them), and tabulate their final evaluation.

DIR/<method>[_<clusters>]/seed<S>/   each run (final.json once it finished)
DIR/raw_pixels.json                  the reference rows: kNN and linear probe on raw pixels
DIR/results.csv, results.md          one row per method and cluster source: mean and std over seeds
DIR/results.png                      linear and kNN top-1 per row, with error bars

Re-running the same command skips finished runs and resumes interrupted ones.
"""

from __future__ import annotations

import copy
import csv
import json
import statistics
from dataclasses import dataclass
from pathlib import Path

import torch

from selfsup_clusters.config import Config
from selfsup_clusters.errors import Interrupted, UserError, first_line
from selfsup_clusters.evaluate import linear_probe, raw_pixel_features, weighted_knn

METRICS = ("knn_top1", "linear_top1", "nmi", "train_time_s", "images_per_s")


@dataclass
class Entry:
    """One row of the comparison: a method with one cluster source ("none" for methods without clusters)."""

    method: str
    clusters: str = "none"

    @property
    def name(self) -> str:
        return self.method if self.clusters == "none" else f"{self.method} {self.clusters}"

    @property
    def folder(self) -> str:
        if self.clusters == "none":
            return self.method
        return f"{self.method}_{self.clusters.replace(':', '').replace(',', '-')}"


def parse_clusters_for(text: str | None) -> dict[str, list[str]]:
    """"cl-infonce=wordnet:8,pcl=kmeans:25,50,100" -> {"cl-infonce": ["wordnet:8"], "pcl": ["kmeans:25,50,100"]}.

    A comma-separated part without "=" continues the previous spec (k-means lists); "|" separates several
    sources for one method ("cl-infonce=wordnet:7|wordnet:9" gives two rows)."""
    specs: dict[str, str] = {}
    method = None
    for part in (text or "").split(","):
        part = part.strip()
        if "=" in part:
            method, spec = part.split("=", 1)
            method = method.strip()
            specs[method] = spec.strip()
        elif method is not None and part:
            specs[method] += "," + part
        elif part:
            raise UserError(f"--clusters-for {text!r}: expected METHOD=SPEC[,METHOD=SPEC...], "
                            "e.g. cl-infonce=wordnet:8,pcl=kmeans:25,50,100")
    return {m: [s.strip() for s in spec.split("|")] for m, spec in specs.items()}


def plan(methods: list[str], clusters_for: dict[str, list[str]], shared_clusters: str) -> list[Entry]:
    """The rows to run; methods that learn from clusters need a source (theirs, or the shared --clusters)."""
    from selfsup_clusters.trainer import method_class

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
        entries.extend(Entry(method, spec) for spec in specs)
    return entries


def run_one(base: Config, entry: Entry, seed: int, out: Path) -> dict:
    """Train one row's run (resuming an interrupted one); the finished run's final.json."""
    from selfsup_clusters.trainer import train

    run_dir = out / entry.folder / f"seed{seed}"
    final_path = run_dir / "final.json"
    if final_path.exists():
        print(f"[compare] {entry.name} seed {seed}: finished before, skipped ({run_dir})", flush=True)
        return json.loads(final_path.read_text())
    if (run_dir / "checkpoints" / "last.pt").exists():
        print(f"[compare] {entry.name} seed {seed}: resuming {run_dir}", flush=True)
        return train(base, resume=run_dir)
    print(f"[compare] {entry.name} seed {seed}: training into {run_dir}", flush=True)
    cfg = copy.deepcopy(base)
    cfg.method, cfg.clusters.spec, cfg.seed, cfg.out = entry.method, entry.clusters, seed, str(run_dir)
    return train(cfg)


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


def summarise(entry: Entry, finals: list[dict]) -> dict:
    row = {"name": entry.name, "method": entry.method, "clusters": entry.clusters, "seeds": len(finals)}
    for metric in METRICS:
        values = [f[metric] for f in finals if metric in f]
        if values:
            row[metric] = statistics.fmean(values)
            row[f"{metric}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    return row


def write_results(rows: list[dict], out: Path, cfg: Config, failures: list[str]) -> str:
    """results.csv, results.md and results.png; returns the Markdown table."""
    columns = ["name", "method", "clusters", "seeds"]
    for metric in METRICS:
        columns += [metric, f"{metric}_std"]
    with (out / "results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)

    def cell(row: dict, metric: str, digits: int) -> str:
        if metric not in row:
            return "-"
        std = row.get(f"{metric}_std", 0.0)
        text = f"{row[metric]:.{digits}f}"
        return f"{text} ± {std:.{digits}f}" if row["seeds"] > 1 else text

    header = (f"| method | kNN top-1 (k={cfg.eval.knn_k}, T={cfg.eval.knn_t}) | linear top-1 | NMI | "
              "train time (s) | img/s | seeds |")
    lines = [header, "|" + "---|" * 7]
    for row in rows:
        lines.append(f"| {row['name']} | {cell(row, 'knn_top1', 4)} | {cell(row, 'linear_top1', 4)} | "
                     f"{cell(row, 'nmi', 3)} | {cell(row, 'train_time_s', 0)} | {cell(row, 'images_per_s', 0)} | "
                     f"{row['seeds']} |")
    subset = f"first {cfg.data.subset} training images" if cfg.data.subset else "all training images"
    epochs = f"{cfg.epochs} epoch" + ("s" if cfg.epochs > 1 else "")
    notes = [f"{cfg.data.name}, {subset}, {epochs}, batch {cfg.batch_size}, {cfg.model.backbone}."]
    notes += [f"FAILED: {failure}" for failure in failures]
    table = "\n".join(lines)
    (out / "results.md").write_text(table + "\n\n" + "\n".join(notes) + "\n")
    plot(rows, out / "results.png")
    return table + "\n" + "\n".join(notes)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [row["name"] for row in rows]
    x = range(len(rows))
    width = 0.38
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(rows)), 4))
    for offset, metric, label in ((-width / 2, "linear_top1", "linear"), (width / 2, "knn_top1", "kNN")):
        ax.bar([i + offset for i in x], [row.get(metric, 0.0) for row in rows], width,
               yerr=[row.get(f"{metric}_std", 0.0) for row in rows], capsize=3, label=label)
    values = [row[m] for row in rows for m in ("linear_top1", "knn_top1") if m in row]
    ax.set_ylim(max(0.0, min(values, default=0.0) - 0.1), 1.0)
    ax.set_xticks(list(x), names, rotation=20, ha="right")
    ax.set_ylabel("top-1 accuracy")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def train_entries(base: Config, entries: list[Entry], seeds: int, out: Path) -> tuple[list[dict], list[str]]:
    """Train every entry and seed (skipping finished runs); one summary row per entry that finished at least
    once, and one line per failed run. A failure does not stop the others; Ctrl-C does."""
    rows, failures = [], []
    for entry in entries:
        finals = []
        for seed in range(base.seed, base.seed + seeds):
            try:
                finals.append(run_one(base, entry, seed, out))
            except Interrupted:
                raise
            except Exception as e:  # noqa: BLE001 - one failed run must not lose the others' results
                failures.append(f"{entry.name} seed {seed}: {first_line(e)}")
                print(f"[compare] FAILED {failures[-1]}", flush=True)
        if finals:
            rows.append(summarise(entry, finals))
    return rows, failures


def compare(base: Config, methods: list[str], clusters_for: dict[str, list[str]], seeds: int,
            out: Path) -> tuple[str, list[str]]:
    """Train every row and seed (skipping finished runs), write the results; the table and the failures."""
    entries = plan(methods, clusters_for, base.clusters.spec)
    out.mkdir(parents=True, exist_ok=True)
    rows, failures = train_entries(base, entries, seeds, out)
    rows += raw_pixel_rows(base, out)
    return write_results(rows, out, base, failures), failures
