"""The report of `selfsup-clusters claims` (claims.py trains the runs): each claim's section with its numbers,
intervals and verdict, the curve along the budget, the shortcut check, every run against raw pixels; written to
DIR/claims.md, claims.csv, claims_runs.csv, curve.csv and the figures (claims_c1.png ... c4, claims_curve.png).
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import TYPE_CHECKING

from selfsup_clusters.evaluation.intervals import DECIDED, Interval, SeedRule, paired_difference, t_interval
from selfsup_clusters.evaluation.protocols import DEPENDENT, FAMILY, ROBUST, robustness
from selfsup_clusters.studies.analyze import MEASURES, correlations, family_correlations, points
from selfsup_clusters.studies.analyze import plot as plot_correlations
from selfsup_clusters.studies.curve import (
    CURVE_COLUMNS,
    CurvePoint,
    SeedCurves,
    correlation_curve,
    crossing,
    difference_curve,
    margin_curve,
    mark_robustness,
    plot_curve,
    settles,
)
from selfsup_clusters.studies.report import budget_line, cell, plot
from selfsup_clusters.studies.suite import Entry, Result, Summary, summarise
from selfsup_clusters.studies.tables import flatten, markdown_table, write_csv

if TYPE_CHECKING:
    from selfsup_clusters.config import Config
    from selfsup_clusters.studies.claims_plan import Plan

METRICS = (("linear_top1", "linear"), ("knn_top1", "kNN"))
STATEMENTS = {
    "C1": "Cl-InfoNCE with clusters from auxiliary information beats SimCLR and MoCo, and moves toward the "
          "supervised reference.",
    "C2": "Cl-InfoNCE with k-means clusters beats PCL (same K, same budget).",
    "C3": "Cl-InfoNCE beats the cross-entropy baseline that predicts the same clusters.",
    "C4": "Representation quality rises with I(Z;T) and falls with H(Z|T) (Z the clusters, T the labels).",
    "K": "The k-means loop against SimCLR, taken apart: the recipe (instance clusters are SimCLR's positives at "
         "Cl-InfoNCE's recipe) and the clusters (k-means minus instance clusters).",
    "F": "The clustering family at one budget and one K: Cl-InfoNCE on k-means against PCL, DeepCluster-v2 and "
         "SwAV, SimCLR the instance-only reference (no claim of the paper: 'agrees' reads 'Cl-InfoNCE ahead').",
}
SIGNS = {name: sign for _, name, sign in MEASURES}
PANEL_TITLES = {
    "C1": "C1: Cl-InfoNCE (auxiliary clusters) minus SimCLR, MoCo|linear top-1, paired difference",
    "C2": "C2: Cl-InfoNCE (k-means) minus PCL, same K|linear top-1, paired difference",
    "C3": "C3: Cl-InfoNCE minus CE on the same clusters|linear top-1, paired difference",
    "C4": "C4: each measure, the other partialled out|Spearman rho with linear top-1",
    "K": "K: the k-means loop - SimCLR, the recipe, the clusters|linear top-1, paired difference",
    "F": "F: Cl-InfoNCE (k-means) minus each of the clustering family, same K|linear top-1, paired difference",
    "each run - raw pixels": "Each run minus raw pixels (below 0: nothing learned yet)|linear top-1 margin",
}
# claims_runs.csv: column -> the key of a summary's CSV row (tables.flatten of Summary.row())
RUN_COLUMNS = {"run": "name", "linear_top1": "linear_top1", "linear_low": "linear_top1_low",
               "linear_high": "linear_top1_high", "knn_top1": "knn_top1", "knn_low": "knn_top1_low",
               "knn_high": "knn_top1_high"}
DECIDING = [f"{name} given {other}" for (_, name, _), (_, other, _) in zip(MEASURES, MEASURES[::-1], strict=True)]


def report(plan: Plan, base: Config, rule: SeedRule, level_seeds: list[int], by_entry: dict[Entry, Result],
           raw: list[dict], curves: dict[Entry, SeedCurves], failures: list[str], out: Path) -> str:
    """Every section and output file from the finished runs; the report (claims.md's text)."""
    seeds = sorted({seed for entry in plan.main_entries() if entry in by_entry for seed in by_entry[entry].finals})
    lines = ["# The paper's claims, measured", "", budget_line(base, seeds, rule), seeds_line(base, level_seeds),
             machine_line(list(by_entry.values())), ""]
    table: list[dict] = []
    for claim in ("C1", "C2", "C3"):
        section, rows = comparison_section(claim, plan, by_entry, raw, out, rule)
        lines, table = lines + section, table + rows
    section, rows = correlation_section(plan, by_entry, raw, out)
    lines, table = lines + section, table + rows
    for claim in ("K", "F"):
        section, rows = comparison_section(claim, plan, by_entry, raw, out, rule)
        lines, table = lines + section, table + rows
    panels = curve_points(plan, curves, raw, rule)
    lines += curve_section(plan, panels, curves) + ["## Every run", "", *runs_lines(by_entry, raw, curves), ""]
    lines += [f"FAILED: {failure}" for failure in failures]  # "... DIVERGED: ..." for a run that diverged
    write_outputs(out, lines, table, panels,
                  [summarise(result) for result in by_entry.values()] + [Summary.reference(r) for r in raw])
    return "\n".join(lines)


def seeds_line(cfg: Config, level_seeds: list[int]) -> str:
    at = ", ".join(map(str, cfg.eval.at)) or "none"
    own = f", with their own budget ({' '.join(cfg.claims.level_overrides)})" if cfg.claims.level_overrides else ""
    return (f"The curve: linear probe and kNN after epochs {at} and {cfg.epochs}. C4's cluster sets that no other "
            f"claim trains: seeds {', '.join(map(str, level_seeds))}{own}"
            f"{' (one seed: their rows have no interval)' if len(level_seeds) == 1 else ''}.")


def machine_line(results: list[Result]) -> str:
    """Where the runs were measured, from the first run's final.json (its provenance)."""
    final = next((final for result in results for final in result.finals.values()), None)
    if final is None:
        return ""
    env = final.get("environment", {})
    return (f"Measured on {env.get('cpu', '?')} ({env.get('cpu_count', '?')} cores, {env.get('threads', '?')} "
            f"threads, device {env.get('device', '?')}), precision {final.get('precision', '?')}, torch "
            f"{env.get('packages', {}).get('torch', '?')}.")


def comparison_section(claim: str, plan: Plan, by_entry: dict[Entry, Result], raw: list[dict], out: Path,
                       rule: SeedRule) -> tuple[list[str], list[dict]]:
    """The claim's paired differences at the full budget under every protocol of the family (at `rule`'s level,
    with the seeds each spent), the deciding one's verdict and how it holds across the others; its figure with raw
    pixels' level drawn across; C2 and K with the clusterings' diagnostics beside."""
    cells, rows, verdicts = [], [], []
    compared = [c for c in plan.comparisons if c.claim == claim]
    for c in compared:
        name = f"{c.role}: {c.name}" if c.role else c.name
        if c.better not in by_entry or c.worse not in by_entry:
            cells.append([name, "-", "a run failed or diverged (below)", "-", "not measured", "-"])
            verdicts.append(("not measured", ROBUST))
            continue
        found = family_differences(by_entry[c.better], by_entry[c.worse], rule)
        robust = robustness({protocol: said for protocol, (_, said) in found.items()})
        verdicts.append((found["linear"][1] if "linear" in found else "not measured", robust))
        for protocol, (diff, said) in found.items():
            label = FAMILY[protocol].label
            cells.append([name, label, f"{diff:+.4f}", diff.n, said, robust if protocol == "linear" else ""])
            rows.append(csv_row(claim, c.name, label, diff, said, robust))
    kind = "repeated 95% interval" if rule.sequential else "95% interval"
    lines = [markdown_table(["comparison", "protocol", f"paired difference [{kind}]", "seeds spent", "verdict",
                             "across the protocols"], cells)]
    shown = list(dict.fromkeys([e for c in compared for e in (c.better, c.worse)]
                               + ([plan.supervised] if claim == "C1" else [])))
    if claim == "C1" and plan.supervised in by_entry:
        lines += supervised_gap(by_entry[plan.supervised], shown[:-1], by_entry)
    if claim == "C2":
        lines += ["", *diagnostics_lines(plan, by_entry, out)]
    if claim in ("K", "F"):
        lines += ["", "The cluster-mates each of these runs' clusters gave an anchor (SwAV's: its prototypes, nearest "
                  "to each sample's projection): C2's diagnostics table."]
    if any(e in by_entry for e in shown):
        plot([summarise(by_entry[e]) for e in shown if e in by_entry], out / f"claims_{claim.lower()}.png",
             reference=raw[0] if raw else None)
    head = [f"## {claim}: {STATEMENTS[claim]}", "", f"**Verdict: {claim_verdict(verdicts)}**", ""]
    return head + lines + [""], rows


def family_differences(better: Result, worse: Result, rule: SeedRule) -> dict[str, tuple[Interval, str]]:
    """Each protocol's paired difference better - worse at `rule`'s level with its verdict, for the protocols
    both runs were scored with (protocols.FAMILY order: the deciding one first)."""
    found = {}
    for protocol in FAMILY.values():
        a, b = better.values(protocol.metric), worse.values(protocol.metric)
        if set(a) & set(b):
            found[protocol.name] = rule.read(a, b)
    return found


def claim_verdict(verdicts: list[tuple[str, str]]) -> str:
    """The claim's verdict on the deciding protocol (`combine`), with whether every comparison holds across the
    protocol family."""
    said = combine([deciding for deciding, _ in verdicts])
    dependent = [robust for _, robust in verdicts if robust != ROBUST]
    return f"{said}, {ROBUST}" if not dependent else f"{said}, {DEPENDENT} ({len(dependent)} of {len(verdicts)} " \
        "comparisons)"


def diagnostics_lines(plan: Plan, by_entry: dict[Entry, Result], out: Path) -> list[str]:
    """Every clustering run's cluster diagnostics in its last epoch (metrics.jsonl), mean over its seeds."""
    cells = []
    for entry in plan.main_entries():
        if entry not in by_entry:
            continue
        rows = [row for seed in by_entry[entry].finals for row in last_diagnostics(out / entry.folder / f"seed{seed}")]
        for name in dict.fromkeys(row["name"] for row in rows):
            mine = [row for row in rows if row["name"] == name]
            mean = {key: statistics.fmean(row[key] for row in mine) for key in DIAGNOSTICS}
            cells.append([entry.name, name, f"{mean['mates_per_anchor']:.2f}", f"{mean['occupied_clusters']:.0f}",
                          f"{mean['largest_share']:.3f}", f"{mean['NMI']:.3f}", f"{mean['AMI']:.3f}", len(mine)])
    return ["Cluster diagnostics in each run's last epoch (mean over its seeds): cluster-mates = the other samples of "
            "an anchor's cluster in its batch, the positives the clusters add beyond its own views.", "",
            markdown_table(["run", "clustering", "cluster-mates per anchor", "occupied clusters", "largest cluster's "
                            "share", "NMI to labels", "AMI to labels", "seeds"], cells)]


DIAGNOSTICS = ("mates_per_anchor", "occupied_clusters", "largest_share", "NMI", "AMI")


def last_diagnostics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    return records[-1].get("cluster_diagnostics", []) if records else []


def supervised_gap(supervised: Result, compared: list[Entry], by_entry: dict[Entry, Result]) -> list[str]:
    """How far each of C1's runs stays below the supervised reference (linear top-1, paired by seed)."""
    lines = ["", "Toward the supervised reference (linear top-1, paired): gap = supervised - method."]
    for entry in compared:
        if entry in by_entry:
            gap = paired_difference(supervised.values("linear_top1"), by_entry[entry].values("linear_top1"))
            lines.append(f"- {entry.name}: {gap:+.4f}")
    return lines


def correlation_section(plan: Plan, by_entry: dict[Entry, Result], raw: list[dict], out: Path
                        ) -> tuple[list[str], list[dict]]:
    """C4: the cluster sets with their statistics and scores, then each rank correlation with its verdict."""
    measured = [(stats, summarise(by_entry[entry])) for spec, stats in plan.levels
                for entry in [plan.level_entry(spec)] if entry in by_entry]
    lines = [markdown_table(["clusters", "K", "I(Z;T) bits", "H(Z|T) bits", "linear top-1", "kNN top-1", "seeds"],
                            [[s.clusters, stats["num_clusters"], f"{stats['I_Z_T']:.3f}",
                              f"{stats['H_Z_given_T']:.3f}", cell(s.get("linear_top1")), cell(s.get("knn_top1")),
                              s.seeds] for stats, s in measured]), ""]
    scored, cells, csv_rows, verdicts = points(measured), [], [], []
    found = family_correlations(scored)
    if scored:
        plot_correlations(scored, correlations(scored, "linear_top1"), out / "claims_c4.png",
                          raw[0]["linear_top1"] if raw else None)
    for name, by_protocol in found.items():
        sign = SIGNS[name.split(" given ")[0]]
        robust = robustness({protocol: said for protocol, (_, said) in by_protocol.items()})
        verdicts += [(by_protocol["linear"][1], robust)] if name in DECIDING else []
        for protocol, (rho, said) in by_protocol.items():
            label = FAMILY[protocol].label
            cells.append([name, label, f"{rho:+.2f}", "positive" if sign > 0 else "negative", said,
                          robust if protocol == "linear" else ""])
            csv_rows.append(csv_row("C4", f"Spearman {name}", label, rho, said, robust))
    lines += [markdown_table(["measure", "protocol", "Spearman rho [95% Fisher-z interval over the cluster sets]",
                              "expected", "verdict", "across the protocols"], cells)]
    lines += ["", f"Cluster sets: {len(measured)}; rho over the seed means of each set; 'A given B': B partialled "
              f"out. The verdict reads the partial correlations ({' and '.join(DECIDING)}) on linear top-1."]
    head = [f"## C4: {STATEMENTS['C4']}", "", f"**Verdict: {claim_verdict(verdicts)}**", ""]
    return head + lines + [""], csv_rows


def curve_points(plan: Plan, curves: dict[Entry, SeedCurves], raw: list[dict],
                 rule: SeedRule) -> dict[str, list[CurvePoint]]:
    """Every curve, by panel: C1-C3's and K's paired differences under every protocol of the family (at `rule`'s
    level; the deciding protocol's points marked with their robustness), C4's partial correlations, each run
    against raw pixels."""
    panels: dict[str, list[CurvePoint]] = {}
    for c in plan.comparisons:
        if c.better in curves and c.worse in curves:
            for protocol in FAMILY.values():
                panels.setdefault(c.claim, []).extend(difference_curve(
                    c.claim, c.name, curves[c.better], curves[c.worse], protocol.metric, rule=rule))
    sets = {spec: curves[plan.level_entry(spec)] for spec, _ in plan.levels if plan.level_entry(spec) in curves}
    level_statistics = dict(plan.levels)
    panels["C4"] = [p for protocol in FAMILY.values()
                    for p in correlation_curve(sets, level_statistics, protocol.metric, correlations, SIGNS)
                    if p.comparison.removeprefix("Spearman ") in DECIDING]
    panels = {panel: mark_robustness(found) for panel, found in panels.items()}
    if raw:
        panels["each run - raw pixels"] = [p for e in plan.main_entries() if e in curves for metric, _ in METRICS
                                           for p in margin_curve(e.name, curves[e], raw[0][metric], metric)]
    return panels


def curve_section(plan: Plan, panels: dict[str, list[CurvePoint]], curves: dict[Entry, SeedCurves]) -> list[str]:
    labels = {**dict(METRICS), **{protocol.metric: protocol.label for protocol in FAMILY.values()}}
    cells = []
    for panel, found in panels.items():
        for comparison, metric in dict.fromkeys((p.comparison, p.metric) for p in found):
            line = [p for p in found if p.comparison == comparison and p.metric == metric]
            last = max(line, key=lambda p: p.samples).robustness if line else ""
            cells.append([panel, comparison, labels[metric], settles(line), last or "-"])
    lines = ["## Along the budget", "", "From which budget (samples seen per run) each verdict stays what it is at the "
             "full budget ([curve.csv](curve.csv), [claims_curve.png](claims_curve.png); curve.csv has the "
             "robustness at every budget):", "",
             markdown_table(["claim", "comparison", "protocol", "verdict along the budget",
                             "across the protocols (full budget)"], cells)]
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
        values = [at[samples][metric] for at in long_run.values() if samples in at]
        sd = statistics.stdev(values) if len(values) > 1 else math.nan
        parts.append(f"{label} {short[seed][samples][metric] - long_run[seed][samples][metric]:+.4f} (seed-to-seed "
                     f"SD of the long run there: {sd:.4f})")
    return [f"**The shortcut, checked once** ({long_entry.name}, seed {seed}): trained to {samples:,} samples with "
            f"its own full schedule ({' '.join(plan.shortcut.overrides)}), minus the longer run's evaluation at "
            f"{samples:,} samples: {'; '.join(parts)}."]


def runs_lines(by_entry: dict[Entry, Result], raw: list[dict], curves: dict[Entry, SeedCurves]) -> list[str]:
    """Every run: linear and kNN top-1 with intervals, the margin to raw pixels, and where the linear margin's trend
    over the curve's budgets would reach raw pixels when it has not yet."""
    cells = []
    for entry, result in by_entry.items():
        s = summarise(result)
        margins = [f"{margin(result, raw[0][metric], metric):+.4f}" if raw else "-" for metric, _ in METRICS]
        cells.append([s.name, cell(s.get("linear_top1")), cell(s.get("knn_top1")), *margins,
                      trend_text(entry, raw, curves), cell(s.get("train_time_s"), ".0f"), s.seeds])
    cells += [["raw pixels", cell(r["linear_top1"]), cell(r["knn_top1"]), "-", "-", "-", "-", "-"] for r in raw]
    return [markdown_table(["run", "linear top-1", "kNN top-1", "linear - raw pixels", "kNN - raw pixels",
                            "linear trend reaches raw pixels at (samples seen, extrapolated)", "train time (s)",
                            "seeds"], cells)]


def trend_text(entry: Entry, raw: list[dict], curves: dict[Entry, SeedCurves]) -> str:
    if not raw or entry not in curves:
        return "-"
    found = margin_curve(entry.name, curves[entry], raw[0]["linear_top1"], "linear_top1")
    if found and max(found, key=lambda p: p.samples).interval.mean >= 0:
        return "above already"
    at = crossing(found)
    return f"~{at:,.0f}" if at is not None else "no rising trend"


def margin(result: Result, reference: float, metric: str) -> Interval:
    """A run's mean and t-interval over seeds, minus a fixed reference (raw pixels)."""
    return t_interval(list(result.values(metric).values())).shifted(-reference)


def write_outputs(out: Path, report: list[str], table: list[dict], panels: dict[str, list[CurvePoint]],
                  runs: list[Summary]) -> None:
    (out / "claims.md").write_text("\n".join(report) + "\n")
    write_csv(out / "claims.csv", ["claim", "comparison", "metric", "difference", "low", "high", "n", "verdict",
                                    "robustness"], table)
    write_csv(out / "curve.csv", list(CURVE_COLUMNS), [p.row() for found in panels.values() for p in found])
    write_csv(out / "claims_runs.csv", list(RUN_COLUMNS),
              [{column: row.get(key, "") for column, key in RUN_COLUMNS.items()}
               for row in (flatten(run.row()) for run in runs)])
    plot_curve(panels, out / "claims_curve.png", PANEL_TITLES)


def combine(verdicts: list[str]) -> str:
    """A claim agrees when every comparison agrees, disagrees when any disagrees, is equivalent when every one is;
    decided comparisons of both kinds read "agrees in part, equivalent in part"; anything undecided: inconclusive."""
    if not verdicts or "not measured" in verdicts:
        return "not measured"
    if "disagrees" in verdicts:
        return "disagrees"
    if len(set(verdicts)) == 1:
        return verdicts[0]
    return "agrees in part, equivalent in part" if set(verdicts) <= set(DECIDED) else "inconclusive"


def csv_row(claim: str, name: str, metric: str, diff: Interval, said: str, robust: str = "") -> dict:
    return {"claim": claim, "comparison": name, "metric": metric, "difference": diff.mean, "low": diff.low,
            "high": diff.high, "n": diff.n, "verdict": said, "robustness": robust}
