"""The comparison suite's reports: DIR/results.csv, results.md and results.png from the suite's summaries
(suite.Summary), and what the other reports share with them: a summary's table cells, the budget line, the bar
figure of linear and kNN top-1 (claims' C1-C3 figures).

Intervals are written one way (intervals.Interval.__format__), tables by tables.markdown_table, CSV files by
tables.write_csv (which writes an interval as its mean, _low and _high columns).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from selfsup_clusters.evaluation.intervals import AGREES, DISAGREES, Interval, SeedRule, verdict
from selfsup_clusters.evaluation.protocols import FAMILY, robustness
from selfsup_clusters.studies.tables import markdown_table, write_csv

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from selfsup_clusters.config import Config
    from selfsup_clusters.studies.suite import Summary

SINGLE_SEED = "one seed: no interval"


def cell(value: Interval | float | None, spec: str = ".4f") -> str:
    """A table cell: an interval in its one format, a single value (a reference's) alone, "-" when missing."""
    return "-" if value is None else format(value, spec)


def budget_line(cfg: Config, seeds: list[int], rule: SeedRule | None = None) -> str:
    subset = f"first {cfg.data.subset} training images" if cfg.data.subset else "all training images"
    split = (f", {cfg.data.val_fraction:.0%} held out: scores are on the VALIDATION split"
             if cfg.data.val_fraction else ", scores on the test split")
    sequential = (f"; {rule.describe()}: paired differences and verdicts use those intervals"
                  if rule is not None and rule.sequential else "")
    return (f"{cfg.data.name}, {subset}{split}, {cfg.epochs} epochs, batch {cfg.batch_size}, {cfg.model.backbone}, "
            f"precision {cfg.precision}; seeds {', '.join(map(str, seeds))}; each method at its own recipe "
            "(`selfsup-clusters methods`); 95% t-intervals over seeds" + ("" if len(seeds) > 1 else
                                                                          " (one seed: no intervals)") + sequential
            + "; " + protocol_line(cfg))


def protocol_line(cfg: Config) -> str:
    """The evaluation protocol a verdict is read under, and the family it is checked against."""
    grid = ", ".join(f"{value:g}" for value in sorted(cfg.eval.probe_l2))
    others = ", ".join(FAMILY[name].label for name in cfg.eval.protocols if name in FAMILY)
    return (f"linear probe with its L2 penalty chosen per representation from {{{grid}}} on a split of its own "
            f"training features (never the test set); each verdict checked against {others or 'nothing else'} "
            f"(fixed L2 {cfg.eval.probe_fixed_l2:g}, kNN T={cfg.eval.knn_t:g})")


COMPARED = {AGREES: "higher", DISAGREES: "lower"}  # compare's words for a row's verdict against the first row


def results_table(rows: list[Summary], cfg: Config) -> str:
    """results.md's table: per row linear top-1 (the penalty chosen per representation, each seed's) and kNN top-1,
    the paired differences to the first row with the linear one's verdict (higher, lower, equivalent within
    claims.margin, inconclusive) and how it holds across the protocol family, NMI and times. results.csv has every
    protocol's scores and differences."""
    first = rows[0].name if rows else ""
    columns = ["method", "linear top-1", "probe L2 chosen", f"kNN top-1 (k={cfg.eval.knn_k}, T={cfg.eval.knn_t})",
               f"linear - {first} (paired)", f"vs {first} (linear)", "across the protocols",
               f"kNN - {first} (paired)", "NMI", "run time (s)", "of which evaluation (s)", "seeds"]
    return markdown_table(columns, [
        [row.name, linear_cell(row), row.penalties or cell(row.values.get("linear_l2"), "g"),
         cell(row.get("knn_top1")), cell(row.differences.get("linear_top1"), "+.4f"),
         compared(row, cfg.claims.margin), robust_cell(row, cfg.claims.margin),
         cell(row.differences.get("knn_top1"), "+.4f"), cell(row.get("nmi"), ".3f"),
         cell(row.get("train_time_s"), ".0f"), cell(row.get("eval_time_s"), ".0f"), seeds_cell(row)]
        for row in rows])


def linear_cell(row: Summary) -> str:
    """Linear top-1, or "diverged" for a row none of whose runs finished because they diverged."""
    return "diverged" if row.diverged and not row.seeds else cell(row.get("linear_top1"))


def seeds_cell(row: Summary) -> str:
    """The seeds a row's numbers rest on, and those whose run diverged (left out of every interval)."""
    return f"{row.seeds}" + (f" (diverged: seed {', '.join(map(str, row.diverged))})" if row.diverged else "")


def family_verdicts(differences: dict[str, Interval], margin: float, sign: int = +1) -> dict[str, str]:
    """Each protocol's verdict on its paired difference (those the runs were scored with)."""
    return {protocol.name: verdict(differences[protocol.metric], sign, margin) for protocol in FAMILY.values()
            if protocol.metric in differences}


def compared(row: Summary, margin: float) -> str:
    difference = row.differences.get("linear_top1")
    if difference is None:
        return "-"
    said = verdict(difference, +1, margin)
    return COMPARED.get(said, said)


def robust_cell(row: Summary, margin: float) -> str:
    """Whether the row's verdict against the first row holds across the protocol family (protocols.robustness)."""
    said = family_verdicts(row.differences, margin)
    return robustness(said, COMPARED) if "linear" in said else "-"


def write_results(rows: list[Summary], out: Path, cfg: Config, seeds: list[int], failures: list[str],
                  rule: SeedRule | None = None) -> str:
    """results.csv (every field a column), results.md and results.png; returns the Markdown table and its notes."""
    write_csv(out / "results.csv", None, [row.row() for row in rows])
    notes = [budget_line(cfg, seeds, rule)] + [f"FAILED: {failure}" for failure in failures]
    table = results_table(rows, cfg)
    (out / "results.md").write_text(table + "\n\n" + "\n".join(notes) + "\n")
    plot(rows, out / "results.png")
    return table + "\n" + "\n".join(notes)


def error_bars(rows: list[Summary], metric: str) -> tuple[list[int], list[float], list[float]]:
    """The rows whose `metric` has a finite interval: their positions and the lengths of their bars below and above
    the mean. A single seed's interval is unbounded and a reference has none: they get no error bar (a bar of width
    zero would read as certainty)."""
    found = [(i, value) for i, row in enumerate(rows) for value in [row.get(metric)]
             if isinstance(value, Interval) and math.isfinite(value.low) and math.isfinite(value.high)]
    return ([i for i, _ in found], [v.mean - v.low for _, v in found], [v.high - v.mean for _, v in found])


def single_seed_note(rows: list[Summary]) -> str:
    """The figure's note on the rows drawn without an interval because they rest on one seed ("" when none)."""
    single = [row.name for row in rows if any(isinstance(value, Interval) and value.n == 1
                                              for value in (row.get("linear_top1"), row.get("knn_top1")))]
    seeded = [row for row in rows if row.intervals]
    if not single:
        return ""
    return SINGLE_SEED if len(single) == len(seeded) else f"{SINGLE_SEED}: {', '.join(single)}"


def bar_figure(rows: list[Summary], reference: dict | None = None) -> Figure:
    """Linear and kNN top-1 per row, each with its 95% interval as an error bar where it has one (`error_bars`);
    rows on one seed are named in the title (`single_seed_note`). `reference` (the raw-pixel row): its two levels
    drawn across, so a bar below its line learned less than the pixels hold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    width = 0.38
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(rows)), 4))
    for offset, metric, label in ((-width / 2, "linear_top1", "linear"), (width / 2, "knn_top1", "kNN")):
        means = [row.mean(metric) or 0.0 for row in rows]
        bars = ax.bar([i + offset for i in range(len(rows))], means, width, label=label)
        positions, below, above = error_bars(rows, metric)
        if positions:
            ax.errorbar([i + offset for i in positions], [means[i] for i in positions], yerr=[below, above],
                        fmt="none", ecolor="black", capsize=3)
        if reference is not None and metric in reference:
            ax.axhline(reference[metric], color=bars.patches[0].get_facecolor(), linestyle="--", linewidth=1,
                       label=f"{label}: raw pixels")
    values = [value for row in rows for m in ("linear_top1", "knn_top1") for value in [row.mean(m)]
              if value is not None] + [reference[m] for m in ("linear_top1", "knn_top1") if m in (reference or {})]
    ax.set_ylim(max(0.0, min(values, default=0.0) - 0.1), 1.0)
    ax.set_xticks(list(range(len(rows))), [row.name for row in rows], rotation=20, ha="right")
    ax.set_ylabel("top-1 accuracy (95% interval)")
    ax.set_title(single_seed_note(rows), fontsize=9)
    ax.legend()
    fig.tight_layout()
    return fig


def plot(rows: list[Summary], path: Path, reference: dict | None = None) -> None:
    """`bar_figure` written to `path`."""
    import matplotlib.pyplot as plt

    fig = bar_figure(rows, reference)
    fig.savefig(path, dpi=120)
    plt.close(fig)
