"""Honest comparisons over seeds: intervals, paired differences and verdicts (pure statistics, no torch).

A number from several seeds is reported as its mean with a Student-t interval; a claim that A beats B is
the interval of the *paired* per-seed differences (same seed = same data order and initialisation, so the
seed-to-seed noise both share cancels), and the verdict on it may be "inconclusive". A rank correlation
over a handful of points gets a Fisher-z interval (Bonett-Wright variance), valid for 7-10 points with ties.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

AGREES, DISAGREES, INCONCLUSIVE = "agrees", "disagrees", "inconclusive"


@dataclass(frozen=True)
class Interval:
    """A mean over `n` values with a two-sided confidence interval [low, high].

    With n == 1 the interval is (-inf, +inf): one seed says nothing about the spread."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def half_width(self) -> float:
        """(high - low) / 2; +inf for a single value."""
        return (self.high - self.low) / 2

    def contains(self, x: float) -> bool:
        """True when low <= x <= high (ends included)."""
        return self.low <= x <= self.high

    def shifted(self, by: float) -> Interval:
        """The same interval moved by `by` (a margin to a fixed reference: `shifted(-reference)`)."""
        return Interval(self.mean + by, self.low + by, self.high + by, self.n)

    def __format__(self, spec: str) -> str:
        """The one way an interval is written (reports, tables, docs): "0.8123 [0.8050, 0.8196]", the mean and both
        ends in the number format `spec` (".4f" when empty; "+.4f" for a difference, ".2f" for a correlation, ".0f"
        for seconds). One value (one seed) is its mean alone, "0.8123", like any single measurement: the table's
        seeds column and its caption say there is no interval (report.budget_line). Without finite ends over
        several values (a correlation over too few points) it says so: "0.8123 (no interval)"."""
        spec = spec or ".4f"
        mean = format(self.mean, spec)
        if math.isfinite(self.low) and math.isfinite(self.high):
            return f"{mean} [{format(self.low, spec)}, {format(self.high, spec)}]"
        return mean if self.n == 1 else f"{mean} (no interval)"

    def __str__(self) -> str:
        return format(self, "")


def t_interval(values: Sequence[float] | np.ndarray, confidence: float = 0.95) -> Interval:
    """Student-t interval for the mean of `values` (one number per seed).

    Inputs: `values`, n finite numbers; `confidence` in (0, 1).
    Output: Interval(mean, mean - h, mean + h, n) with h = t_{(1+c)/2, n-1} * s / sqrt(n) and s the sample
    standard deviation (ddof=1). For n == 1 the spread is unknown, so low = -inf and high = +inf (any verdict
    on it is "inconclusive"). Raises ValueError for n == 0, non-finite values or a confidence outside (0, 1).
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError("t_interval needs at least one value (got none)")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"t_interval got non-finite values {x.tolist()}; drop or rerun the failed seeds first")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    mean = float(x.mean())
    if x.size == 1:
        return Interval(mean, -math.inf, math.inf, 1)
    half = float(stats.t.ppf((1 + confidence) / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return Interval(mean, mean - half, mean + half, int(x.size))


def paired_difference(a: Mapping[int, float], b: Mapping[int, float], confidence: float = 0.95) -> Interval:
    """Interval of the per-seed differences a[s] - b[s].

    Inputs: `a`, `b`: {seed: metric} for two methods; pairs are made by seed key, never by position; seeds
    present in only one of them are left out. Output: t_interval of the differences over the common seeds,
    in increasing seed order. Raises ValueError, naming the seeds of each side, when no seed is common.
    """
    common = sorted(set(a) & set(b))
    if not common:
        raise ValueError(
            f"no seed in common to pair: the first has seeds {sorted(a)}, the second {sorted(b)}; "
            "run both with the same seeds"
        )
    return t_interval([a[seed] - b[seed] for seed in common], confidence)


def verdict(difference: Interval, expected_sign: int) -> str:
    """Does a difference interval agree with an expected direction?

    Inputs: `difference`, e.g. from paired_difference; `expected_sign`, +1 (expected above 0) or -1 (below).
    Output: "agrees" when the whole interval lies strictly on the expected side of 0, "disagrees" when it lies
    strictly on the other side, "inconclusive" when it contains 0, has an undefined (nan) bound or rests on fewer
    than two values.
    """
    if expected_sign not in (1, -1):
        raise ValueError(f"expected_sign must be +1 or -1, got {expected_sign}")
    if difference.n < 2 or math.isnan(difference.low) or math.isnan(difference.high) or difference.contains(0.0):
        return INCONCLUSIVE
    above = difference.low > 0
    return AGREES if above == (expected_sign > 0) else DISAGREES


def correlation_interval(r: float, n: int, controlled: int = 0, confidence: float = 0.95) -> Interval:
    """Fisher-z interval of a Spearman (partial) rank correlation `r` over `n` points, with Bonett and Wright's
    (2000) variance (1 + r^2 / 2) / (n - 3 - controlled) for Spearman's rho (`controlled`: variables partialled
    out). Valid for a handful of points with ties, where a percentile bootstrap is not: it always contains its
    own estimate, and its width follows n. `Interval.n` is the number of points; a nan r, or n - 3 - controlled
    < 1, gives an interval of nan bounds (inconclusive).
    """
    df = n - 3 - controlled
    if not math.isfinite(r) or df < 1:
        return Interval(r, math.nan, math.nan, n)
    z = math.atanh(min(max(r, -0.999999), 0.999999))  # |r| = 1 (a perfect rank order) stays finite
    half = float(stats.norm.ppf((1 + confidence) / 2)) * math.sqrt((1 + r * r / 2) / df)
    return Interval(r, math.tanh(z - half), math.tanh(z + half), n)


def partial_spearman(x: Sequence[float], y: Sequence[float], control: Sequence[float]) -> float:
    """Spearman's rank correlation of `x` and `y` with `control` partialled out: the Pearson partial correlation
    of the tie-averaged ranks, (r_xy - r_xc r_yc) / sqrt((1 - r_xc^2)(1 - r_yc^2)); nan when any of the three is
    constant or x or y is a rank function of `control` alone."""
    ranks = [stats.rankdata(np.asarray(v, dtype=np.float64)) for v in (x, y, control)]
    if len({len(r) for r in ranks}) != 1:
        raise ValueError(f"partial_spearman needs paired values: got lengths {[len(r) for r in ranks]}")
    if any(np.ptp(r) == 0 for r in ranks):
        return math.nan
    r = np.corrcoef(ranks)
    r_xy, r_xc, r_yc = r[0, 1], r[0, 2], r[1, 2]
    denominator = (1 - r_xc**2) * (1 - r_yc**2)
    return float((r_xy - r_xc * r_yc) / math.sqrt(denominator)) if denominator > 1e-12 else math.nan


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (ties averaged); nan for fewer than 3 points or a constant side."""
    xs, ys = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if xs.size != ys.size:
        raise ValueError(f"spearman needs paired values: got {xs.size} x and {ys.size} y")
    if xs.size < 3 or np.ptp(xs) == 0 or np.ptp(ys) == 0:
        return math.nan
    return float(stats.spearmanr(xs, ys).statistic)
