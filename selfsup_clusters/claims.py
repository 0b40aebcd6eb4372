"""`selfsup-clusters claims`: the paper's four claims as one command, each with its numbers, a 95% interval, a
verdict, and the same at every budget along training (the curve).

C1  Cl-InfoNCE on auxiliary clusters beats SimCLR and MoCo, and moves toward the supervised reference.
C2  Cl-InfoNCE on k-means clusters beats PCL (same K, same budget).
C3  Cl-InfoNCE beats the cross-entropy model that predicts the same clusters.
C4  Quality rises with I(Z;T) and falls with H(Z|T), over the data's hierarchy levels and synthetic sets.

C1-C3 are paired differences per seed (same seed = same data order and initialisation) with a Student-t
interval; C4 is Spearman's rank correlation over the cluster sets, each measure with the other partialled out
(the synthetic splits raise H(Z|T) at fixed I(Z;T)), with a Fisher-z interval. A verdict is "agrees" when the
interval lies on the paper's side of 0, "disagrees" when it lies on the other side, "inconclusive" when it
contains 0. Linear top-1 (the paper's metric) decides; kNN is shown beside it. Raw pixels' level stands beside
every run: a budget where it beats every representation has not learned enough to decide anything.

A budget is a plain config file, configs/claims_<budget>.yaml (smoke: seconds, for tests; cpu: about 90 minutes
on a 2-core CPU with 3 seeds; gpu: minutes on one H200). Its `eval.at` epochs are the curve's points; C4's sets
that no other claim uses train on the first `claims.level_seeds` seeds. Every run is one run of the comparison
suite, trained once even when several claims use it, so re-running skips what finished.

DIR/claims.md, claims.csv   the claims at the full budget: statement, numbers with intervals, verdict
DIR/claims_runs.csv         every run's linear and kNN top-1 with intervals, raw pixels included
DIR/curve.csv, claims_curve.png   every claim (and each run's margin to raw pixels) at each budget
DIR/claims_c1.png ... c4    one figure per claim, raw pixels' level drawn across
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from selfsup_clusters.analyze import MEASURES, cluster_levels, correlations
from selfsup_clusters.analyze import plot as plot_correlations
from selfsup_clusters.compare import (
    Entry,
    Result,
    budget_line,
    interval_text,
    plot,
    raw_pixel_rows,
    summarise,
    train_entries,
)
from selfsup_clusters.config import CONFIG_DIR, Config, UserConfig
from selfsup_clusters.curve import (
    CURVE_COLUMNS,
    CurvePoint,
    SeedCurves,
    correlation_curve,
    crossing,
    difference_curve,
    margin_curve,
    plot_curve,
    run_curve,
    settles,
)
from selfsup_clusters.errors import UserError, first_line
from selfsup_clusters.intervals import Interval, paired_difference, t_interval, verdict
from selfsup_clusters.tables import write_csv

BUDGETS = ("smoke", "cpu", "gpu")
METRICS = (("linear_top1", "linear"), ("knn_top1", "kNN"))
STATEMENTS = {
    "C1": "Cl-InfoNCE with clusters from auxiliary information beats SimCLR and MoCo, and moves toward the "
          "supervised reference.",
    "C2": "Cl-InfoNCE with k-means clusters beats PCL (same K, same budget).",
    "C3": "Cl-InfoNCE beats the cross-entropy baseline that predicts the same clusters.",
    "C4": "Representation quality rises with I(Z;T) and falls with H(Z|T) (Z the clusters, T the labels).",
}
SIGNS = {name: sign for _, name, sign in MEASURES}
PANEL_TITLES = {
    "C1": "C1: Cl-InfoNCE (auxiliary clusters) minus SimCLR, MoCo|linear top-1, paired difference",
    "C2": "C2: Cl-InfoNCE (k-means) minus PCL, same K|linear top-1, paired difference",
    "C3": "C3: Cl-InfoNCE minus CE on the same clusters|linear top-1, paired difference",
    "C4": "C4: each measure, the other partialled out|Spearman rho with linear top-1",
    "each run - raw pixels": "Each run minus raw pixels (below 0: nothing learned yet)|linear top-1 margin",
}
# claims_runs.csv: column -> the key of summarise's row ("run" is the row's name)
RUN_COLUMNS = {"run": "", "linear_top1": "linear_top1", "linear_low": "linear_top1_low",
               "linear_high": "linear_top1_high", "knn_top1": "knn_top1", "knn_low": "knn_top1_low",
               "knn_high": "knn_top1_high"}
DECIDING = [f"{name} given {other}" for (_, name, _), (_, other, _) in zip(MEASURES, MEASURES[::-1], strict=True)]


def budget_config(budget: str) -> str:
    if budget not in BUDGETS:
        raise UserError(f"unknown budget {budget!r}; use one of: {', '.join(BUDGETS)}")
    return str(CONFIG_DIR / f"claims_{budget}.yaml")


@dataclass(frozen=True)
class Comparison:
    """One paired comparison of a claim: `better` is expected to beat `worse`."""

    claim: str
    better: Entry
    worse: Entry

    @property
    def name(self) -> str:
        return f"{self.better.name} - {self.worse.name}"


@dataclass
class Plan:
    """What the claims train: C1-C3's comparisons with the supervised reference, C4's cluster sets (with their
    statistics) and the one run that checks the curve's shortcut."""

    comparisons: list[Comparison]
    levels: list[tuple[str, dict]]
    shortcut: Entry | None
    level_overrides: tuple[str, ...] = ()  # C4's own budget (claims.level_overrides)
    supervised: Entry = Entry("supervised")

    def level_entry(self, spec: str) -> Entry:
        return Entry("cl-infonce", spec, self.level_overrides)

    def main_entries(self) -> list[Entry]:
        return unique([e for c in self.comparisons for e in (c.better, c.worse)] + [self.supervised])

    def level_entries(self) -> list[Entry]:
        return [e for e in (self.level_entry(spec) for spec, _ in self.levels) if e not in self.main_entries()]


