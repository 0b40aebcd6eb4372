"""Cluster sources behind one interface, and the builder that parses a spec.

Specs: "none", "labels", "superclass", "kmeans:K" or "kmeans:K1,K2,...",
"wordnet:LEVEL", "attributes:K", and the synthetic "merge:K" / "split:M"
(synthetic.py). Fixed sources (labels, superclasses,
WordNet, attributes) are computed when built, so a bad spec or bad data fails
before any training happens.

Unlabelled samples (label -1) under "labels", "superclass" and "wordnet:L" each get a
cluster of their own, after the labelled clusters: a clustering loss then
treats them as instance discrimination (their only positives are their own
views) instead of lumping all unlabelled samples together.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import torch

from .assignments import Assignments, ClusterError, as_numpy_ints
from .attributes import attribute_clusters
from .kmeans import KMeansOptions, run_kmeans
from .synthetic import merged_classes, split_classes
from .wordnet import DEFAULT_WORDNET_DIR, class_synsets, load_wordnet

SPEC_HELP = ("use one of: none, labels, superclass, kmeans:K[,K2,...], wordnet:LEVEL, attributes:K, merge:K, "
             "split:M")
_INTEGER = re.compile(r"^\d+$")


class ClusterSource:
    """Gives every training sample a cluster id; `dynamic` sources need features."""

    spec: str
    dynamic: bool

    @property
    def num_clusters(self) -> list[int]:
        """K of each clustering this source produces, known before training (heads are sized by it)."""
        raise NotImplementedError

    def assign(self, features: torch.Tensor | None) -> Assignments:
        raise NotImplementedError


class FixedClusterSource(ClusterSource):
    """Clusters known before training (labels, superclasses, a hierarchy level, attributes)."""

    dynamic = False

    def __init__(self, spec: str, assignments: Assignments) -> None:
        self.spec = spec
        self.assignments = assignments

    @property
    def num_clusters(self) -> list[int]:
        return self.assignments.num_clusters

    def assign(self, features: torch.Tensor | None = None) -> Assignments:
        return self.assignments


class KMeansSource(ClusterSource):
    """FAISS k-means over the current features, for one or several K."""

    dynamic = True

    def __init__(self, spec: str, ks: list[int], num_samples: int, options: KMeansOptions) -> None:
        self.spec = spec
        self.ks = ks
        self.num_samples = num_samples
        self.options = options
        self._warned = False

    @property
    def num_clusters(self) -> list[int]:
        return list(self.ks)

    def assign(self, features: torch.Tensor | None) -> Assignments:
        if features is None:
            raise ClusterError(f"'{self.spec}' clusters features: pass the memory bank (N, d) to assign()")
        if features.shape[0] != self.num_samples:
            raise ClusterError(
                f"'{self.spec}' was built for N={self.num_samples} samples "
                f"but got {features.shape[0]} feature rows"
            )
        assignments = run_kmeans(features, self.ks, self.options, warn=not self._warned)
        self._warned = True  # re-clustering every epoch should not repeat the warning
        return assignments


def build_cluster_source(
    spec: str,
    *,
    labels: torch.Tensor,
    class_names: list[str],
    wnids: list[str] | None = None,
    attributes: torch.Tensor | None = None,
    attribute_names: list[str] | None = None,
    kmeans_options: KMeansOptions | None = None,
    wordnet_dir: str = DEFAULT_WORDNET_DIR,
    superclasses: Sequence[int] | None = None,
    superclass_names: Sequence[str] | None = None,
) -> ClusterSource | None:
    """The source for `spec` over the N training samples of `labels` ((N,), -1 = unlabelled).

    `superclasses` gives each class its superclass id (CIFAR-100's coarse labels), `superclass_names` their names.
    """
    kind, _, argument = spec.strip().lower().partition(":")
    train_labels = as_numpy_ints(labels, "labels").reshape(-1)
    num_samples = len(train_labels)
    if kind == "none" and not argument:
        return None
    if kind == "labels" and not argument:
        return FixedClusterSource(
            "labels", _class_level_clusters(train_labels, list(range(len(class_names))), list(class_names))
        )
    if kind == "superclass" and not argument:
        if superclasses is None:
            raise ClusterError(
                "'superclass' needs a dataset whose classes have superclasses (CIFAR-100's 20 coarse classes); "
                "use cifar100 or another clusters spec"
            )
        if len(superclasses) != len(class_names):
            raise ClusterError(f"got superclasses for {len(superclasses)} classes but {len(class_names)} classes")
        names = (list(superclass_names) if superclass_names is not None
                 else [f"superclass{i}" for i in range(max(superclasses, default=-1) + 1)])
        return FixedClusterSource(
            "superclass", _class_level_clusters(train_labels, list(superclasses), [names[s] for s in superclasses])
        )
    if kind == "kmeans":
        ks = _integers(spec, argument)
        too_large = [k for k in ks if k > num_samples]
        if too_large:
            raise ClusterError(
                f"'{spec}' asks for K={too_large[0]} clusters but the training set has only N={num_samples} "
                f"samples; use K <= {num_samples}"
            )
        return KMeansSource(
            f"kmeans:{','.join(map(str, ks))}", ks, num_samples, kmeans_options or KMeansOptions()
        )
    if kind == "wordnet":
        (level,) = _integers(spec, argument, many=False)
        wordnet = load_wordnet(wordnet_dir)
        ancestors = [wordnet.ancestor_at_depth(offset, level) for offset in class_synsets(class_names, wnids)]
        names = {offset: wordnet.lemmas(offset)[0] for offset in ancestors}
        return FixedClusterSource(
            f"wordnet:{level}",
            _class_level_clusters(train_labels, ancestors, [names[offset] for offset in ancestors]),
        )
    if kind == "attributes":
        (k,) = _integers(spec, argument, many=False)
        if attributes is None:
            raise ClusterError(
                f"'{spec}' needs per-sample attributes but this dataset has none; "
                "use a dataset with attribute columns (e.g. UT-Zappos50K, CUB) or another clusters spec"
            )
        if len(attributes) != num_samples:
            raise ClusterError(f"got attributes for {len(attributes)} samples but labels for {num_samples}")
        return FixedClusterSource(f"attributes:{k}", attribute_clusters(attributes, k, attribute_names))
    if kind in ("merge", "split"):
        (k,) = _integers(spec, argument, many=False)
        build = merged_classes if kind == "merge" else split_classes
        seed = kmeans_options.seed if kmeans_options else 0
        return FixedClusterSource(f"{kind}:{k}", build(train_labels, len(class_names), k, seed))
    raise ClusterError(f"unknown clusters spec {spec!r}; {SPEC_HELP}")


def _integers(spec: str, argument: str, many: bool = True) -> list[int]:
    parts = argument.split(",") if many else [argument]
    if not all(_INTEGER.match(part.strip()) and int(part) >= 1 for part in parts):
        expected = "positive integers separated by commas" if many else "one positive integer"
        raise ClusterError(f"malformed clusters spec {spec!r}: expected {expected} after ':'; {SPEC_HELP}")
    return [int(part) for part in parts]


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
