"""Verdicts as curves over the budget: each claim's paired difference, each run's margin to raw pixels and C4's
rank correlations at every point of `eval.at` along training (kNN and the linear probe land in metrics.jsonl
there), against samples seen. Pure bookkeeping over finished runs: nothing here trains.

A point of the curve is read from the intermediate evaluation of the one long run, whose cosine schedule has not
yet reached its end there; `claims` checks this shortcut once against a run trained to that budget with its own
full schedule.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from selfsup_clusters.evaluation.intervals import (
    INCONCLUSIVE,
    Interval,
    SeedRule,
    paired_difference,
    t_interval,
    verdict,
)
from selfsup_clusters.evaluation.protocols import DECIDING, FAMILY, robustness

CURVE_COLUMNS = ("claim", "comparison", "metric", "samples_seen", "value", "low", "high", "n", "verdict",
                 "robustness")
# {seed: {samples seen: {"linear_top1": ..., "knn_top1": ..., "epoch": ...}}}
SeedCurves = dict[int, dict[int, dict]]


@dataclass(frozen=True)
class CurvePoint:
    """One claim's (or run's) number at one budget: `interval` is a paired difference, a margin or a correlation;
    `verdict` its reading against the expected sign."""

    claim: str
    comparison: str
    metric: str
    samples: int
    interval: Interval
    verdict: str
    robustness: str = ""  # how the deciding protocol's verdict at this budget holds across the family

    def row(self) -> dict:
        values = (self.claim, self.comparison, self.metric, self.samples, self.interval.mean, self.interval.low,
                  self.interval.high, self.interval.n, self.verdict, self.robustness)
        return dict(zip(CURVE_COLUMNS, values, strict=True))


def run_curve(run_dir: Path) -> dict[int, dict]:
    """{samples seen: the epoch's record} for every epoch of a run whose record has the linear probe (the points
    of `eval.at` and the last epoch), read from its metrics.jsonl; {} when the run has none."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {row["samples_seen"]: row for row in rows if "linear_top1" in row and "samples_seen" in row}


def budgets(*curves: SeedCurves) -> list[int]:
    """The budgets (samples seen) that every given seed of every curve has, in increasing order."""
    common = [set(points) for curve in curves for points in curve.values()]
    return sorted(set.intersection(*common)) if common else []


def at_budget(curve: SeedCurves, samples: int, metric: str) -> dict[int, float]:
    """{seed: metric} at one budget (seeds whose record there has it: runs scored before a protocol existed lack
    it)."""
    return {seed: points[samples][metric] for seed, points in curve.items()
            if samples in points and metric in points[samples]}


def difference_curve(claim: str, comparison: str, better: SeedCurves, worse: SeedCurves, metric: str,
                     sign: int = +1, rule: SeedRule | None = None) -> list[CurvePoint]:
    """The paired difference better - worse (same seeds) at each common budget, with its verdict: at `rule`'s
    level and margin (seeds until decided: its repeated intervals), else a plain 95% interval and no margin."""
    points = []
    for samples in budgets(better, worse):
        a, b = at_budget(better, samples, metric), at_budget(worse, samples, metric)
        if not set(a) & set(b):
            continue
        diff, said = rule.read(a, b, sign) if rule else (paired_difference(a, b), None)
        points.append(CurvePoint(claim, comparison, metric, samples, diff, said or verdict(diff, sign)))
    return points


def margin_curve(name: str, curve: SeedCurves, reference: float, metric: str) -> list[CurvePoint]:
    """A run's mean minus a fixed reference (raw pixels) at each budget, with the t-interval over seeds."""
    points = []
    for samples in budgets(curve):
        values = list(at_budget(curve, samples, metric).values())
        if not values:
            continue
        margin = t_interval(values).shifted(-reference)
        points.append(CurvePoint("raw pixels", f"{name} - raw pixels", metric, samples, margin, verdict(margin, +1)))
    return points