def plan_claims(user: UserConfig) -> Plan:
    """The runs of every claim; a cluster spec of the budget that this dataset cannot give stops here, in one
    line, before anything trains."""
    cfg = user.load()
    aux, k = cfg.claims.auxiliary, cfg.claims.kmeans
    levels = cluster_levels(user, list(cfg.claims.synthetic))
    check_sources(user, [spec for spec, _ in levels if spec not in cfg.claims.synthetic])
    cl_aux = Entry("cl-infonce", aux)
    comparisons = [
        Comparison("C1", cl_aux, Entry("simclr")),
        Comparison("C1", cl_aux, Entry("moco")),
        Comparison("C2", Entry("cl-infonce", f"kmeans:{k}"), Entry("pcl", f"kmeans:{k}")),
        Comparison("C3", cl_aux, Entry("ce", aux)),
    ]
    return Plan(comparisons, levels, shortcut_entry(cfg, cl_aux), tuple(cfg.claims.level_overrides))


def check_sources(user: UserConfig, offered: list[str]) -> None:
    """claims.auxiliary and claims.kmeans must apply to the dataset (WordNet ids for wordnet:L, attributes for
    attributes:K, K <= the training images)."""
    from selfsup_clusters.clusters import ClusterError
    from selfsup_clusters.data import load_dataset
    from selfsup_clusters.run import build_clusters

    cfg = user.load("method=cl-infonce")
    data = load_dataset(cfg.data)
    if cfg.data.val_fraction > 0:
        data = data.holdout(cfg.data.val_fraction)
    for key, spec in (("claims.auxiliary", cfg.claims.auxiliary), ("claims.kmeans", f"kmeans:{cfg.claims.kmeans}")):
        cfg.clusters.spec = spec
        try:
            build_clusters(cfg, data)
        except ClusterError as error:
            choices = f"one this dataset offers: {', '.join(offered)}" if key == "claims.auxiliary" else \
                f"K <= {len(data.train)}"
            raise UserError(f"{key}={spec.removeprefix('kmeans:') if key == 'claims.kmeans' else spec} does not "
                            f"apply to {cfg.data.name} ({first_line(error)}); set {key}= with {choices}") from None


def shortcut_entry(cfg: Config, entry: Entry) -> Entry | None:
    """`entry` trained to the curve's largest intermediate budget with its own full schedule (None without one)."""
    shorter = [epoch for epoch in cfg.eval.at if epoch < cfg.epochs]
    if not shorter:
        return None
    epochs = max(shorter)
    at = ",".join(str(epoch) for epoch in cfg.eval.at if epoch <= epochs)
    return Entry(entry.method, entry.clusters, (f"epochs={epochs}", f"eval.at=[{at}]"))


def unique(entries: list[Entry]) -> list[Entry]:
    return list(dict.fromkeys(entries))


