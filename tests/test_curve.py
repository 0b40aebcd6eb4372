"""The budget curve (curve.py) from made-up per-epoch results, the rank statistics of C4 against hand-computed
values, and intermediate evaluations landing in metrics.jsonl and surviving a resume."""

import json
import math

import numpy as np
import pytest
from scipy import stats

from selfsup_clusters.evaluation.intervals import correlation_interval, partial_spearman, spearman
from selfsup_clusters.studies.curve import crossing, difference_curve, margin_curve, run_curve, settles
from tests.conftest import interrupted_run, metrics

# {seed: {samples seen: record}}: three seeds, three budgets
BETTER = {seed: {n: {"linear_top1": 0.70 + 0.01 * i + 0.002 * seed} for i, n in enumerate((100, 200, 400))}
          for seed in range(3)}
WORSE = {seed: {n: {"linear_top1": 0.70 + 0.002 * seed - (0.0 if i == 0 else 0.005 * i) + [0.001, -0.001, 0][seed]}
                for i, n in enumerate((100, 200, 400))} for seed in range(3)}


def test_difference_curve_pairs_by_seed_at_every_budget():
    points = difference_curve("C1", "a - b", BETTER, WORSE, "linear_top1")
    assert [p.samples for p in points] == [100, 200, 400]
    for p, i in zip(points, range(3), strict=True):
        diffs = [BETTER[s][p.samples]["linear_top1"] - WORSE[s][p.samples]["linear_top1"] for s in range(3)]
        half = stats.t.ppf(0.975, 2) * np.std(diffs, ddof=1) / math.sqrt(3)
        assert p.interval.mean == pytest.approx(np.mean(diffs)) and p.interval.n == 3
        assert p.interval.high - p.interval.low == pytest.approx(2 * half)
        assert p.interval.mean == pytest.approx(0.015 * i)
    assert [p.verdict for p in points] == ["inconclusive", "agrees", "agrees"]
    assert settles(points) == "agrees from 200 samples seen on (before: inconclusive)"


def test_a_budget_one_seed_lacks_is_left_out():
    worse = {seed: dict(points) for seed, points in WORSE.items()}
    del worse[1][400]
    assert [p.samples for p in difference_curve("C1", "a - b", BETTER, worse, "linear_top1")] == [100, 200]


def test_margin_curve_is_the_mean_interval_minus_the_reference():
    points = margin_curve("a", BETTER, 0.71, "linear_top1")
    values = [BETTER[s][400]["linear_top1"] for s in range(3)]
    assert points[-1].interval.mean == pytest.approx(np.mean(values) - 0.71)
    half = stats.t.ppf(0.975, 2) * np.std(values, ddof=1) / math.sqrt(3)
    assert points[-1].interval.low == pytest.approx(np.mean(values) - half - 0.71)
    assert points[0].verdict == "disagrees" and points[-1].verdict == "agrees"


def test_crossing_extrapolates_the_margins_log_linear_trend_to_zero():
    def curve(*means):
        from selfsup_clusters.evaluation.intervals import Interval

        return [type("P", (), {"samples": 1000 * 2**i, "interval": Interval(m, m, m, 3)})()
                for i, m in enumerate(means)]

    # -3, -2, -1 points at 1k, 2k, 4k samples: one point per doubling, so 0 at 8k
    assert crossing(curve(-0.03, -0.02, -0.01)) == pytest.approx(8000)
    assert crossing(curve(-0.03, -0.02, 0.001)) is None  # already above at the last budget
    assert crossing(curve(-0.01, -0.02, -0.03)) is None  # falling: no crossing ahead
    assert crossing(curve(-0.02, -0.01)) is None  # two points are no trend


def test_settles_names_the_budget_from_which_the_verdict_holds():
    def curve(*verdicts):
        return [type("P", (), {"samples": 10 * (i + 1), "verdict": v})() for i, v in enumerate(verdicts)]

    assert settles(curve("agrees", "agrees")) == "agrees from the first budget (10 samples) on"
    assert settles(curve("agrees", "inconclusive")) == "not settled: inconclusive at the last budget"
    assert settles(curve("inconclusive", "inconclusive")) == "inconclusive at every budget"
    assert settles(curve("agrees", "disagrees", "disagrees")) == "disagrees from 20 samples seen on (before: agrees)"
    assert settles([]) == "not measured"


