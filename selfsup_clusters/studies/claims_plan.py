"""What `claims` trains: C1-C3's paired comparisons, the k-means loop's (K), the supervised reference, C4's cluster
sets with their statistics, and the run that checks the curve's shortcut; the budget's cluster specs checked
against the dataset before anything trains. claims.py trains the plan, claims_report.py reports on it.
"""

from __future__ import annotations

from dataclasses import dataclass

from selfsup_clusters.config import Config
from selfsup_clusters.core.errors import UserError, first_line
from selfsup_clusters.recipes import UserConfig
from selfsup_clusters.studies.analyze import cluster_levels
from selfsup_clusters.studies.suite import Entry


@dataclass(frozen=True)
class Comparison:
    """One paired comparison of a claim: `better` is expected to beat `worse`; `role`: what it isolates (the k-means
    loop's comparisons)."""

    claim: str
    better: Entry
    worse: Entry
    role: str = ""

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
    cl_aux, cl_kmeans, simclr = Entry("cl-infonce", aux), Entry("cl-infonce", f"kmeans:{k}"), Entry("simclr")
    comparisons = [
        Comparison("C1", cl_aux, simclr),
        Comparison("C1", cl_aux, Entry("moco")),
        Comparison("C2", cl_kmeans, Entry("pcl", f"kmeans:{k}")),
        Comparison("C3", cl_aux, Entry("ce", aux)),
        *loop_comparisons(cfg, cl_kmeans, simclr),
        *family_comparisons(k, cl_kmeans, simclr),
    ]
    return Plan(comparisons, levels, shortcut_entry(cfg, cl_aux), tuple(cfg.claims.level_overrides))


def loop_comparisons(cfg: Config, cl_kmeans: Entry, simclr: Entry) -> list[Comparison]:
    """The k-means loop against SimCLR, taken apart: instance clusters (every image its own cluster) are SimCLR's
    positives at Cl-InfoNCE's recipe, so instance - simclr is the recipe, and k-means - instance the clusters: at
    claims.kmeans, and at claims.kmeans_mates, whose larger clusters give an anchor several mates in its batch."""
    instance, mates = Entry("cl-infonce", "instance"), Entry("cl-infonce", f"kmeans:{cfg.claims.kmeans_mates}")
    return [Comparison("K", cl_kmeans, simclr, "the whole loop"),
            Comparison("K", instance, simclr, "the recipe"),
            Comparison("K", cl_kmeans, instance, f"the clusters (K={cfg.claims.kmeans})"),
            Comparison("K", mates, instance, f"the clusters with mates (K={cfg.claims.kmeans_mates})")]


def family_comparisons(k: int, cl_kmeans: Entry, simclr: Entry) -> list[Comparison]:
    """The clustering family at one budget and one K (claims.kmeans): Cl-InfoNCE on k-means against PCL,
    DeepCluster-v2 (its k-means from the first epoch, as its authors: no warm-up) and SwAV (K prototypes), with
    SimCLR as the instance-only reference."""
    others = [("PCL", Entry("pcl", f"kmeans:{k}")),
              ("DeepCluster-v2", Entry("deepcluster-v2", f"kmeans:{k}", ("clusters.warmup=0",))),
              ("SwAV", Entry("swav", "none", (f"method_args.num_prototypes={k}",))),
              ("SimCLR, instances only", simclr)]
    return [Comparison("F", cl_kmeans, other, role) for role, other in others]


def check_sources(user: UserConfig, offered: list[str]) -> None:
    """claims.auxiliary and claims.kmeans must apply to the dataset (WordNet ids for wordnet:L, attributes for
    attributes:K, K <= the training images)."""
    from selfsup_clusters.clusters import ClusterError
    from selfsup_clusters.data import load_dataset
    from selfsup_clusters.training.run import build_clusters

    cfg = user.load("method=cl-infonce")
    data = load_dataset(cfg.data)
    for key, spec in (("claims.auxiliary", cfg.claims.auxiliary), ("claims.kmeans", f"kmeans:{cfg.claims.kmeans}"),
                      ("claims.kmeans_mates", f"kmeans:{cfg.claims.kmeans_mates}")):
        cfg.clusters.spec = spec
        try:
            build_clusters(cfg, data)
        except ClusterError as error:
            choices = f"one this dataset offers: {', '.join(offered)}" if key == "claims.auxiliary" else \
                f"K <= {len(data.train)}"
            raise UserError(f"{key}={spec.removeprefix('kmeans:')} does not "
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