def claims(user: UserConfig, seeds: list[int], out: Path) -> tuple[str, list[str]]:
    """Train every run the claims need (each once), then write the reports, the curve and the figures."""
    plan, base = plan_claims(user), user.load()
    level_seeds = seeds[: base.claims.level_seeds] if base.claims.level_seeds else seeds
    groups = [(plan.main_entries(), seeds), (plan.level_entries(), level_seeds),
              ([plan.shortcut] if plan.shortcut else [], seeds[:1])]
    out.mkdir(parents=True, exist_ok=True)
    print(f"[claims] {sum(len(entries) * len(s) for entries, s in groups)} runs", flush=True)
    results, failures = [], []
    for entries, group_seeds in groups:
        found, failed = train_entries(user, entries, group_seeds, out, "claims")
        results, failures = results + found, failures + failed
    by_entry = {result.entry: result for result in results}
    raw = raw_pixel_rows(base, out)
    curves = {entry: {seed: run_curve(out / entry.folder / f"seed{seed}") for seed in result.finals}
              for entry, result in by_entry.items()}
    report, table = ["# The paper's claims, measured", "", budget_line(base, seeds), seeds_line(base, level_seeds),
                     machine_line(results), ""], []
    for claim in ("C1", "C2", "C3"):
        lines, rows = comparison_section(claim, plan, by_entry, raw, out)
        report, table = report + lines, table + rows
    lines, rows = correlation_section(plan, by_entry, raw, out)
    report, table = report + lines, table + rows
    points = curve_points(plan, curves, raw)
    report += curve_section(plan, points, curves) + ["## Every run", "", *runs_lines(by_entry, raw, curves), ""]
    report += [f"FAILED: {failure}" for failure in failures]
    write_outputs(out, report, table, points, [summarise(by_entry[e]) for e in by_entry] + raw)
    return "\n".join(report), failures


def seeds_line(cfg: Config, level_seeds: list[int]) -> str:
    points = ", ".join(map(str, cfg.eval.at)) or "none"
    own = f", with their own budget ({' '.join(cfg.claims.level_overrides)})" if cfg.claims.level_overrides else ""
    return (f"The curve: linear probe and kNN after epochs {points} and {cfg.epochs}. C4's cluster sets that no other "
            f"claim trains: seeds {', '.join(map(str, level_seeds))}{own}.")


def machine_line(results: list[Result]) -> str:
    """Where the runs were measured, from the first run's final.json (its provenance)."""
    final = next((final for result in results for final in result.finals.values()), None)
    if final is None:
        return ""
    env = final.get("environment", {})
    return (f"Measured on {env.get('cpu', '?')} ({env.get('cpu_count', '?')} cores, {env.get('threads', '?')} "
            f"threads, device {env.get('device', '?')}), precision {final.get('precision', '?')}, torch "
            f"{env.get('packages', {}).get('torch', '?')}.")


def comparison_section(claim: str, plan: Plan, by_entry: dict[Entry, Result], raw: list[dict], out: Path
                       ) -> tuple[list[str], list[dict]]:
    """The claim's paired differences at the full budget; its figure with raw pixels' level drawn across."""
    lines = ["| comparison | metric | paired difference [95% interval] | seeds | verdict |", "|---|---|---|---|---|"]
    rows, verdicts = [], []
    compared = [c for c in plan.comparisons if c.claim == claim]
    for c in compared:
        if c.better not in by_entry or c.worse not in by_entry:
            lines.append(f"| {c.name} | - | a run failed | - | not measured |")
            verdicts.append("not measured")
            continue
        for metric, label in METRICS:
            diff = paired_difference(by_entry[c.better].values(metric), by_entry[c.worse].values(metric))
            said = verdict(diff, +1)
            verdicts += [said] if metric == "linear_top1" else []
            lines.append(f"| {c.name} | {label} | {interval(diff)} | {diff.n} | {said} |")
            rows.append(csv_row(claim, c.name, label, diff, said))
    shown = unique([e for c in compared for e in (c.better, c.worse)] + ([plan.supervised] if claim == "C1" else []))
    if claim == "C1" and plan.supervised in by_entry:
        lines += supervised_gap(by_entry[plan.supervised], shown[:-1], by_entry)
    if any(e in by_entry for e in shown):
        plot([summarise(by_entry[e]) for e in shown if e in by_entry], out / f"claims_{claim.lower()}.png",
             reference=raw[0] if raw else None)
    head = [f"## {claim}: {STATEMENTS[claim]}", "", f"**Verdict: {combine(verdicts)}**", ""]
    return head + lines + [""], rows


def supervised_gap(supervised: Result, compared: list[Entry], by_entry: dict[Entry, Result]) -> list[str]:
    """How far each of C1's runs stays below the supervised reference (linear top-1, paired by seed)."""
    lines = ["", "Toward the supervised reference (linear top-1, paired): gap = supervised - method."]
    for entry in compared:
        if entry in by_entry:
            gap = paired_difference(supervised.values("linear_top1"), by_entry[entry].values("linear_top1"))
            lines.append(f"- {entry.name}: {interval(gap)}")
    return lines


