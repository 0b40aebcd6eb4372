"""Information statistics of a clustering Z against labels T, in bits.

All quantities use empirical counts: p(z) = n_z / N, and
H(Z) = -sum_z p(z) log2 p(z), H(Z|T) = H(Z, T) - H(T),
I(Z; T) = H(Z) + H(T) - H(Z, T). The paper's reading: good auxiliary
clusters have high I(Z; T) (they carry label information) and low H(Z|T).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
import torch
from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score

from .assignments import ClusterError, as_numpy_ints

logger = logging.getLogger(__name__)

IntArray = torch.Tensor | np.ndarray | Sequence[int]


def entropy(z: IntArray) -> float:
    """H(Z) in bits."""
    z = as_numpy_ints(z, "cluster ids")
    if z.size == 0:
        return 0.0
    _, counts = np.unique(z, return_counts=True)
    p = counts / z.size
    return max(0.0, float(-(p * np.log2(p)).sum()))  # max() turns -0.0 into 0.0


def joint_entropy(z: IntArray, t: IntArray) -> float:
    """H(Z, T) in bits."""
    z, t = _pair(z, t)
    return entropy(np.unique(np.stack([z, t], axis=1), axis=0, return_inverse=True)[1].reshape(-1))


def conditional_entropy(z: IntArray, t: IntArray) -> float:
    """H(Z | T) in bits: what is left to know about the cluster once the label is known."""
    return max(0.0, joint_entropy(z, t) - entropy(t))


def mutual_information(z: IntArray, t: IntArray) -> float:
    """I(Z; T) in bits."""
    return max(0.0, entropy(z) + entropy(t) - joint_entropy(z, t))


def cluster_statistics(z: IntArray, t: IntArray) -> dict[str, float | int]:
    """Sizes and information of clustering `z` against labels `t`.

    Samples labelled -1 (unlabelled) count for num_clusters, sizes and H_Z;
    the label-based values (H_Z_given_T, I_Z_T, NMI, AMI) use labelled samples
    only and are NaN when there are none.
    """
    z, t = _pair(z, t)
    _, sizes = np.unique(z, return_counts=True)
    labelled = t >= 0
    zl, tl = z[labelled], t[labelled]
    has_labels = bool(labelled.any())
    return {
        "num_clusters": int(sizes.size),
        "largest_cluster": int(sizes.max()) if sizes.size else 0,
        "smallest_cluster": int(sizes.min()) if sizes.size else 0,
        "H_Z": entropy(z),
        "H_Z_given_T": conditional_entropy(zl, tl) if has_labels else math.nan,
        "I_Z_T": mutual_information(zl, tl) if has_labels else math.nan,
        "NMI": float(normalized_mutual_info_score(tl, zl)) if has_labels else math.nan,
        "AMI": float(adjusted_mutual_info_score(tl, zl)) if has_labels else math.nan,
    }


def format_table(rows: list[dict]) -> str:
    """Plain aligned text table: columns in order of first appearance, numbers
    right-aligned (floats with 3 decimals), text left-aligned."""
    if not rows:
        return ""
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    cells = [[_format_cell(row.get(column, "")) for column in columns] for row in rows]
    numeric = [all(_is_number(row.get(column)) for row in rows if column in row) for column in columns]
    widths = [max(len(column), *(len(line[i]) for line in cells)) for i, column in enumerate(columns)]

    def render(values: list[str]) -> str:
        return "  ".join(
            value.rjust(width) if is_number else value.ljust(width)
            for value, width, is_number in zip(values, widths, numeric, strict=True)
        ).rstrip()

    lines = [render(columns), render(["-" * width for width in widths])]
    return "\n".join(lines + [render(line) for line in cells])


def statistics_table(
    labels: IntArray,
    class_names: Sequence[str],
    wnids: Sequence[str] | None = None,
    attributes: torch.Tensor | np.ndarray | None = None,
    attribute_names: Sequence[str] | None = None,
    wordnet_dir: str | None = None,
    superclasses: Sequence[int] | None = None,
    superclass_names: Sequence[str] | None = None,
) -> list[dict]:
    """Rows of cluster_statistics for `labels`, the superclasses (where the
    dataset has them), every WordNet level the classes map to (`wordnet:L`,
    L = 1..deepest class) and, with attributes, every `attributes:K`
    (K = 1..A). The `clusters` column holds the spec."""
    from .sources import build_cluster_source  # sources imports this module
    from .wordnet import DEFAULT_WORDNET_DIR, class_synsets, load_wordnet, wordnet_levels

    wordnet_dir = wordnet_dir or DEFAULT_WORDNET_DIR
    labels = torch.as_tensor(as_numpy_ints(labels, "labels"))
    specs = ["labels"] + (["superclass"] if superclasses is not None else [])
    try:
        synsets = class_synsets(class_names, wnids)
    except ClusterError as error:
        logger.info("no WordNet levels in the table: %s", error)
    else:
        if synsets:  # a dataset without classes has no levels
            specs += [f"wordnet:{level}" for level in wordnet_levels(synsets, load_wordnet(wordnet_dir))]
    if attributes is not None:
        specs += [f"attributes:{k}" for k in range(1, attributes.shape[1] + 1)]
    rows = []
    for spec in specs:
        source = build_cluster_source(
            spec,
            labels=labels,
            class_names=list(class_names),
            wnids=None if wnids is None else list(wnids),
            attributes=None if attributes is None else torch.as_tensor(attributes),
            attribute_names=None if attribute_names is None else list(attribute_names),
            wordnet_dir=wordnet_dir,
            superclasses=superclasses,
            superclass_names=superclass_names,
        )
        assert source is not None  # only "none" builds no source
        rows.append({"clusters": spec, **cluster_statistics(source.assign(None).ids[0], labels)})
    return rows


def _pair(z: IntArray, t: IntArray) -> tuple[np.ndarray, np.ndarray]:
    z, t = as_numpy_ints(z, "cluster ids").reshape(-1), as_numpy_ints(t, "labels").reshape(-1)
    if z.shape != t.shape:
        raise ClusterError(f"cluster ids and labels must have the same length, got {z.size} and {t.size}")
    return z, t


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _format_cell(value: object) -> str:
    if isinstance(value, (float, np.floating)):
        return f"{value:.3f}"
    return str(value)
