"""`selfsup-clusters claims`: the paper's four claims as one command, each with its numbers, a 95% interval over
seeds and a verdict.

C1  Cl-InfoNCE on auxiliary clusters beats SimCLR and MoCo, and moves toward the supervised reference.
C2  Cl-InfoNCE on k-means clusters beats PCL (same K, same budget).
C3  Cl-InfoNCE beats the cross-entropy model that predicts the same clusters.
C4  Quality rises with I(Z;T) and falls with H(Z|T), over the data's hierarchy levels and synthetic sets.

C1-C3 are paired differences per seed (same seed = same data order and initialisation) with a Student-t
interval; C4 is Spearman's rho over the cluster sets with a bootstrap interval. A verdict is "agrees" when the
interval lies on the paper's side of 0, "disagrees" when it lies on the other side, "inconclusive" when it contains
0. Linear top-1 (the paper's metric) decides; kNN is shown beside it.

A budget is a plain config file, configs/claims_<budget>.yaml (smoke: seconds, for tests; cpu: about an hour on a
2-core CPU with 3 seeds; gpu: minutes on one H200). Every run is one run of the comparison suite, trained once
even when several claims use it, so re-running skips what finished.

DIR/claims.md, claims.csv   the claims: statement, numbers with intervals, verdict
DIR/claims_c1.png ... c4    one figure per claim (C1-C3: the compared runs with intervals; C4: the scatter)
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from selfsup_clusters.analyze import cluster_levels, correlations
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
from selfsup_clusters.config import CONFIG_DIR, UserConfig
from selfsup_clusters.errors import UserError
from selfsup_clusters.intervals import Interval, paired_difference, verdict

BUDGETS = ("smoke", "cpu", "gpu")
METRICS = (("linear_top1", "linear"), ("knn_top1", "kNN"))
STATEMENTS = {
    "C1": "Cl-InfoNCE with clusters from auxiliary information beats SimCLR and MoCo, and moves toward the "
          "supervised reference.",
    "C2": "Cl-InfoNCE with k-means clusters beats PCL (same K, same budget).",
    "C3": "Cl-InfoNCE beats the cross-entropy baseline that predicts the same clusters.",
    "C4": "Representation quality rises with I(Z;T) and falls with H(Z|T) (Z the clusters, T the labels).",
}


def budget_config(budget: str) -> str:
    if budget not in BUDGETS:
        raise UserError(f"unknown budget {budget!r}; use one of: {', '.join(BUDGETS)}")
    return str(CONFIG_DIR / f"claims_{budget}.yaml")


@dataclass
class Comparison:
    """One paired comparison of a claim: `better` is expected to beat `worse`."""

    claim: str
    better: Entry
    worse: Entry


def claim_entries(user: UserConfig) -> tuple[list[Comparison], list[tuple[str, dict]]]:
    """The comparisons of C1-C3 and the cluster levels (with statistics) of C4."""
    cfg = user.load()
    aux, k = cfg.claims.auxiliary, cfg.claims.kmeans
    cl_aux = Entry("cl-infonce", aux)
    comparisons = [
        Comparison("C1", cl_aux, Entry("simclr")),
        Comparison("C1", cl_aux, Entry("moco")),
        Comparison("C2", Entry("cl-infonce", f"kmeans:{k}"), Entry("pcl", f"kmeans:{k}")),
        Comparison("C3", cl_aux, Entry("ce", aux)),
    ]
    levels = cluster_levels(user, list(cfg.claims.synthetic))
    return comparisons, levels


def unique(entries: list[Entry]) -> list[Entry]:
    return list(dict.fromkeys(entries))


def claims(user: UserConfig, seeds: list[int], out: Path) -> tuple[str, list[str]]:
    """Train every run the claims need (each once), then write claims.md/.csv, the figures and results.md."""
    comparisons, levels = claim_entries(user)
    supervised = Entry("supervised")
    level_entries = [Entry("cl-infonce", spec) for spec, _ in levels]
    entries = unique([e for c in comparisons for e in (c.better, c.worse)] + [supervised] + level_entries)
    out.mkdir(parents=True, exist_ok=True)
    print(f"[claims] {len(entries)} runs x {len(seeds)} seeds", flush=True)
    results, failures = train_entries(user, entries, seeds, out, "claims")
    by_entry = {result.entry: result for result in results}
    base = user.load()
    rows = [summarise(result) for result in results] + raw_pixel_rows(base, out)

    report, table = ["# The paper's claims, measured", "", budget_line(base, seeds), ""], []
    for claim in ("C1", "C2", "C3"):
        lines, claim_rows, verdicts = comparison_section(claim, comparisons, by_entry)
        compared = unique([e for c in comparisons if c.claim == claim for e in (c.better, c.worse)])
        if claim == "C1" and supervised in by_entry:
            lines += supervised_gap(by_entry[supervised], compared, by_entry)
            compared.append(supervised)
        table += claim_rows
        report += [f"## {claim}: {STATEMENTS[claim]}", "", f"**Verdict: {combine(verdicts)}**", "", *lines, ""]
        shown = [summarise(by_entry[e]) for e in compared if e in by_entry]
        if shown:
            plot(shown, out / f"claims_{claim.lower()}.png")
    lines, claim_rows, verdicts = correlation_section(levels, by_entry, out)
    table += claim_rows
    report += [f"## C4: {STATEMENTS['C4']}", "", f"**Verdict: {combine(verdicts)}**", "", *lines, ""]
    report += ["## Every run", "", *results_lines(rows)]
    report += [f"FAILED: {failure}" for failure in failures]
    text = "\n".join(report)
    (out / "claims.md").write_text(text + "\n")
    with (out / "claims.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, ["claim", "comparison", "metric", "difference", "low", "high", "n", "verdict"])
        writer.writeheader()
        writer.writerows(table)
    return text, failures


def comparison_section(claim: str, comparisons: list[Comparison], by_entry: dict[Entry, Result]
                       ) -> tuple[list[str], list[dict], list[str]]:
    lines = ["| comparison | metric | paired difference [95% interval] | seeds | verdict |", "|---|---|---|---|---|"]
    rows, verdicts = [], []
    for c in (c for c in comparisons if c.claim == claim):
        name = f"{c.better.name} - {c.worse.name}"
        if c.better not in by_entry or c.worse not in by_entry:
            lines.append(f"| {name} | - | a run failed | - | not measured |")
            verdicts.append("not measured")
            continue
        for metric, label in METRICS:
            diff = paired_difference(by_entry[c.better].values(metric), by_entry[c.worse].values(metric))
            said = verdict(diff, +1)
            if metric == "linear_top1":
                verdicts.append(said)
            lines.append(f"| {name} | {label} | {interval(diff)} | {diff.n} | {said} |")
            rows.append(csv_row(claim, name, label, diff, said))
    return lines, rows, verdicts


def supervised_gap(supervised: Result, compared: list[Entry], by_entry: dict[Entry, Result]) -> list[str]:
    """How far each of C1's runs stays below the supervised reference (linear top-1, paired by seed)."""
    lines = ["", "Toward the supervised reference (linear top-1, paired): gap = supervised - method."]
    for entry in compared:
        if entry in by_entry:
            gap = paired_difference(supervised.values("linear_top1"), by_entry[entry].values("linear_top1"))
            lines.append(f"- {entry.name}: {interval(gap)}")
    return lines