def correlation_section(plan: Plan, by_entry: dict[Entry, Result], raw: list[dict], out: Path
                        ) -> tuple[list[str], list[dict]]:
    rows = [{**stats, **summarise(by_entry[entry]), "clusters": spec} for spec, stats in plan.levels
            for entry in [plan.level_entry(spec)] if entry in by_entry]
    lines = ["| clusters | K | I(Z;T) bits | H(Z|T) bits | linear top-1 | kNN top-1 | seeds |", "|" + "---|" * 7]
    lines += [f"| {r['clusters']} | {r['num_clusters']} | {r['I_Z_T']:.3f} | {r['H_Z_given_T']:.3f} | "
              f"{interval_text(r, 'linear_top1')} | {interval_text(r, 'knn_top1')} | {r['seeds']} |" for r in rows]
    lines += ["", "| measure | metric | Spearman rho [95% Fisher-z interval over the cluster sets] | expected | "
              "verdict |", "|---|---|---|---|---|"]
    csv_rows, verdicts = [], []
    for metric, metric_label in METRICS:
        found = correlations(rows, metric)
        if metric == "linear_top1":
            plot_correlations(rows, found, out / "claims_c4.png", raw[0]["linear_top1"] if raw else None)
        for name, rho in found.items():
            sign = SIGNS[name.split(" given ")[0]]
            said = verdict(rho, sign)
            verdicts += [said] if metric == "linear_top1" and name in DECIDING else []
            lines.append(f"| {name} | {metric_label} | {rho.mean:+.2f} [{rho.low:+.2f}, {rho.high:+.2f}] | "
                         f"{'positive' if sign > 0 else 'negative'} | {said} |")
            csv_rows.append(csv_row("C4", f"Spearman {name}", metric_label, rho, said))
    lines += ["", f"Cluster sets: {len(rows)}; rho over the seed means of each set; 'A given B': B partialled out. The "
              f"verdict reads the partial correlations ({' and '.join(DECIDING)}) on linear top-1."]
    head = [f"## C4: {STATEMENTS['C4']}", "", f"**Verdict: {combine(verdicts)}**", ""]
    return head + lines + [""], csv_rows


def curve_points(plan: Plan, curves: dict[Entry, SeedCurves], raw: list[dict]) -> dict[str, list[CurvePoint]]:
    """Every curve, by panel: C1-C3's paired differences, C4's partial correlations, each run against raw pixels."""
    panels: dict[str, list[CurvePoint]] = {}
    for c in plan.comparisons:
        if c.better in curves and c.worse in curves:
            for metric, _ in METRICS:
                panels.setdefault(c.claim, []).extend(
                    difference_curve(c.claim, c.name, curves[c.better], curves[c.worse], metric))
    sets = {spec: curves[plan.level_entry(spec)] for spec, _ in plan.levels if plan.level_entry(spec) in curves}
    statistics = dict(plan.levels)
    panels["C4"] = [p for metric, _ in METRICS
                    for p in correlation_curve(sets, statistics, metric, correlations, SIGNS)
                    if p.comparison.removeprefix("Spearman ") in DECIDING]
    if raw:
        panels["each run - raw pixels"] = [p for e in plan.main_entries() if e in curves for metric, _ in METRICS
                                           for p in margin_curve(e.name, curves[e], raw[0][metric], metric)]
    return panels


def curve_section(plan: Plan, panels: dict[str, list[CurvePoint]], curves: dict[Entry, SeedCurves]) -> list[str]:
    lines = ["## Along the budget", "", "From which budget (samples seen per run) each verdict stays what it is at the "
             "full budget ([curve.csv](curve.csv), [claims_curve.png](claims_curve.png)):", "",
             "| claim | comparison | metric | verdict along the budget |", "|---|---|---|---|"]
    for panel, points in panels.items():
        for comparison, metric in dict.fromkeys((p.comparison, p.metric) for p in points):
            said = settles([p for p in points if p.comparison == comparison and p.metric == metric])
            lines.append(f"| {panel} | {comparison} | {dict(METRICS)[metric]} | {said} |")
    return lines + [""] + shortcut_lines(plan, curves) + [""]


