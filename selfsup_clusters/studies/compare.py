"""The comparison suite: train several methods (and seeds), each at its own recipe with the same shared options, one
run folder each under DIR (so TensorBoard overlays them), and tabulate their final evaluation with intervals.

DIR/<method>[_<clusters>]/seed<S>/   each run (final.json once it finished)
DIR/raw_pixels.json                  the reference rows: kNN and linear probe on raw pixels
DIR/results.csv, results.md          one row per method and cluster source: mean and 95% t-interval over seeds,
                                     and each row's paired difference to the first row (same seeds)
DIR/results.png                      linear and kNN top-1 per row, with the intervals as error bars (none for
                                     one seed)

Re-running the same command skips finished runs and resumes interrupted ones. The runs are suite.py's (entries,
training, summaries with intervals); report.py writes the results files.
"""

from __future__ import annotations

from pathlib import Path

from selfsup_clusters.clusters import parse_spec, split_spec_list
from selfsup_clusters.core.errors import UserError
from selfsup_clusters.evaluation.intervals import SeedRule
from selfsup_clusters.methods.registry import method_class
from selfsup_clusters.recipes import UserConfig
from selfsup_clusters.studies.report import write_results
from selfsup_clusters.studies.suite import Entry, Summary, hold_rule, raw_pixel_rows, summarise, train_until_decided


def parse_clusters_for(text: str | None) -> dict[str, list[str]]:
    """"cl-infonce=wordnet:8,pcl=kmeans:25,50,100" -> {"cl-infonce": ["wordnet:8"], "pcl": ["kmeans:25,50,100"]};
    "|" gives one method several rows ("cl-infonce=wordnet:7|wordnet:9")."""
    specs: dict[str, list[str]] = {}
    for item in split_spec_list(text):
        method, equals, spec = item.partition("=")
        if not equals:
            raise UserError(f"--clusters-for {text!r}: expected METHOD=SPEC[,METHOD=SPEC...], "
                            "e.g. cl-infonce=wordnet:8,pcl=kmeans:25,50,100")
        specs[method.strip()] = [str(parse_spec(s)) for s in spec.split("|")]
    return specs


def plan(methods: list[str], clusters_for: dict[str, list[str]], shared_clusters: str) -> list[Entry]:
    """The rows to run; methods that learn from clusters need a source (theirs, or the shared --clusters)."""
    for method in methods:
        method_class(method)  # unknown names fail here, listing the valid ones
    unused = set(clusters_for) - set(methods)
    if unused:
        raise UserError(f"--clusters-for names {', '.join(sorted(unused))}, which is not in --methods")
    entries = []
    for method in methods:
        if not method_class(method).needs_cluster_spec:
            if method in clusters_for:
                raise UserError(f"{method} does not learn from clusters; drop it from --clusters-for")
            entries.append(Entry(method))
            continue
        specs = clusters_for.get(method) or ([shared_clusters] if shared_clusters != "none" else [])
        if not specs:
            raise UserError(f"{method} learns from clusters; give it a source, e.g. --clusters-for "
                            f"{method}=wordnet:8 (or kmeans:100, labels)")
        entries.extend(Entry(method, str(parse_spec(spec))) for spec in specs)
    return entries


def compare(user: UserConfig, methods: list[str], clusters_for: dict[str, list[str]], rule: SeedRule, first: int,
            out: Path) -> tuple[str, list[str]]:
    """Train every row and seed (skipping finished runs), write the results; the table and the failures. With a
    sequential `rule` (--seeds 3..10) a row gets more seeds while its paired difference to the first row is
    undecided."""
    base = user.load()
    entries = plan(methods, clusters_for, base.clusters.spec)
    hold_rule(out, rule)
    out.mkdir(parents=True, exist_ok=True)
    results, failures = train_until_decided(user, entries, [(entry, entries[0]) for entry in entries[1:]], rule,
                                            first, out)
    rows = [summarise(result, results[0], rule) for result in results]
    rows += [Summary.reference(row) for row in raw_pixel_rows(base, out)]
    seeds = sorted({seed for result in results for seed in result.finals})
    return write_results(rows, out, base, seeds, failures, rule), failures
