"""Information statistics of a clustering Z against labels T, in bits.

All quantities use empirical counts: p(z) = n_z / N, and
H(Z) = -sum_z p(z) log2 p(z), H(Z|T) = H(Z, T) - H(T),
I(Z; T) = H(Z) + H(T) - H(Z, T). The paper's reading: good auxiliary
clusters have high I(Z; T) (they carry label information) and low H(Z|T).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score

from .assignments import ClusterError, as_numpy_ints

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


def batch_mates(ids: torch.Tensor) -> torch.Tensor:
    """The mean over a batch's samples of how many other samples of the batch share the sample's cluster id: the
    positives a clustering adds to an anchor beyond its own views. (B,) int64 -> 0-d float tensor on ids' device
    (a B x B comparison: no host synchronisation on a GPU)."""
    return ((ids[:, None] == ids[None, :]).sum() - ids.numel()).float() / ids.numel()


def _pair(z: IntArray, t: IntArray) -> tuple[np.ndarray, np.ndarray]:
    z, t = as_numpy_ints(z, "cluster ids").reshape(-1), as_numpy_ints(t, "labels").reshape(-1)
    if z.shape != t.shape:
        raise ClusterError(f"cluster ids and labels must have the same length, got {z.size} and {t.size}")
    return z, t