def shortcut_lines(plan: Plan, curves: dict[Entry, SeedCurves]) -> list[str]:
    """The curve's shortcut, checked once: a run trained to a shorter budget with its own schedule against the
    long run's evaluation at that budget (same seed)."""
    if plan.shortcut is None:
        return []
    long_entry = Entry(plan.shortcut.method, plan.shortcut.clusters)
    short, long_run = curves.get(plan.shortcut, {}), curves.get(long_entry, {})
    seeds = sorted(set(short) & set(long_run))
    if not seeds or not short[seeds[0]]:
        return ["The shortcut check did not run (its run failed or is missing)."]
    seed = seeds[0]
    samples = max(short[seed])
    if samples not in long_run[seed]:
        return [f"The shortcut check found no evaluation of the long run at {samples:,} samples."]
    parts = []
    for metric, label in METRICS:
        values = [points[samples][metric] for points in long_run.values() if samples in points]
        sd = statistics.stdev(values) if len(values) > 1 else math.nan
        parts.append(f"{label} {short[seed][samples][metric] - long_run[seed][samples][metric]:+.4f} (seed-to-seed "
                     f"SD of the long run there: {sd:.4f})")
    return [f"**The shortcut, checked once** ({long_entry.name}, seed {seed}): trained to {samples:,} samples with "
            f"its own full schedule ({' '.join(plan.shortcut.overrides)}), minus the longer run's evaluation at "
            f"{samples:,} samples: {'; '.join(parts)}."]


def runs_lines(by_entry: dict[Entry, Result], raw: list[dict], curves: dict[Entry, SeedCurves]) -> list[str]:
    """Every run: linear and kNN top-1 with intervals, the margin to raw pixels, and where the linear margin's trend
    over the curve's budgets would reach raw pixels when it has not yet."""
    lines = ["| run | linear top-1 | kNN top-1 | linear - raw pixels | kNN - raw pixels | linear trend reaches raw "
             "pixels at (samples seen, extrapolated) | train time (s) | seeds |", "|" + "---|" * 8]
    for entry, result in by_entry.items():
        row = summarise(result)
        margins = [interval(margin(result, raw[0][metric], metric)) if raw else "-" for metric, _ in METRICS]
        lines.append(f"| {row['name']} | {interval_text(row, 'linear_top1')} | {interval_text(row, 'knn_top1')} | "
                     f"{margins[0]} | {margins[1]} | {trend_text(entry, raw, curves)} | "
                     f"{interval_text(row, 'train_time_s', 0)} | {row['seeds']} |")
    lines += [f"| raw pixels | {r['linear_top1']:.4f} | {r['knn_top1']:.4f} | - | - | - | - | - |" for r in raw]
    return lines


def trend_text(entry: Entry, raw: list[dict], curves: dict[Entry, SeedCurves]) -> str:
    if not raw or entry not in curves:
        return "-"
    points = margin_curve(entry.name, curves[entry], raw[0]["linear_top1"], "linear_top1")
    if points and max(points, key=lambda p: p.samples).interval.mean >= 0:
        return "above already"
    found = crossing(points)
    return f"~{found:,.0f}" if found is not None else "no rising trend"


def margin(result: Result, reference: float, metric: str) -> Interval:
    """A run's mean and t-interval over seeds, minus a fixed reference (raw pixels)."""
    return t_interval(list(result.values(metric).values())).shifted(-reference)


def write_outputs(out: Path, report: list[str], table: list[dict], panels: dict[str, list[CurvePoint]],
                  runs: list[dict]) -> None:
    (out / "claims.md").write_text("\n".join(report) + "\n")
    write_csv(out / "claims.csv", ["claim", "comparison", "metric", "difference", "low", "high", "n", "verdict"],
              table)
    write_csv(out / "curve.csv", list(CURVE_COLUMNS), [p.row() for points in panels.values() for p in points])
    write_csv(out / "claims_runs.csv", list(RUN_COLUMNS),
              [{"run": r["name"], **{column: r.get(key, "") for column, key in RUN_COLUMNS.items() if key}}
               for r in runs])
    plot_curve(panels, out / "claims_curve.png", PANEL_TITLES)


def combine(verdicts: list[str]) -> str:
    """A claim agrees when every comparison agrees, disagrees when any disagrees, else is inconclusive."""
    if not verdicts or "not measured" in verdicts:
        return "not measured"
    if "disagrees" in verdicts:
        return "disagrees"
    return "agrees" if all(v == "agrees" for v in verdicts) else "inconclusive"


def interval(diff: Interval) -> str:
    if diff.n < 2:
        return f"{diff.mean:+.4f} (1 seed: no interval)"
    return f"{diff.mean:+.4f} [{diff.low:+.4f}, {diff.high:+.4f}]"


def csv_row(claim: str, name: str, metric: str, diff: Interval, said: str) -> dict:
    return {"claim": claim, "comparison": name, "metric": metric, "difference": diff.mean, "low": diff.low,
            "high": diff.high, "n": diff.n, "verdict": said}
