"""The value every cluster source returns, and the error every bad input raises."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from selfsup_clusters.core.errors import UserError


class ClusterError(UserError, ValueError):
    """A bad cluster spec or bad input; the message says what to do about it.

    A UserError so the CLI prints the message instead of a traceback."""


@dataclass
class Assignments:
    """Cluster ids for every training sample, for one or several clusterings.

    ids: one int64 tensor of shape (N,) per clustering. Fixed sources (labels,
        WordNet, attributes) use every id in 0..K-1. k-means ids lie in 0..K-1
        for the K that was asked for; FAISS re-seeds empty clusters while it
        trains, so a cluster left empty by the final assignment is rare but
        possible, and K stays what the user asked for.
    centroids: k-means only: one (K, d) float32 tensor per clustering, rows L2-normalised.
    distances: k-means only: one (N,) float32 tensor per clustering, each sample's L2 distance to its
        centroid (PCL computes its concentration from them).
    names: optional human-readable name per cluster (e.g. a WordNet lemma), per clustering.
    """

    ids: list[torch.Tensor]
    centroids: list[torch.Tensor] | None = None
    distances: list[torch.Tensor] | None = None
    names: list[list[str]] | None = None

    def __post_init__(self) -> None:
        if not self.ids:
            raise ClusterError("Assignments needs at least one clustering (ids is empty)")
        sizes = {len(ids) for ids in self.ids}
        if len(sizes) != 1:
            raise ClusterError(f"every clustering must cover the same samples; got lengths {sorted(sizes)}")
        for field in ("centroids", "distances", "names"):
            values = getattr(self, field)
            if values is not None and len(values) != len(self.ids):
                raise ClusterError(
                    f"Assignments.{field} has {len(values)} entries for {len(self.ids)} clusterings"
                )

    @property
    def num_clusters(self) -> list[int]:
        """K per clustering: the centroid count for k-means (empty clusters
        included), otherwise the name count or the largest id + 1."""
        counts = []
        for index, ids in enumerate(self.ids):
            if self.centroids is not None:
                counts.append(int(self.centroids[index].shape[0]))
            elif self.names is not None:
                counts.append(len(self.names[index]))
            else:
                counts.append(int(ids.max()) + 1 if len(ids) else 0)
        return counts

    def state_dict(self) -> dict:
        """Plain tensors, lists, strings and None only, so a checkpoint holding
        it loads with torch.load(weights_only=True)."""
        return {
            "ids": [ids.detach().cpu() for ids in self.ids],
            "centroids": None if self.centroids is None else [c.detach().cpu() for c in self.centroids],
            "distances": None if self.distances is None else [d.detach().cpu() for d in self.distances],
            "names": None if self.names is None else [list(names) for names in self.names],
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> Assignments:
        if not isinstance(state, dict) or "ids" not in state:
            raise ClusterError("checkpoint has no cluster assignments ('ids' missing); re-run clustering")
        return cls(
            ids=list(state["ids"]),
            centroids=None if state.get("centroids") is None else list(state["centroids"]),
            distances=None if state.get("distances") is None else list(state["distances"]),
            names=None if state.get("names") is None else [list(names) for names in state["names"]],
        )


def as_numpy_ints(values: torch.Tensor | np.ndarray | list[int], what: str) -> np.ndarray:
    """One int64 array from a tensor, array or list, so every source and
    statistic accepts what the caller happens to hold."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if array.dtype.kind not in "iub":
        raise ClusterError(f"{what} must hold integers, got dtype {array.dtype}")
    return array.astype(np.int64, copy=False)
