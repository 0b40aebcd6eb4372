"""Cluster sources behind one interface, the builder that turns a spec (spec.py) into one, and the table of every
auxiliary level's statistics.

Fixed sources (labels, superclasses, WordNet, attributes, the synthetic merge/split sets) are computed when built,
so a bad spec or bad data fails before any training happens.

Unlabelled samples (label -1) under "labels", "superclass" and "wordnet:L" each get a cluster of their own, after
the labelled clusters: a clustering loss then treats them as instance discrimination (their only positives are
their own views) instead of lumping all unlabelled samples together.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from selfsup_clusters.data.base import AuxiliaryInfo

from .assignments import Assignments, ClusterError, as_numpy_ints
from .attributes import attribute_clusters, rank_attributes
from .distributed_kmeans import Shard, sharded_kmeans
from .kmeans import KMeansOptions, run_kmeans
from .spec import ClusterPart, ClusterSpec, parse_spec
from .stats import cluster_statistics
from .synthetic import merged_classes, split_classes
from .wordnet import DEFAULT_WORDNET_DIR, check_level, class_synsets, load_wordnet, wordnet_levels

logger = logging.getLogger(__name__)
_warned: set[str] = set()  # warnings already given in this process (compare and claims build a source per run)


class ClusterSource:
    """Gives every training sample a cluster id; `dynamic` sources (k-means) need features."""

    spec: ClusterSpec

    @property
    def dynamic(self) -> bool:
        return self.spec.dynamic

    @property
    def num_clusters(self) -> list[int]:
        """K of each clustering this source produces, known before training (heads are sized by it)."""
        raise NotImplementedError

    def assign(self, features: torch.Tensor | None) -> Assignments:
        raise NotImplementedError


class FixedClusterSource(ClusterSource):
    """Clusters known before training (labels, superclasses, a hierarchy level, attributes, synthetic sets)."""

    def __init__(self, part: ClusterPart, assignments: Assignments) -> None:
        self.spec = ClusterSpec((part,))
        self.assignments = assignments

    @property
    def num_clusters(self) -> list[int]:
        return self.assignments.num_clusters

    def assign(self, features: torch.Tensor | None = None) -> Assignments:
        return self.assignments


class KMeansSource(ClusterSource):
    """FAISS k-means over the current features, for one or several K."""

    def __init__(self, part: ClusterPart, num_samples: int, options: KMeansOptions) -> None:
        self.spec = ClusterSpec((part,))
        self.num_samples = num_samples
        self.options = options
        self._warned = False

    @property
    def num_clusters(self) -> list[int]:
        return list(self.spec.parts[0].numbers)

    def assign(self, features: torch.Tensor | Shard | None) -> Assignments:
        """FAISS's k-means over (N, d) features; over a `Shard` (under torchrun, every rank calling it with its
        own), k-means over the shards (distributed_kmeans.py)."""
        if features is None:
            raise ClusterError(f"'{self.spec}' clusters features: pass the memory bank (N, d) to assign()")
        rows = features.total if isinstance(features, Shard) else features.shape[0]
        if rows != self.num_samples:
            raise ClusterError(
                f"'{self.spec}' was built for N={self.num_samples} samples "
                f"but got {rows} feature rows"
            )
        cluster = sharded_kmeans if isinstance(features, Shard) else run_kmeans
        assignments = cluster(features, self.num_clusters, self.options, warn=not self._warned)
        self._warned = True  # re-clustering every epoch should not repeat the warning
        return assignments


class CompositeSource(ClusterSource):
    """Several sources at once ("wordnet:7+kmeans:500"): their clusterings side by side, in spec order. Fixed
    parts are computed once (when built); k-means parts cluster the features they are given. Without features
    (before the k-means warm-up) a k-means part gives every sample a cluster of its own, which is what
    Cl-InfoNCE trains with before its first clustering: instance discrimination."""

    def __init__(self, spec: ClusterSpec, sources: list[ClusterSource], num_samples: int) -> None:
        self.spec = spec
        self.sources = sources
        self.num_samples = num_samples

    @property
    def num_clusters(self) -> list[int]:
        return [k for source in self.sources for k in source.num_clusters]

    def assign(self, features: torch.Tensor | Shard | None) -> Assignments:
        parts = []
        for source in self.sources:
            if source.dynamic and features is None:
                instances = torch.arange(self.num_samples)
                parts.append(Assignments(ids=[instances] * len(source.num_clusters)))
            else:
                parts.append(source.assign(features))
        return concatenate(parts)


def concatenate(parts: list[Assignments]) -> Assignments:
    """The clusterings of several Assignments as one; centroids and distances only where every part has them,
    names where any part has them (numbers for the rest)."""
    def joined(field: str) -> list | None:
        values = [getattr(part, field) for part in parts]
        return None if any(v is None for v in values) else [item for value in values for item in value]

    names = None
    if any(part.names is not None for part in parts):
        names = [clustering for part in parts for clustering in
                 (part.names or [[str(i) for i in range(k)] for k in part.num_clusters])]
    return Assignments(ids=[ids for part in parts for ids in part.ids], centroids=joined("centroids"),
                       distances=joined("distances"), names=names)


def build_cluster_source(
    spec: str | ClusterSpec,
    aux: AuxiliaryInfo,
    *,
    kmeans_options: KMeansOptions | None = None,
    wordnet_dir: str = DEFAULT_WORDNET_DIR,
    warn: bool = True,
) -> ClusterSource | None:
    """The source for `spec` over the N training samples that `aux` describes; None for "none". `warn=False`
    silences the warning for a `wordnet:L` that some classes are shallower than (given once per process)."""
    spec = parse_spec(spec)
    if not spec.parts:
        return None
    sources = [_part_source(part, aux, kmeans_options, wordnet_dir, warn) for part in spec.parts]
    return sources[0] if len(sources) == 1 else CompositeSource(spec, sources, len(aux.labels))


def _part_source(part: ClusterPart, aux: AuxiliaryInfo, kmeans_options: KMeansOptions | None,
                 wordnet_dir: str, warn: bool = True) -> ClusterSource:
    labels = as_numpy_ints(aux.labels, "labels").reshape(-1)
    num_samples = len(labels)
    class_names = list(aux.class_names)
    if part.kind == "labels":
        return FixedClusterSource(part, _class_level_clusters(labels, list(range(len(class_names))), class_names))
    if part.kind == "instance":
        return FixedClusterSource(part, Assignments(ids=[torch.arange(num_samples)],
                                                    names=[[str(i) for i in range(num_samples)]]))
    if part.kind == "superclass":
        if aux.superclasses is None:
            raise ClusterError(
                "'superclass' needs a dataset whose classes have superclasses (CIFAR-100's 20 coarse classes); "
                "use cifar100 or another clusters spec"
            )
        superclasses = list(aux.superclasses)
        if len(superclasses) != len(class_names):
            raise ClusterError(f"got superclasses for {len(superclasses)} classes but {len(class_names)} classes")
        names = (list(aux.superclass_names) if aux.superclass_names is not None
                 else [f"superclass{i}" for i in range(max(superclasses, default=-1) + 1)])
        return FixedClusterSource(part, _class_level_clusters(labels, superclasses,
                                                              [names[s] for s in superclasses]))
    if part.kind == "kmeans":
        too_large = [k for k in part.numbers if k > num_samples]
        if too_large:
            raise ClusterError(
                f"'{part}' asks for K={too_large[0]} clusters but the training set has only N={num_samples} "
                f"samples; use K <= {num_samples}"
            )
        return KMeansSource(part, num_samples, kmeans_options or KMeansOptions())
    if part.kind == "wordnet":
        wordnet = load_wordnet(wordnet_dir)
        synsets = class_synsets(class_names, aux.wnids)
        shallower = check_level(part.number, synsets, class_names, wordnet)
        if shallower and warn and shallower not in _warned:
            _warned.add(shallower)
            logger.warning("%s", shallower)
        ancestors = [wordnet.ancestor_at_depth(offset, part.number) for offset in synsets]
        names = {offset: wordnet.lemmas(offset)[0] for offset in ancestors}
        return FixedClusterSource(part, _class_level_clusters(labels, ancestors,
                                                              [names[offset] for offset in ancestors]))
    if part.kind == "attributes":
        if aux.attributes is None:
            raise ClusterError(
                f"'{part}' needs per-sample attributes but this dataset has none; "
                "use a dataset with attribute columns (e.g. UT-Zappos50K, CUB) or another clusters spec"
            )
        if len(aux.attributes) != num_samples:
            raise ClusterError(f"got attributes for {len(aux.attributes)} samples but labels for {num_samples}")
        return FixedClusterSource(part, attribute_clusters(aux.attributes, part.number, aux.attribute_names))
    build = merged_classes if part.kind == "merge" else split_classes  # the synthetic sets
    seed = kmeans_options.seed if kmeans_options else 0
    return FixedClusterSource(part, build(labels, len(class_names), part.number, seed))


def statistics_table(aux: AuxiliaryInfo, wordnet_dir: str = DEFAULT_WORDNET_DIR) -> list[dict]:
    """Rows of cluster_statistics against the labels for every auxiliary level the data has: the labels, the
    superclasses, every WordNet level the classes map to (`wordnet:L`, L = 1..deepest class) and, with attributes,
    every `attributes:K` (K = 1..A). The `clusters` column holds the spec."""
    specs = ["labels"] + (["superclass"] if aux.superclasses is not None else [])
    try:
        synsets = class_synsets(aux.class_names, aux.wnids)
    except ClusterError as error:
        logger.info("no WordNet levels in the table: %s", error)
    else:
        if synsets:  # a dataset without classes has no levels
            specs += [f"wordnet:{level}" for level in wordnet_levels(synsets, load_wordnet(wordnet_dir))]
    if aux.attributes is not None:
        specs += [f"attributes:{k}" for k in range(1, aux.attributes.shape[1] + 1)]
    rows = []
    for spec in specs:
        ids = build_cluster_source(spec, aux, wordnet_dir=wordnet_dir, warn=False).assign(None).ids[0]
        rows.append({"clusters": spec, **cluster_statistics(ids, aux.labels)})
    return rows


def _class_level_clusters(
    labels: np.ndarray, class_keys: Sequence[int], key_names: Sequence[str]
) -> Assignments:
    """Map each sample's class to its class's cluster key (e.g. a WordNet ancestor).

    Keys are numbered in order of their first class, so the deepest WordNet
    level and "labels" give ids equal to the labels when every class is present.
    Keys of classes absent from `labels` are dropped to keep ids contiguous.
    """
    num_classes = len(class_keys)
    if labels.size and (labels.max() >= num_classes or labels.min() < -1):
        raise ClusterError(f"labels must lie in -1..{num_classes - 1} for {num_classes} classes")
    key_ids: dict[int, int] = {}
    class_to_key = np.array([key_ids.setdefault(key, len(key_ids)) for key in class_keys], dtype=np.int64)
    key_to_name = {key_id: key_names[index] for index, key_id in enumerate(class_to_key.tolist())}
    labelled = labels >= 0
    present, labelled_ids = np.unique(class_to_key[labels[labelled]], return_inverse=True)
    ids = np.empty(labels.size, dtype=np.int64)
    ids[labelled] = labelled_ids.reshape(-1)
    unlabelled = np.flatnonzero(~labelled)
    ids[unlabelled] = present.size + np.arange(unlabelled.size)
    names = [key_to_name[key_id] for key_id in present.tolist()] + [
        f"unlabelled:{i}" for i in unlabelled.tolist()
    ]
    return Assignments(ids=[torch.from_numpy(ids)], names=[names])


CLASS_LEVEL_KINDS = ("labels", "superclass", "wordnet", "merge", "split")  # their unlabelled samples: singletons


def refuse_uninformative(source: ClusterSource | None, aux: AuxiliaryInfo) -> None:
    """A ClusterError, before training, for a part of the spec whose clusters carry no information about the
    samples: one cluster for every sample (kmeans:1, one class, a WordNet level above every class, attribute
    columns with a single value), or attribute columns among the K chosen that have one value for every sample
    (named; attributes:K is then a smaller K under another name). Training on them would run as if they were
    information; `instance` (every sample its own cluster) is SimCLR's positives and passes."""
    if source is None:
        return
    labels = as_numpy_ints(aux.labels, "labels").reshape(-1)
    sources = source.sources if isinstance(source, CompositeSource) else [source]
    for part_source in sources:
        part = part_source.spec.parts[0]
        if part.kind == "kmeans":
            if 1 in part.numbers:
                raise ClusterError(f"'{part}': K=1 puts every sample in one cluster, which carries no information; "
                                   "use K >= 2")
            continue
        if part.kind == "attributes":
            _refuse_constant_columns(part, aux)
        ids = part_source.assign(None).ids[0].numpy()
        grouped = ids[labels >= 0] if part.kind in CLASS_LEVEL_KINDS and (labels >= 0).any() else ids
        if part.kind != "instance" and len(grouped) > 1 and len(np.unique(grouped)) < 2:
            what = "every labelled sample" if part.kind in CLASS_LEVEL_KINDS else "every sample"
            raise ClusterError(f"'{part}' puts {what} ({len(grouped)}) in one cluster, which carries no "
                               "information about the samples; choose a clusters spec with several clusters")


def _refuse_constant_columns(part: ClusterPart, aux: AuxiliaryInfo) -> None:
    table = as_numpy_ints(aux.attributes, "attributes")
    names = list(aux.attribute_names) if aux.attribute_names is not None else [f"a{j}" for j in range(table.shape[1])]
    chosen = rank_attributes(table)[: part.number]
    constant = [names[column] for column in chosen if len(np.unique(table[:, column])) < 2]
    if constant:
        varying = len(chosen) - len(constant)
        instead = f"use attributes:1..{varying}" if varying else "give the table columns whose values vary"
        raise ClusterError(f"'{part}' clusters by {len(constant)} attribute column(s) with one value for every "
                           f"sample ({', '.join(constant[:5])}{', ...' if len(constant) > 5 else ''}), which carry "
                           f"no information; {instead}")