def test_partial_spearman_against_a_hand_computation():
    accuracy = [0.80, 0.77, 0.79, 0.80, 0.81, 0.75, 0.81, 0.80]
    information = [3.3, 0.5, 1.3, 2.0, 3.1, 1.0, 3.3, 3.3]
    entropy = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 2.0]
    ra, ri, rh = (stats.rankdata(v) for v in (accuracy, information, entropy))
    r_ai, r_ah, r_ih = (np.corrcoef(a, b)[0, 1] for a, b in ((ra, ri), (ra, rh), (ri, rh)))
    by_hand = (r_ah - r_ai * r_ih) / math.sqrt((1 - r_ai**2) * (1 - r_ih**2))
    assert partial_spearman(accuracy, entropy, information) == pytest.approx(by_hand)
    assert spearman(accuracy, information) == pytest.approx(stats.spearmanr(accuracy, information).statistic)
    x, y = np.arange(6.0), np.array([1.0, 3.0, 2.0, 5.0, 4.0, 6.0])
    assert math.isnan(partial_spearman(x, y, np.ones(6)))  # a constant control: nothing to partial out


def test_the_fisher_z_interval_holds_its_estimate_where_the_percentile_bootstrap_did_not():
    # C4's kNN column at the old cpu budget: seven sets, six of them tied at H(Z|T) = 0. The percentile bootstrap
    # gave rho +0.61 with the interval [+0.62, +0.92], which excludes its own estimate.
    entropy = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.998]
    knn = [0.7162, 0.6385, 0.6860, 0.6769, 0.7171, 0.6171, 0.7219]
    rho = spearman(entropy, knn)
    assert rho == pytest.approx(0.6124, abs=1e-4)
    draws = np.random.default_rng(0).integers(0, 7, size=(2000, 7))
    x, y = np.asarray(entropy)[draws], np.asarray(knn)[draws]
    varied = (np.ptp(x, axis=1) > 0) & (np.ptp(y, axis=1) > 0)
    boot = [stats.spearmanr(a, b).statistic for a, b in zip(x[varied], y[varied], strict=True)]
    assert np.percentile(boot, 2.5) > rho  # the misbehaviour: the estimate lies below the whole interval
    interval = correlation_interval(rho, 7)
    assert interval.low < rho < interval.high
    half = 1.959964 * math.sqrt((1 + rho**2 / 2) / 4)  # Bonett-Wright: (1 + r^2/2) / (n - 3)
    assert interval.low == pytest.approx(math.tanh(math.atanh(rho) - half), abs=1e-6)
    assert interval.high == pytest.approx(math.tanh(math.atanh(rho) + half), abs=1e-6)
    assert correlation_interval(rho, 7, controlled=1).half_width > interval.half_width  # one df fewer
    assert math.isnan(correlation_interval(rho, 4, controlled=1).low)  # n - 3 - 1 = 0: no interval


def test_intermediate_evaluations_land_in_metrics_and_survive_a_resume(tiny_overrides, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    overrides = [*tiny_overrides, "epochs=3", "eval.at=[1,2]", "eval.every=0", "log.tensorboard=false"]
    interrupted_run(overrides, monkeypatch)  # stops right after epoch 1's checkpoint
    first = metrics(run_dir)
    assert [row["epoch"] for row in first] == [0] and "linear_top1" in first[0] and "knn_top1" in first[0]
    from selfsup_clusters.training.trainer import resume

    final = resume(run_dir)
    rows = metrics(run_dir)
    assert rows[0] == first[0]  # epoch 1's evaluation is kept, not recomputed
    assert [("linear_top1" in row) for row in rows] == [True, True, True]
    curve = run_curve(run_dir)
    assert sorted(curve) == [row["samples_seen"] for row in rows] == [64 * 4 * e for e in (1, 2, 3)]
    assert curve[max(curve)]["linear_top1"] == final["linear_top1"]
    assert json.loads((run_dir / "final.json").read_text())["samples_seen"] == 64 * 4 * 3


def test_eval_at_beyond_the_run_is_refused():
    from selfsup_clusters.core.errors import UserError
    from selfsup_clusters.recipes import load_config

    with pytest.raises(UserError, match=r"eval.at=\[3\] names an epoch outside 1..2"):
        load_config(overrides=["epochs=2", "eval.at=[3]"])
