"""The paper's synthetic cluster sets, built from the labels T (Tsai et al., Sec. 4 analysis).

merge:K  classes randomly merged into K groups: H(Z|T) = 0, I(Z;T) falls as K shrinks.
split:M  every class split at random into M parts: I(Z;T) = H(T) stays, H(Z|T) = log2 M rises.
Unlabelled samples (-1) each get a cluster of their own, as for the other label-derived sources.
"""

from __future__ import annotations

import numpy as np
import torch

from .assignments import Assignments, ClusterError


def merged_classes(labels: np.ndarray, num_classes: int, groups: int, seed: int = 0) -> Assignments:
    if not 1 <= groups <= num_classes:
        raise ClusterError(f"merge:{groups} needs 1 <= K <= {num_classes} (the number of classes)")
    rng = np.random.default_rng(seed)
    group_of_class = np.empty(num_classes, dtype=np.int64)
    group_of_class[rng.permutation(num_classes)] = np.arange(num_classes) % groups  # near-equal group sizes
    return _with_unlabelled(labels, group_of_class[np.clip(labels, 0, None)], groups)


def split_classes(labels: np.ndarray, num_classes: int, parts: int, seed: int = 0) -> Assignments:
    rng = np.random.default_rng(seed)
    part = rng.integers(0, parts, size=labels.shape[0])
    return _with_unlabelled(labels, np.clip(labels, 0, None) * parts + part, num_classes * parts)


def _with_unlabelled(labels: np.ndarray, ids: np.ndarray, k: int) -> Assignments:
    unlabelled = np.flatnonzero(labels < 0)
    ids = ids.copy()
    ids[unlabelled] = k + np.arange(unlabelled.size)
    return Assignments(ids=[torch.from_numpy(ids)], names=[[str(i) for i in range(k + unlabelled.size)]])