def correlation_curve(sets: dict[str, SeedCurves], statistics: dict[str, dict], metric: str,
                      correlate: Callable[[list[dict], str], dict[str, Interval]],
                      signs: dict[str, int]) -> list[CurvePoint]:
    """C4 at each budget every cluster set reached: `correlate(rows, metric)` over the sets' seed means."""
    points = []
    for samples in budgets(*sets.values()):
        means = {spec: list(at_budget(curve, samples, metric).values()) for spec, curve in sets.items()}
        if not all(means.values()):
            continue
        rows = [{**statistics[spec], metric: float(sum(values) / len(values))} for spec, values in means.items()]
        for name, rho in correlate(rows, metric).items():
            sign = signs[name.split(" given ")[0]]
            points.append(CurvePoint("C4", f"Spearman {name}", metric, samples, rho, verdict(rho, sign)))
    return points


def mark_robustness(points: list[CurvePoint]) -> list[CurvePoint]:
    """The points, each of the deciding protocol's with how its verdict holds across the family's points of the
    same comparison at the same budget (protocols.robustness)."""
    protocol_of = {protocol.metric: protocol.name for protocol in FAMILY.values()}
    said: dict[tuple, dict[str, str]] = {}
    for p in points:
        if p.metric in protocol_of:
            said.setdefault((p.claim, p.comparison, p.samples), {})[protocol_of[p.metric]] = p.verdict
    return [replace(p, robustness=robustness(said[(p.claim, p.comparison, p.samples)]))
            if protocol_of.get(p.metric) == DECIDING else p for p in points]


def crossing(points: list[CurvePoint]) -> float | None:
    """Where a margin curve's trend reaches 0: the least-squares line of the mean over log(samples seen), solved
    for 0 (an extrapolation, not a measurement); None when the last point is already at or above 0, the trend does
    not rise, or fewer than 3 budgets were measured."""
    ordered = sorted(points, key=lambda p: p.samples)
    if len(ordered) < 3 or ordered[-1].interval.mean >= 0:
        return None
    x = np.log([p.samples for p in ordered])
    slope, intercept = np.polyfit(x, [p.interval.mean for p in ordered], 1)
    return float(np.exp(-intercept / slope)) if slope > 0 else None


def settles(points: list[CurvePoint]) -> str:
    """In words, from which budget on a curve's verdict stays what it is at the last budget."""
    if not points:
        return "not measured"
    ordered = sorted(points, key=lambda p: p.samples)
    final = ordered[-1].verdict
    start = len(ordered) - 1
    while start > 0 and ordered[start - 1].verdict == final:
        start -= 1
    if final == INCONCLUSIVE:
        return "inconclusive at every budget" if start == 0 else "not settled: inconclusive at the last budget"
    if start == 0:
        return f"{final} from the first budget ({ordered[0].samples:,} samples) on"
    return f"{final} from {ordered[start].samples:,} samples seen on (before: {ordered[start - 1].verdict})"


def plot_curve(panels: dict[str, list[CurvePoint]], path: Path, titles: dict[str, str],
               metric: str = "linear_top1") -> None:
    """One panel per claim (`titles`: panel -> its title and y label, "title|ylabel"): each comparison's value
    and 95% interval against samples seen (log scale), 0 marked; only `metric`'s points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.6 * rows), squeeze=False)
    for ax, (title, points) in zip(axes.flat, panels.items(), strict=False):
        for comparison in dict.fromkeys(p.comparison for p in points if p.metric == metric):
            line = sorted((p for p in points if p.comparison == comparison and p.metric == metric),
                          key=lambda p: p.samples)
            x = [p.samples for p in line]
            ax.plot(x, [p.interval.mean for p in line], marker="o", label=comparison)
            low = [p.interval.low if math.isfinite(p.interval.low) else p.interval.mean for p in line]
            high = [p.interval.high if math.isfinite(p.interval.high) else p.interval.mean for p in line]
            ax.fill_between(x, low, high, alpha=0.15)
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_xscale("log")
        heading, _, ylabel = titles.get(title, title).partition("|")
        ax.set_title(heading, fontsize=9)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.set_xlabel("samples seen per run")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
