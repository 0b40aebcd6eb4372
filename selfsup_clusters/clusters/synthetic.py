"""The paper's synthetic cluster sets, built from the labels T (Tsai et al., Sec. 4 analysis).

merge:K  classes merged into K groups: H(Z|T) = 0, I(Z;T) falls as K shrinks. For one seed the merges form
         a hierarchy: one seeded permutation of the classes orders them, and merge:K-1 joins two adjacent
         groups of merge:K (the adjacent pair of smallest combined size, leftmost on ties). So for any
         K1 < K2 every merge:K2 group lies inside one merge:K1 group, and comparing K1 with K2 changes only
         how coarse the clusters are, not which classes they mix. Equal sizes cannot be nested for every K
         (5+5 classes for K=2 cannot be refined into 3+3+4 for K=3); these blocks stay within a factor of
         two of each other (checked for up to 300 classes), e.g. 4, 4, 2 classes for merge:3 of 10.
split:M  every class split at random into M parts: I(Z;T) = H(T) stays, H(Z|T) = log2 M rises
         (nested under the labels by construction).
Unlabelled samples (-1) each get a cluster of their own, as for the other label-derived sources.
"""

from __future__ import annotations

import numpy as np
import torch

from .assignments import Assignments, ClusterError


def merged_classes(labels: np.ndarray, num_classes: int, groups: int, seed: int = 0) -> Assignments:
    """merge:`groups`: class c of `labels` (n,) goes to group g(c), exactly `groups` non-empty groups; nested
    across `groups` for one `seed` (module docstring). Unlabelled samples get clusters groups, groups+1, ..."""
    if not 1 <= groups <= num_classes:
        raise ClusterError(f"merge:{groups} needs 1 <= K <= {num_classes} (the number of classes)")
    order = np.random.default_rng(seed).permutation(num_classes)  # the same order for every K: nesting
    group_of_class = np.empty(num_classes, dtype=np.int64)
    group_of_class[order] = np.repeat(np.arange(groups), _merged_block_sizes(num_classes, groups))
    return _with_unlabelled(labels, group_of_class[np.clip(labels, 0, None)], groups)


def _merged_block_sizes(num_classes: int, groups: int) -> np.ndarray:
    """Sizes of the `groups` contiguous blocks of the permuted classes: start from one block per class and
    merge the adjacent pair of smallest combined size (leftmost on ties) until `groups` remain. The sequence
    of merges depends on num_classes only, so each K's blocks are unions of K+1's. (Balanced floor(p*K/C)
    blocks are not nested for every pair, e.g. C=10, K=3 and K=4.)"""
    sizes = np.ones(num_classes, dtype=np.int64)
    while sizes.size > groups:
        i = int(np.argmin(sizes[:-1] + sizes[1:]))  # argmin takes the first of equal sums
        sizes = np.concatenate([sizes[:i], [sizes[i] + sizes[i + 1]], sizes[i + 2 :]])
    return sizes


def split_classes(labels: np.ndarray, num_classes: int, parts: int, seed: int = 0) -> Assignments:
    rng = np.random.default_rng(seed)
    part = rng.integers(0, parts, size=labels.shape[0])
    return _with_unlabelled(labels, np.clip(labels, 0, None) * parts + part, num_classes * parts)


def _with_unlabelled(labels: np.ndarray, ids: np.ndarray, k: int) -> Assignments:
    unlabelled = np.flatnonzero(labels < 0)
    ids = ids.copy()
    ids[unlabelled] = k + np.arange(unlabelled.size)
    return Assignments(ids=[torch.from_numpy(ids)], names=[[str(i) for i in range(k + unlabelled.size)]])
