"""Honest comparisons over seeds: intervals, paired differences and verdicts (pure statistics, no torch).

A number from several seeds is reported as its mean with a Student-t interval; a claim that A beats B is
the interval of the *paired* per-seed differences (same seed = same data order and initialisation, so the
seed-to-seed noise both share cancels), and the verdict on it may be "inconclusive". A rank correlation
over a handful of points gets a bootstrap interval for the same reason.
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

    def __str__(self) -> str:
        if self.n == 1:
            return f"{self.mean:.4f} (1 seed)"
        return f"{self.mean:.4f} ± {self.half_width:.4f}"


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


def spearman_interval(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Spearman rank correlation of paired points with a percentile bootstrap interval.

    Inputs: `x`, `y`: n paired values; `resamples` bootstrap draws from numpy's default_rng(`seed`), each
    `rng.integers(0, n, size=n)` indices, i.e. n pairs drawn with replacement. Draws in which x or y is
    constant have no rank correlation and are skipped.
    Output: (rho, low, high): rho from scipy.stats.spearmanr on all points; low, high the (1-c)/2 and (1+c)/2
    percentiles of the bootstrap rhos. All three are nan for fewer than 3 points or a constant x or y;
    low and high are nan when every draw was skipped.
    """
    xs, ys = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    if xs.size != ys.size:
        raise ValueError(f"spearman_interval needs paired values: got {xs.size} x and {ys.size} y")
    if xs.size < 3 or np.ptp(xs) == 0 or np.ptp(ys) == 0:
        return math.nan, math.nan, math.nan
    rho = float(stats.spearmanr(xs, ys).statistic)
    draws = np.random.default_rng(seed).integers(0, xs.size, size=(resamples, xs.size))
    bx, by = xs[draws], ys[draws]
    varied = (np.ptp(bx, axis=1) > 0) & (np.ptp(by, axis=1) > 0)
    if not varied.any():
        return rho, math.nan, math.nan
    # Spearman's rho is Pearson's r of the (tie-averaged) ranks; ranking all draws at once is ~100x faster
    # than calling spearmanr once per draw.
    rx, ry = stats.rankdata(bx[varied], axis=1), stats.rankdata(by[varied], axis=1)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    rhos = (rx * ry).sum(axis=1) / np.sqrt((rx**2).sum(axis=1) * (ry**2).sum(axis=1))
    low, high = np.percentile(rhos, [100 * (1 - confidence) / 2, 100 * (1 + confidence) / 2])
    return rho, float(low), float(high)