def correlation_section(levels: list[tuple[str, dict]], by_entry: dict[Entry, Result], out: Path
                        ) -> tuple[list[str], list[dict], list[str]]:
    rows = []
    for spec, stats in levels:
        entry = Entry("cl-infonce", spec)
        if entry in by_entry:
            rows.append({**stats, **summarise(by_entry[entry]), "clusters": spec})
    lines = ["| clusters | K | I(Z;T) bits | H(Z|T) bits | linear top-1 | kNN top-1 |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['clusters']} | {r['num_clusters']} | {r['I_Z_T']:.3f} | {r['H_Z_given_T']:.3f} | "
              f"{r['linear_top1']:.4f} | {r['knn_top1']:.4f} |" for r in rows]
    rho = correlations(rows)
    plot_correlations(rows, rho, out / "claims_c4.png")
    lines += ["", "| measure | metric | Spearman rho [95% bootstrap interval over the cluster sets] | expected | "
              "verdict |", "|---|---|---|---|---|"]
    csv_rows, verdicts = [], []
    for key, label, sign in (("I_Z_T", "I(Z;T)", +1), ("H_Z_given_T", "H(Z|T)", -1)):
        for metric, metric_label in METRICS:
            value, low, high = rho[key, metric]
            correlation = Interval(value, low, high, len(rows))
            said = verdict(correlation, sign)
            if metric == "linear_top1":
                verdicts.append(said)
            lines.append(f"| {label} | {metric_label} | {value:+.2f} [{low:+.2f}, {high:+.2f}] | "
                         f"{'positive' if sign > 0 else 'negative'} | {said} |")
            csv_rows.append(csv_row("C4", f"Spearman {label}", metric_label, correlation, said))
    lines.append("")
    lines.append(f"Cluster sets: {len(rows)}; rho over the seed means of each set.")
    return lines, csv_rows, verdicts


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


def results_lines(rows: list[dict]) -> list[str]:
    lines = ["| run | linear top-1 | kNN top-1 | train time (s) | seeds |", "|---|---|---|---|---|"]
    lines += [f"| {r['name']} | {interval_text(r, 'linear_top1')} | {interval_text(r, 'knn_top1')} | "
              f"{interval_text(r, 'train_time_s', 0)} | {r['seeds']} |" for r in rows]
    return lines
