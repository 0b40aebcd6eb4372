"""Intervals over seeds, paired differences and verdicts, against hand arithmetic (rank correlations: test_curve.py)."""

from __future__ import annotations

import math

import pytest

from selfsup_clusters.evaluation.intervals import Interval, paired_difference, t_interval, verdict

T_975_2 = 4.302652729911275  # Student t quantile 0.975 with 2 degrees of freedom (tables: 4.303)


def test_t_interval_by_hand():
    interval = t_interval([0.80, 0.82, 0.81])
    # mean = (0.80 + 0.82 + 0.81) / 3 = 0.81
    # s^2 = ((-0.01)^2 + 0.01^2 + 0^2) / (3 - 1) = 0.0001, s = 0.01
    # half width = t_{0.975, 2} * s / sqrt(3) = 4.302652729911275 * 0.01 / 1.7320508075688772 = 0.0248414...
    half = T_975_2 * 0.01 / math.sqrt(3)
    assert half == pytest.approx(0.0248414, abs=1e-7)
    assert interval.n == 3
    assert interval.mean == pytest.approx(0.81, abs=1e-12)
    assert interval.half_width == pytest.approx(half, rel=1e-9)
    assert (interval.low, interval.high) == pytest.approx((0.81 - half, 0.81 + half), rel=1e-9)
    assert str(interval) == "0.8100 [0.7852, 0.8348]"  # the one format: tests/test_reports.py
    assert interval.contains(0.81) and interval.contains(0.786) and not interval.contains(0.785)


def test_t_interval_confidence_level():
    # 90%: t_{0.95, 2} = 2.919985580355516 (tables: 2.920), same s = 0.01
    interval = t_interval([0.80, 0.82, 0.81], confidence=0.90)
    assert interval.half_width == pytest.approx(2.919985580355516 * 0.01 / math.sqrt(3), rel=1e-9)


def test_t_interval_one_value_is_unbounded():
    interval = t_interval([0.8123])
    assert interval == Interval(0.8123, -math.inf, math.inf, 1)
    assert interval.half_width == math.inf
    assert str(interval) == "0.8123"
    assert verdict(interval, +1) == "inconclusive"


def test_t_interval_bad_inputs():
    with pytest.raises(ValueError, match="at least one value"):
        t_interval([])
    with pytest.raises(ValueError, match="non-finite"):
        t_interval([0.8, math.nan])
    with pytest.raises(ValueError, match="confidence"):
        t_interval([0.8, 0.9], confidence=95)


def test_paired_difference_pairs_by_seed_not_position():
    a = {0: 0.90, 1: 0.80, 2: 0.70, 7: 0.50}  # seed 7 has no partner: left out
    b = {2: 0.60, 0: 0.85, 1: 0.78}  # other key order on purpose
    # differences by seed: 0.90-0.85 = 0.05, 0.80-0.78 = 0.02, 0.70-0.60 = 0.10; mean 0.17/3
    # deviations 0.05-0.17/3 = -0.00667, 0.02-0.17/3 = -0.03667, 0.10-0.17/3 = 0.04333
    # s^2 = (0.0000444 + 0.0013444 + 0.0018778) / 2 = 0.0016333, s = 0.040415
    interval = paired_difference(a, b)
    assert interval.n == 3
    assert interval.mean == pytest.approx(0.17 / 3, abs=1e-12)
    s = math.sqrt(((0.05 - 0.17 / 3) ** 2 + (0.02 - 0.17 / 3) ** 2 + (0.10 - 0.17 / 3) ** 2) / 2)
    assert s == pytest.approx(0.040415, abs=1e-6)
    assert interval.half_width == pytest.approx(T_975_2 * s / math.sqrt(3), rel=1e-9)
    # pairing by position (0.90-0.60, 0.80-0.85, 0.70-0.78) would give mean 0.1/3 instead
    assert paired_difference(b, a).mean == pytest.approx(-0.17 / 3, abs=1e-12)


def test_paired_difference_without_common_seeds():
    with pytest.raises(ValueError, match=r"no seed in common.*\[0, 1\].*\[2, 3\]"):
        paired_difference({1: 0.5, 0: 0.4}, {3: 0.5, 2: 0.4})


@pytest.mark.parametrize(
    ("low", "high", "sign", "expected"),
    [
        (0.01, 0.03, +1, "agrees"),
        (0.01, 0.03, -1, "disagrees"),
        (-0.03, -0.01, -1, "agrees"),
        (-0.03, -0.01, +1, "disagrees"),
        (-0.01, 0.03, +1, "inconclusive"),
        (-0.01, 0.03, -1, "inconclusive"),
        (0.0, 0.03, +1, "inconclusive"),  # touching 0 is not above 0
        (-0.03, 0.0, -1, "inconclusive"),
    ],
)
def test_verdict(low, high, sign, expected):
    assert verdict(Interval((low + high) / 2, low, high, 5), sign) == expected


def test_verdict_needs_two_seeds_and_a_sign():
    assert verdict(Interval(0.02, 0.01, 0.03, 1), +1) == "inconclusive"
    with pytest.raises(ValueError, match="expected_sign"):
        verdict(Interval(0.02, 0.01, 0.03, 5), 0)
