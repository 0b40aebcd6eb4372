"""`selfsup-clusters claims`: the paper's four claims as one command, each with its numbers, a 95% interval, a
verdict, and the same at every budget along training (the curve).

C1  Cl-InfoNCE on auxiliary clusters beats SimCLR and MoCo, and moves toward the supervised reference.
C2  Cl-InfoNCE on k-means clusters beats PCL (same K, same budget).
C3  Cl-InfoNCE beats the cross-entropy model that predicts the same clusters.
C4  Quality rises with I(Z;T) and falls with H(Z|T), over the data's hierarchy levels and synthetic sets.

K   The k-means loop against SimCLR, taken apart into the recipe (instance clusters: SimCLR's positives at
    Cl-InfoNCE's recipe) and the clusters (k-means minus instance, at claims.kmeans and claims.kmeans_mates).

C1-C3 and K are paired differences per seed (same seed = same data order and initialisation) with a Student-t
interval - with seeds until decided (--seeds 3..10, claims.seeds), repeated intervals valid under that stopping
(intervals.SeedRule); C4 is Spearman's rank correlation over the cluster sets, each measure with the other
partialled out (the synthetic splits raise H(Z|T) at fixed I(Z;T)), with a Fisher-z interval. A verdict is
"equivalent" when a paired difference's interval lies inside +-claims.margin, else "agrees" when the interval lies
on the paper's side of 0, "disagrees" when it lies on the other side, "inconclusive" when it contains 0. Linear
top-1 (the paper's metric) decides; kNN is shown beside it. Raw pixels' level stands beside every run: a budget
where it beats every representation has not learned enough to decide anything.

A budget is a plain config file, configs/claims_<budget>.yaml (smoke: seconds, for tests; cpu: about 90 minutes
on a 2-core CPU with 3 seeds; gpu: minutes on one H200). Its `eval.at` epochs are the curve's points; C4's sets
that no other claim uses train on the first `claims.level_seeds` seeds. Every run is one run of the comparison
suite, trained once even when several claims use it, so re-running skips what finished.

DIR/claims.md, claims.csv   the claims at the full budget: statement, numbers with intervals, verdict
DIR/claims_runs.csv         every run's linear and kNN top-1 with intervals, raw pixels included
DIR/curve.csv, claims_curve.png   every claim (and each run's margin to raw pixels) at each budget
DIR/claims_c1.png ... c4    one figure per claim, raw pixels' level drawn across

This module trains the runs of claims_plan.py's plan; claims_report.py writes the report and its files.
"""

from __future__ import annotations

from pathlib import Path

from selfsup_clusters.config import CONFIG_DIR
from selfsup_clusters.core.errors import UserError
from selfsup_clusters.evaluation.intervals import SeedRule
from selfsup_clusters.recipes import UserConfig
from selfsup_clusters.studies.claims_plan import plan_claims
from selfsup_clusters.studies.claims_report import report
from selfsup_clusters.studies.curve import run_curve
from selfsup_clusters.studies.suite import hold_rule, raw_pixel_rows, train_runs, train_until_decided

BUDGETS = ("smoke", "cpu", "gpu")


def budget_config(budget: str) -> str:
    if budget not in BUDGETS:
        raise UserError(f"unknown budget {budget!r}; use one of: {', '.join(BUDGETS)}")
    return str(CONFIG_DIR / f"claims_{budget}.yaml")


def claims(user: UserConfig, rule: SeedRule, first: int, out: Path) -> tuple[str, list[str]]:
    """Train every run the claims need (each once; C1-C3's and K's until decided under a sequential `rule`), then
    write the reports, the curve and the figures."""
    plan, base = plan_claims(user), user.load()
    hold_rule(out, rule)
    seeds = list(range(first, first + rule.low))
    level_seeds = seeds[: base.claims.level_seeds] if base.claims.level_seeds else seeds
    out.mkdir(parents=True, exist_ok=True)
    fixed = [(plan.level_entries(), level_seeds), ([plan.shortcut] if plan.shortcut else [], seeds[:1])]
    print(f"[claims] {len(plan.main_entries()) * len(seeds) + sum(len(e) * len(s) for e, s in fixed)} runs"
          + (f", then more seeds for undecided comparisons ({rule.describe()})" if rule.sequential else ""), flush=True)
    results, failures = train_until_decided(user, plan.main_entries(),
                                            [(c.better, c.worse) for c in plan.comparisons], rule, first, out,
                                            "claims")
    found, failed = train_runs(user, [(entry, group) for entries, group in fixed for entry in entries], out, "claims")
    results, failures = results + found, failures + failed
    by_entry = {result.entry: result for result in results if result.finals}  # diverged runs: in `failures`
    raw = raw_pixel_rows(base, out)
    curves = {entry: {seed: run_curve(out / entry.folder / f"seed{seed}") for seed in result.finals}
              for entry, result in by_entry.items()}
    return report(plan, base, rule, level_seeds, by_entry, raw, curves, failures, out), failures
