"""Clusters from per-sample attributes (UT-Zappos50K, CUB, tags, ...), as the official Cl-InfoNCE code builds its
UT-Zappos levels: every attribute is a binary indicator, and `attributes:K` gives each combination of the K most
informative indicators one cluster (at most 2^K clusters).

Tables reach this as indicators (data/csv_table.py: a multi-valued column is one indicator per value, since
ranking whole columns would favour columns with many values; a column of tags, one indicator per frequent tag).

Columns are ranked by the empirical entropy of their values over the training samples, highest first; equal
entropies (compared after rounding to 12 decimals, so float noise cannot reorder them) keep column order. Because
level K uses the columns of level K - 1 plus one more, every cluster at K lies inside one cluster at K - 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .assignments import Assignments, ClusterError, as_numpy_ints
from .stats import entropy


def rank_attributes(attributes: torch.Tensor | np.ndarray) -> list[int]:
    """Column indices of an (N, A) table, most informative (highest entropy) first."""
    table = _as_table(attributes)
    scores = [round(entropy(table[:, column]), 12) for column in range(table.shape[1])]
    return sorted(range(table.shape[1]), key=lambda column: (-scores[column], column))


def attribute_clusters(
    attributes: torch.Tensor | np.ndarray, k: int, attribute_names: Sequence[str] | None = None
) -> Assignments:
    """One cluster per distinct combination of the top-k attributes' values.

    Ids follow np.unique's sorted order of the value combinations (columns in
    rank order), so they are contiguous and deterministic.
    """
    table = _as_table(attributes)
    num_attributes = table.shape[1]
    if not 1 <= k <= num_attributes:
        raise ClusterError(f"attributes:{k} needs 1 <= K <= {num_attributes} (the dataset's attribute count)")
    if attribute_names is not None and len(attribute_names) != num_attributes:
        raise ClusterError(
            f"got {len(attribute_names)} attribute names for {num_attributes} attribute columns"
        )
    names = list(attribute_names) if attribute_names is not None else [f"a{j}" for j in range(num_attributes)]
    columns = rank_attributes(table)[:k]
    combinations, ids = np.unique(table[:, columns], axis=0, return_inverse=True)
    cluster_names = [
        ",".join(f"{names[column]}={value}" for column, value in zip(columns, row, strict=True))
        for row in combinations.tolist()
    ]
    return Assignments(ids=[torch.from_numpy(ids.reshape(-1).astype(np.int64))], names=[cluster_names])


def _as_table(attributes: torch.Tensor | np.ndarray) -> np.ndarray:
    table = as_numpy_ints(attributes, "attributes")
    if table.ndim != 2 or table.shape[1] == 0:
        raise ClusterError(
            f"attributes must be an (N, A) integer table with A >= 1, got shape {tuple(table.shape)}"
        )
    return table
