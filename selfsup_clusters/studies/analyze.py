"""The paper's analysis as a command: Cl-InfoNCE over every auxiliary cluster level of the dataset (WordNet
levels, attribute levels) and, optionally, synthetic cluster sets from the labels (merge:K, split:M); then the
representation quality against the clusters' information: I(Z;T) and H(Z|T) (T = the class label).

Tsai et al. report that clusters with more information about the labels (higher I(Z;T)) and less entropy given
the labels (lower H(Z|T)) give better representations. Each level is one run of the comparison suite, so
re-running skips finished levels.
"""

from __future__ import annotations

from pathlib import Path

from selfsup_clusters.core.errors import UserError
from selfsup_clusters.evaluation.intervals import Interval, correlation_interval, partial_spearman, spearman, verdict
from selfsup_clusters.evaluation.protocols import FAMILY, robustness
from selfsup_clusters.recipes import UserConfig
from selfsup_clusters.studies.report import cell
from selfsup_clusters.studies.suite import SCORES, Entry, Summary, summarise, train_entries
from selfsup_clusters.studies.tables import markdown_table, write_csv

COLUMNS = ("clusters", "num_clusters", "I_Z_T", "H_Z_given_T", "H_Z", "linear_top1", "linear_top1_low",
           "linear_top1_high", "knn_top1", "knn_top1_low", "knn_top1_high", "seeds")


def cluster_levels(user: UserConfig, extra: list[str]) -> list[tuple[str, dict]]:
    """(spec, statistics) of every distinct auxiliary level with at least 2 clusters (labels, superclasses,
    WordNet and attribute levels) and of the extra specs (synthetic sets, composites such as wordnet:7+wordnet:9);
    statistics of the training clusters against the labels."""
    from selfsup_clusters.clusters import cluster_statistics, parse_spec, statistics_table
    from selfsup_clusters.data import load_dataset
    from selfsup_clusters.training.run import build_clusters

    base = user.load("method=cl-infonce")
    data = load_dataset(base.data)
    levels, seen = [], set()
    for row in statistics_table(data.auxiliary, base.clusters.wordnet_dir):
        # WordNet depths that give the same partition as a shallower one add nothing; one cluster teaches nothing
        key = (row["num_clusters"], round(row["I_Z_T"], 6), round(row["H_Z_given_T"], 6))
        if row["num_clusters"] >= 2 and key not in seen:
            seen.add(key)
            levels.append((row["clusters"], row))
    for text in extra:
        spec = parse_spec(text)
        if spec.dynamic:
            raise UserError(f"analyze measures clusters fixed before training; '{spec}' has a k-means part, whose "
                            "clusters change while it trains: leave it out of --also")
        base.clusters.spec = str(spec)
        ids = build_clusters(base, data).assign(None).ids
        parts = [cluster_statistics(clustering, data.train.labels) for clustering in ids]
        levels.append((str(spec), weighted_statistics(parts, spec.clustering_weights())))
    return levels


def weighted_statistics(parts: list[dict], weights: list[float]) -> dict:
    """One row for a composite spec: each information measure as the weighted mean over its clusterings (as its
    loss is), K as "K1+K2"; a single clustering's row unchanged."""
    if len(parts) == 1:
        return parts[0]
    total = sum(weights)
    row = {key: sum(w * part[key] for w, part in zip(weights, parts, strict=True)) / total
           for key in ("I_Z_T", "H_Z_given_T", "H_Z")}
    return {**row, "num_clusters": "+".join(str(part["num_clusters"]) for part in parts)}


MEASURES = (("I_Z_T", "I(Z;T)", +1), ("H_Z_given_T", "H(Z|T)", -1))  # the paper's expected sign of each


def correlations(rows: list[dict], metric: str) -> dict[str, Interval]:
    """Spearman's rho of `metric` with each information measure over the cluster sets, alone and with the other
    measure partialled out ("H(Z|T) | I(Z;T)": does accuracy fall with H(Z|T) at fixed I(Z;T)?), each with its
    Fisher-z interval (intervals.correlation_interval)."""
    accuracy = [r[metric] for r in rows]
    found = {}
    for (key, label, _), (other, other_label, _) in zip(MEASURES, MEASURES[::-1], strict=True):
        values, others = [r[key] for r in rows], [r[other] for r in rows]
        found[label] = correlation_interval(spearman(values, accuracy), len(rows))
        found[f"{label} given {other_label}"] = correlation_interval(partial_spearman(accuracy, values, others),
                                                                 len(rows), controlled=1)
    return found


