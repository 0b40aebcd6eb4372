"""`selfsup-clusters tune`: choose a method's hyperparameters on a validation split, never on the test set.

Every point of the grid (the product of the `--grid key=v1,v2` lists) trains on the training set minus a held-out
validation split (`data.val_fraction`, 0.1 unless the config sets one) and is scored there: linear top-1 first (the
paper's metric), kNN second, mean and 95% interval over seeds. The test split is never read.

DIR/<method>[_<clusters>]_<key=value>.../seed<S>/   each run
DIR/tune.csv, tune.md                               one row per grid point, best first
DIR/best.yaml                                       the best point's config, to train with `--config`

Re-running the same command skips finished points.
"""

from __future__ import annotations

import itertools
from pathlib import Path

from selfsup_clusters.config import split_values, to_yaml
from selfsup_clusters.core.errors import UserError
from selfsup_clusters.methods.registry import method_class
from selfsup_clusters.recipes import UserConfig
from selfsup_clusters.studies.report import budget_line, cell, linear_cell, seeds_cell
from selfsup_clusters.studies.suite import Entry, Result, Summary, summarise, train_entries
from selfsup_clusters.studies.tables import markdown_table, write_csv

DEFAULT_VAL_FRACTION = 0.1


def parse_grid(items: list[str]) -> dict[str, list[str]]:
    """["optim.lr=0.1,0.3", "augment.crop_scale=[0.2,1.0],[0.08,1.0]"] -> {key: [values]}; commas inside brackets
    belong to one value."""
    grid: dict[str, list[str]] = {}
    for item in items:
        key, equals, values = item.partition("=")
        parts = split_values(values)
        if not equals or not key.strip() or not parts:
            raise UserError(f"--grid {item!r}: expected key=v1,v2,... (e.g. --grid optim.lr=0.1,0.3)")
        if key.strip() in grid:
            raise UserError(f"--grid names {key.strip()} twice; give all its values in one --grid")
        grid[key.strip()] = parts
    if not grid:
        raise UserError("tune needs at least one --grid key=v1,v2")
    return grid


def grid_entries(method: str, clusters: str, grid: dict[str, list[str]]) -> list[Entry]:
    return [Entry(method, clusters, tuple(f"{key}={value}" for key, value in zip(grid, values, strict=True)))
            for values in itertools.product(*grid.values())]


def rank(results: list[Result]) -> list[tuple[Summary, dict[str, str], Result]]:
    """(summary, the point's settings, result) per grid point, best first: linear top-1 decides, kNN breaks ties,
    a point without the score last."""

    def score(ranked: tuple[Summary, dict[str, str], Result]) -> tuple[float, float]:
        means = [ranked[0].mean(metric) for metric in ("linear_top1", "knn_top1")]
        return tuple(-1.0 if mean is None else mean for mean in means)

    return sorted(((summarise(result), dict(item.split("=", 1) for item in result.entry.overrides), result)
                   for result in results), key=score, reverse=True)


def tune(user: UserConfig, method: str, grid: dict[str, list[str]], seeds: list[int], out: Path
         ) -> tuple[str, list[str]]:
    """Train and score every grid point on the validation split; write tune.csv, tune.md and best.yaml."""
    kind = method_class(method)
    base = user.load(f"method={method}")
    clusters = base.clusters.spec
    if kind.needs_cluster_spec and clusters == "none":
        raise UserError(f"{method} learns from clusters; pass --clusters (e.g. wordnet:8, kmeans:100)")
    if not kind.needs_cluster_spec:
        clusters = "none"
    if base.data.val_fraction == 0:
        user = UserConfig(user.path, (*user.overrides, f"data.val_fraction={DEFAULT_VAL_FRACTION}"))
    entries = grid_entries(method, clusters, grid)
    for entry in entries:  # a bad key or value fails here, before any training
        user.load(f"method={method}", *entry.overrides)
    out.mkdir(parents=True, exist_ok=True)
    results, failures = train_entries(user, entries, seeds, out, "tune")
    ranked = rank(results)
    columns = ["point", *grid, "linear_top1", "linear_top1_low", "linear_top1_high", "linear_l2", "knn_top1",
               "knn_top1_low", "knn_top1_high", "seeds"]
    write_csv(out / "tune.csv", columns,
              [{**row.row(), **point, "point": " ".join(result.entry.overrides)} for row, point, result in ranked])
    scored = user.load(f"method={method}")
    lines = [markdown_table([*grid, "linear top-1 (validation)", "kNN top-1 (validation)", "seeds"],
                            [[*(point[key] for key in grid), linear_cell(row), cell(row.get("knn_top1")),
                              seeds_cell(row)] for row, point, _ in ranked])]
    notes = [f"{method}{'' if clusters == 'none' else ' ' + clusters}: " + budget_line(scored, seeds)]
    notes += [f"FAILED: {failure}" for failure in failures]
    if ranked and ranked[0][2].finals:  # a point whose every run diverged is never the best
        best = " ".join(ranked[0][2].entry.overrides)
        cfg = user.load(f"method={method}", f"clusters.spec={clusters}", *ranked[0][2].entry.overrides,
                        f"data.val_fraction={base.data.val_fraction}")  # train the final model as the user would
        cfg.out, cfg.seed = None, base.seed
        (out / "best.yaml").write_text(f"# selfsup-clusters tune: best of {len(ranked)} points on the validation "
                                       f"split ({best}); train with --config {out / 'best.yaml'}\n"
                                       + to_yaml(cfg))
        notes.append(f"best: {best} -> {out / 'best.yaml'}")
    report = "\n".join(lines + [""] + notes)
    (out / "tune.md").write_text(report + "\n")
    return report, failures
