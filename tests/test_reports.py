"""The reports' one interval format, one Markdown table writer and CSV flattening, the suite's summaries, and the
results figure (no error bar for one seed), on hand-made values: fast and offline."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from selfsup_clusters.evaluation.intervals import Interval, t_interval
from selfsup_clusters.studies.report import SINGLE_SEED, bar_figure, cell, results_table
from selfsup_clusters.studies.suite import Entry, Result, Summary, summarise
from selfsup_clusters.studies.tables import markdown_table, write_csv

THREE = Interval(0.81, 0.7851, 0.8349, 3)


def finals(linear: list[float], knn: list[float]) -> dict[int, dict]:
    return {seed: {"linear_top1": a, "knn_top1": b} for seed, (a, b) in enumerate(zip(linear, knn, strict=True))}


def test_an_interval_is_written_one_way():
    assert str(THREE) == "0.8100 [0.7851, 0.8349]" == f"{THREE}" == format(THREE, "")
    assert f"{Interval(0.0123, -0.004, 0.0286, 3):+.4f}" == "+0.0123 [-0.0040, +0.0286]"  # a difference
    assert f"{Interval(0.76, 0.151, 0.949, 10):+.2f}" == "+0.76 [+0.15, +0.95]"  # a correlation
    assert f"{Interval(138.2, 122.6, 153.9, 3):.0f}" == "138 [123, 154]"  # seconds
    assert str(Interval(0.8123, -math.inf, math.inf, 1)) == "0.8123"  # one seed: the mean alone
    assert f"{Interval(0.5, math.nan, math.nan, 4):+.2f}" == "+0.50 (no interval)"  # too few points to correlate
    assert (cell(THREE), cell(0.73), cell(None), cell(THREE, ".2f")) == (
        "0.8100 [0.7851, 0.8349]", "0.7300", "-", "0.81 [0.79, 0.83]")


def test_markdown_table_by_hand():
    table = markdown_table(["run", "linear top-1", "seeds"], [["simclr", THREE, 3], ["raw pixels", "0.7300", 1]])
    assert table == ("| run | linear top-1 | seeds |\n"
                     "|---|---|---|\n"
                     "| simclr | 0.8100 [0.7851, 0.8349] | 3 |\n"
                     "| raw pixels | 0.7300 | 1 |")
    assert markdown_table(["a"], []) == "| a |\n|---|"
    with pytest.raises(ValueError, match="2 cells under 1 columns"):
        markdown_table(["a"], [["x", "y"]])


def test_write_csv_flattens_intervals_into_low_and_high_columns(tmp_path):
    path = tmp_path / "t.csv"
    write_csv(path, None, [{"name": "a", "linear_top1": Interval(0.5, 0.25, 0.75, 3)},
                           {"name": "raw", "linear_top1": 0.7, "seeds": 1}])
    assert path.read_text().splitlines() == ["name,linear_top1,linear_top1_low,linear_top1_high,seeds",
                                             "a,0.5,0.25,0.75,", "raw,0.7,,,1"]
    write_csv(path, ["linear_top1_high", "name"], [{"name": "a", "linear_top1": Interval(0.5, 0.25, 0.75, 3)}])
    assert path.read_text().splitlines() == ["linear_top1_high,name", "0.75,a"]


def test_summarise_gives_intervals_and_paired_differences():
    base = Result(Entry("simclr"), finals([0.80, 0.82, 0.81], [0.70, 0.72, 0.71]))
    other = Result(Entry("cl-infonce", "wordnet:8"), finals([0.83, 0.86, 0.84], [0.71, 0.73, 0.70]))
    first, second = summarise(base, base), summarise(other, base)
    assert first.intervals["linear_top1"] == t_interval([0.80, 0.82, 0.81]) and first.differences == {}
    assert set(second.intervals) == {"linear_top1", "knn_top1"} and second.seeds == 3
    diff = second.differences["linear_top1"]
    assert isinstance(diff, Interval) and diff.n == 3
    assert diff.mean == pytest.approx(0.1 / 3, abs=1e-12)  # per seed: 0.03, 0.04, 0.03
    assert (second.name, second.get("nmi"), second.mean("knn_top1")) == ("cl-infonce wordnet:8", None,
                                                                          pytest.approx(0.7133333, abs=1e-6))
    assert list(second.row()) == ["name", "method", "clusters", "seeds", "linear_top1", "knn_top1",
                                  "linear_top1_diff", "knn_top1_diff"]
    raw = Summary.reference({"name": "raw pixels", "method": "raw pixels", "clusters": "none", "seeds": 1,
                             "knn_top1": 0.74, "linear_top1": 0.73})
    assert (raw.intervals, raw.get("linear_top1"), raw.mean("knn_top1")) == ({}, 0.73, 0.74)


def test_results_table_by_hand():
    base = Result(Entry("simclr"), finals([0.80, 0.82, 0.81], [0.70, 0.72, 0.71]))
    other = Result(Entry("cl-infonce", "wordnet:8"), finals([0.83, 0.86, 0.84], [0.71, 0.73, 0.70]))
    raw = Summary.reference({"name": "raw pixels", "method": "raw pixels", "clusters": "none", "seeds": 1,
                             "knn_top1": 0.74, "linear_top1": 0.73, "linear_l2": 0.01})
    # kNN k=20 per seed -0.05, -0.06, -0.04: [-0.0748, -0.0252], so kNN k=20 decides "lower"
    for seed, (l2, knn20, below) in enumerate([(0.003, 0.70, 0.05), (0.01, 0.71, 0.06), (0.003, 0.69, 0.04)]):
        base.finals[seed].update(linear_l2=l2, knn20_top1=knn20 + below)
        other.finals[seed]["knn20_top1"] = knn20
    cfg = SimpleNamespace(eval=SimpleNamespace(knn_k=20, knn_t=0.1), claims=SimpleNamespace(margin=0.01))
    table = results_table([summarise(base, base), summarise(other, base), raw], cfg)
    # linear - simclr per seed 0.03, 0.04, 0.03: mean 0.03333, s 0.005774, half 4.3027 * s / sqrt(3) = 0.014342;
    # kNN per seed 0.01, 0.01, -0.01: mean 0.00333, s 0.011547, half 0.028685
    assert table.splitlines() == [
        "| method | linear top-1 | probe L2 chosen | kNN top-1 (k=20, T=0.1) | linear - simclr (paired) | "
        "vs simclr (linear) | across the protocols | kNN - simclr (paired) | NMI | run time (s) | "
        "of which evaluation (s) | seeds |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        "| simclr | 0.8100 [0.7852, 0.8348] | 0.003 0.01 0.003 | 0.7100 [0.6852, 0.7348] | - | - | - | - | - | - | "
        "- | 3 |",
        "| cl-infonce wordnet:8 | 0.8433 [0.8054, 0.8813] | - | 0.7133 [0.6754, 0.7513] | +0.0333 [+0.0190, +0.0477] | "
        "higher | protocol-dependent (kNN k=20: lower) | +0.0033 [-0.0254, +0.0320] | - | - | - | 3 |",
        "| raw pixels | 0.7300 | 0.01 | 0.7400 | - | - | - | - | - | - | - | 1 |"]
    del other.finals[2]["knn20_top1"]  # two seeds of kNN k=20 left: [-0.1185, +0.0085], inconclusive
    assert "| higher | robust |" in results_table([summarise(base, base), summarise(other, base)], cfg)


def error_bars_drawn(fig) -> int:
    from matplotlib.container import ErrorbarContainer

    return sum(isinstance(c, ErrorbarContainer) for ax in fig.axes for c in ax.containers)


def test_results_figure_draws_no_error_bar_for_one_seed_and_says_so():
    import matplotlib.pyplot as plt

    raw = Summary.reference({"name": "raw pixels", "method": "raw pixels", "clusters": "none", "seeds": 1,
                             "knn_top1": 0.74, "linear_top1": 0.73})
    one = [summarise(Result(Entry(m), finals([a], [b]))) for m, a, b in (("simclr", 0.8, 0.7), ("moco", 0.7, 0.6))]
    fig = bar_figure(one + [raw])
    try:
        assert error_bars_drawn(fig) == 0  # neither a zero-width bar nor an unbounded one
        assert fig.axes[0].get_title() == SINGLE_SEED == "one seed: no interval"
    finally:
        plt.close(fig)
    three = summarise(Result(Entry("simclr"), finals([0.80, 0.82, 0.81], [0.70, 0.72, 0.71])))
    fig = bar_figure([three, one[1], raw])
    try:
        (ax,) = fig.axes
        assert error_bars_drawn(fig) == 2  # linear and kNN of the 3-seed row only
        assert ax.get_title() == "one seed: no interval: moco"
        lines = [c for c in ax.containers if type(c).__name__ == "ErrorbarContainer"]
        (_, low), (_, high) = lines[0].lines[2][0].get_segments()[0]  # the linear bar's vertical line
        linear = three.intervals["linear_top1"]
        assert (low, high) == pytest.approx((linear.low, linear.high))
    finally:
        plt.close(fig)


def test_claims_runs_table_writes_one_seed_and_three_seeds_the_same_one_way():
    from selfsup_clusters.studies.claims_report import runs_lines

    three = Result(Entry("simclr"), finals([0.80, 0.82, 0.81], [0.70, 0.72, 0.71]))
    one = Result(Entry("cl-infonce", "labels"), finals([0.75], [0.65]))
    raw = [{"name": "raw pixels", "method": "raw pixels", "clusters": "none", "seeds": 1, "knn_top1": 0.74,
            "linear_top1": 0.73}]
    (table,) = runs_lines({three.entry: three, one.entry: one}, raw, {})
    assert table.splitlines()[2:] == [
        "| simclr | 0.8100 [0.7852, 0.8348] | 0.7100 [0.6852, 0.7348] | +0.0800 [+0.0552, +0.1048] | "
        "-0.0300 [-0.0548, -0.0052] | - | - | 3 |",
        "| cl-infonce labels | 0.7500 | 0.6500 | +0.0200 | -0.0900 | - | - | 1 |",
        "| raw pixels | 0.7300 | 0.7400 | - | - | - | - | - |"]


def test_a_bar_inside_a_markdown_cell_is_escaped():
    from selfsup_clusters.studies.tables import markdown_table

    table = markdown_table(["measure", "H(Z|T) bits"], [["H(Z|T) given I(Z;T)", "0.5"]])
    header, _, row = table.splitlines()
    assert header == r"| measure | H(Z\|T) bits |" and row == r"| H(Z\|T) given I(Z;T) | 0.5 |"
    assert [line.replace(r"\|", "").count("|") for line in (header, row)] == [3, 3]  # two cells each
