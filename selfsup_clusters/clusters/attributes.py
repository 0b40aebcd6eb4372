"""Clusters from per-sample attributes (UT-Zappos50K, CUB, tags, ...), as the official Cl-InfoNCE code builds its
UT-Zappos levels: every attribute is a binary indicator, and `attributes:K` gives each combination of the K most
informative indicators one cluster (at most 2^K clusters).

Tables reach this as indicators: `categorical_indicators` expands a multi-valued column into one indicator per
value (ranking whole columns would favour columns with many values), `tag_indicators` turns a column of several
tags per sample ("red leather strap") into one indicator per frequent tag.

Columns are ranked by the empirical entropy of their values over the training samples, highest first; equal
entropies (compared after rounding to 12 decimals, so float noise cannot reorder them) keep column order. Because
level K uses the columns of level K - 1 plus one more, every cluster at K lies inside one cluster at K - 1.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .assignments import Assignments, ClusterError, as_numpy_ints
from .stats import entropy


def categorical_indicators(codes: torch.Tensor, values: list[str], column: str) -> tuple[torch.Tensor, list[str]]:
    """(N,) codes into `values` -> an (N, A) 0/1 table and its A names. A column with at most two values is one
    indicator (named by the column where its values are 0/1, else "column=<second value>"); a column with V > 2
    values is V indicators "column=value"."""
    if len(values) > 2:
        return F.one_hot(codes, len(values)).long(), [f"{column}={value}" for value in values]
    name = column if set(values) <= {"0", "1"} else f"{column}={values[-1]}"
    return (codes == 1).long().view(-1, 1), [name]  # one value only: a constant 0 column


def tag_indicators(texts: Sequence[str], column: str, separator: str = " ", max_tags: int = 0
                   ) -> tuple[torch.Tensor, list[str]]:
    """Each sample's tags ("red leather strap", split at `separator`) -> an (N, T) 0/1 table with one indicator
    "column:tag" per tag, for the `max_tags` most frequent tags (0: all); equal counts keep the tags' sorted
    order."""
    tag_sets = [{tag.strip() for tag in text.split(separator or None) if tag.strip()} for text in texts]
    counts = Counter(tag for tags in tag_sets for tag in tags)
    ranked = sorted(counts, key=lambda tag: (-counts[tag], tag))
    kept = ranked[:max_tags] if max_tags > 0 else ranked
    index = {tag: i for i, tag in enumerate(kept)}
    table = torch.zeros(len(texts), len(kept), dtype=torch.int64)
    for row, tags in enumerate(tag_sets):
        for tag in tags & index.keys():
            table[row, index[tag]] = 1
    return table, [f"{column}:{tag}" for tag in kept]


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