def family_correlations(scored: list[dict]) -> dict[str, dict[str, tuple[Interval, str]]]:
    """Each measure's rank correlations (`correlations`) under every protocol of the family the cluster sets were
    all scored with, each with its verdict against the paper's sign: {measure: {protocol: (rho, verdict)}}, the
    deciding protocol first."""
    signs = {label: sign for _, label, sign in MEASURES}
    found: dict[str, dict[str, tuple[Interval, str]]] = {}
    for protocol in FAMILY.values():
        if scored and all(protocol.metric in row for row in scored):
            for name, rho in correlations(scored, protocol.metric).items():
                found.setdefault(name, {})[protocol.name] = (rho, verdict(rho, signs[name.split(" given ")[0]]))
    return found


def points(measured: list[tuple[dict, Summary]]) -> list[dict]:
    """The cluster sets that have a linear top-1 score, as the points of the rank correlations and the figure: each
    set's statistics (`clusters`: its spec) with the seed means of every score of the protocol family it has."""
    return [{**stats, "clusters": summary.clusters,
             **{metric: summary.mean(metric) for metric in SCORES if summary.mean(metric) is not None}}
            for stats, summary in measured if summary.mean("linear_top1") is not None]


def analyze(user: UserConfig, extra: list[str], seeds: list[int], out: Path) -> tuple[str, list[str]]:
    """Train cl-infonce on every level, then write analysis.csv/.md/.png; the printed report and failures."""
    out.mkdir(parents=True, exist_ok=True)
    levels = dict(cluster_levels(user, extra))
    results, failures = train_entries(user, [Entry("cl-infonce", spec) for spec in levels], seeds, out, "analyze")
    measured = [(levels[result.entry.clusters], summarise(result)) for result in results]
    write_csv(out / "analysis.csv", COLUMNS, [{**stats, **summary.row()} for stats, summary in measured])
    lines = [markdown_table(["clusters", "K", "I(Z;T) bits", "H(Z|T) bits", "H(Z) bits", "linear top-1", "kNN top-1"],
                            [[s.clusters, stats["num_clusters"], f"{stats['I_Z_T']:.3f}", f"{stats['H_Z_given_T']:.3f}",
                              f"{stats['H_Z']:.3f}", cell(s.get("linear_top1")), cell(s.get("knn_top1"))]
                             for stats, s in measured])]
    scored = points(measured)
    lines.append("")
    found = family_correlations(scored)
    for protocol in dict.fromkeys(p for by_protocol in found.values() for p in by_protocol):
        parts = [f"{name} {by_protocol[protocol][0]:+.2f}" for name, by_protocol in found.items()]
        lines.append(f"Spearman rank correlation with {FAMILY[protocol].label} top-1 over {len(scored)} cluster sets "
                     f"(95% Fisher-z interval; 'A given B': B partialled out): {', '.join(parts)}")
    for name, by_protocol in found.items():
        said = {protocol: verdict_ for protocol, (_, verdict_) in by_protocol.items()}
        lines.append(f"{name}: {said['linear']} on the deciding linear probe, {robustness(said)}")
    lines.append("(the paper: positive for I(Z;T), negative for H(Z|T))")
    lines += [f"FAILED: {failure}" for failure in failures]
    report = "\n".join(lines)
    (out / "analysis.md").write_text(report + "\n")
    plot(scored, correlations(scored, "linear_top1"), out / "analysis.png")
    return report, failures


def plot(rows: list[dict], rho: dict[str, Interval], path: Path, raw_pixels: float | None = None) -> None:
    """Linear top-1 against each information measure, one point per cluster set; `raw_pixels`: raw pixels'
    linear top-1, drawn across (a point below it learned less than the pixels hold)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, (key, name, _), (_, other, _) in zip(axes, MEASURES, MEASURES[::-1], strict=True):
        ax.scatter([r[key] for r in rows], [r["linear_top1"] for r in rows])
        for r in rows:
            ax.annotate(r["clusters"], (r[key], r["linear_top1"]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
        if raw_pixels is not None:
            ax.axhline(raw_pixels, color="grey", linestyle="--", linewidth=1, label="raw pixels")
            ax.legend(loc="lower right", fontsize=8)
        ax.set_xlabel(f"{name} (bits)")
        ax.set_title(f"Spearman {rho[name].mean:+.2f}; at fixed {other} {rho[f'{name} given {other}'].mean:+.2f}",
                     fontsize=10)
    axes[0].set_ylabel("linear top-1")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
