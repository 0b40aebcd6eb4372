"""The assignments file a run writes each time it (re)makes clusters: RUN/clusters/epochNNNN.npz, NNNN the epoch
(1-based, as the log lines count) that trained with them. Plain numpy arrays, no pickles (np.load with
allow_pickle=False reads it anywhere); the format is in docs/training.md#cluster-views-gallery-stability-assignments.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from selfsup_clusters.core.errors import UserError
from selfsup_clusters.core.files import atomic_write

FORMAT = "selfsup-clusters assignments 1"
FOLDER = "clusters"
_FILE = re.compile(r"^epoch(\d{4,})\.npz$")


@dataclass
class GalleryRows:
    """The clusters a gallery shows, one row each: the cluster id, why it was picked ("largest", "smallest",
    "random", "follows #4 (63% kept)") and the samples drawn (nearest the centroid first; -1 pads a short row)."""

    clusters: np.ndarray  # (R,) int64
    roles: list[str]
    samples: np.ndarray  # (R, M) int64


@dataclass
class Clustering:
    """One clustering of the training samples as the file keeps it."""

    name: str  # "kmeans400", "wordnet8": the name TensorBoard's clusters/NAME/ tags use
    ids: np.ndarray  # (N,) int64 cluster id per sample
    num_clusters: int
    distances: np.ndarray | None = None  # (N,) float32 L2 distance to the centroid (k-means only)
    centroids: np.ndarray | None = None  # (K, d) float32, L2-normalised (k-means only)
    cluster_names: list[str] | None = None  # a name per cluster, where the source has them (WordNet lemmas)
    gallery: GalleryRows | None = None
    stability_nmi: float = math.nan  # NMI / AMI to the previous clustering of this name (NaN: none before)
    stability_ami: float = math.nan
    previous_epoch: int = 0  # the epoch of that previous clustering (0: none)


@dataclass
class ClusterFile:
    """The clusterings made before one epoch. `index[i]` is sample i's position in the run's training split (the
    first data.subset images, less any data.val_fraction holdout), `labels` its label (-1: none)."""

    epoch: int
    step: int
    index: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    clusterings: list[Clustering] = field(default_factory=list)

    def __getitem__(self, name: str) -> Clustering:
        for clustering in self.clusterings:
            if clustering.name == name:
                return clustering
        raise UserError(f"no clustering {name!r} at epoch {self.epoch}; it has "
                        f"{', '.join(c.name for c in self.clusterings)}")


def file_path(run_dir: str | Path, epoch: int) -> Path:
    return Path(run_dir) / FOLDER / f"epoch{epoch:04d}.npz"


def write_clusters(run_dir: str | Path, record: ClusterFile) -> Path:
    """RUN/clusters/epochNNNN.npz, atomically (a crash leaves the old file or the new one, never half)."""
    arrays: dict[str, np.ndarray] = {
        "format": np.array(FORMAT), "epoch": np.array(record.epoch), "step": np.array(record.step),
        "index": record.index.astype(np.int64), "labels": record.labels.astype(np.int64),
        "class_names": np.array(record.class_names, dtype=str), "names": np.array([c.name for c in record.clusterings])}
    for c in record.clusterings:
        arrays.update(_clustering_arrays(c))
    path = file_path(run_dir, record.epoch)
    atomic_write(path, lambda f: np.savez_compressed(f, **arrays))
    return path


def _clustering_arrays(c: Clustering) -> dict[str, np.ndarray]:
    """A clustering's arrays, each key ending in /NAME (NAME: the clustering's name)."""
    small = np.int32 if c.num_clusters < 2**31 else np.int64  # halves the file; ids load back as int64
    out = {"ids": c.ids.astype(small), "num_clusters": np.array(c.num_clusters),
           "stability": np.array([c.stability_nmi, c.stability_ami]), "previous_epoch": np.array(c.previous_epoch)}
    if c.distances is not None:
        out["distances"] = c.distances.astype(np.float32)
    if c.centroids is not None:
        out["centroids"] = c.centroids.astype(np.float32)
    if c.cluster_names is not None:
        out["cluster_names"] = np.array(c.cluster_names, dtype=str)
    if c.gallery is not None:
        out.update({"gallery_clusters": c.gallery.clusters.astype(np.int64),
                    "gallery_roles": np.array(c.gallery.roles, dtype=str),
                    "gallery_samples": c.gallery.samples.astype(np.int64)})
    return {f"{key}/{c.name}": value for key, value in out.items()}


def cluster_epochs(run_dir: str | Path) -> list[int]:
    """The epochs of RUN that have an assignments file, in order."""
    folder = Path(run_dir) / FOLDER
    if not folder.is_dir():
        return []
    return sorted(int(m.group(1)) for p in folder.iterdir() if (m := _FILE.match(p.name)))


def load_clusters(run_dir: str | Path, epoch: int | None = None) -> ClusterFile:
    """The clusterings RUN made before `epoch` (1-based; default the latest). A run folder without
    assignments, or an epoch without clusters, is a UserError of one line."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"--run {run_dir} is not a folder; pass a run folder (train --out)")
    epochs = cluster_epochs(run_dir)
    if not epochs:
        raise UserError(f"{run_dir} has no cluster assignments ({FOLDER}/epochNNNN.npz): its method learned from "
                        "no clusters, or it was trained before assignments were saved")
    if epoch is None:
        epoch = epochs[-1]
    if epoch not in epochs:
        raise UserError(f"epoch {epoch} of {run_dir} has no clusters; clusters were made for epochs "
                        f"{_spans(epochs)}: pick one with --epoch")
    return read_clusters(file_path(run_dir, epoch))


def read_clusters(path: str | Path) -> ClusterFile:
    """One assignments file (see write_clusters); a damaged or foreign file is a UserError."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {key: z[key] for key in z.files}
        if str(arrays.get("format")) != FORMAT:
            raise ValueError(f"not a {FORMAT!r} file")
        return ClusterFile(int(arrays["epoch"]), int(arrays["step"]), arrays["index"], arrays["labels"],
                           arrays["class_names"].tolist(),
                           [_clustering(arrays, str(name)) for name in arrays["names"]])
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"{path} is not a readable assignments file ({str(e).splitlines()[0][:120]}); "
                        "delete it, or re-train the run") from None


def _clustering(arrays: dict[str, np.ndarray], name: str) -> Clustering:
    def get(key: str) -> np.ndarray | None:
        return arrays.get(f"{key}/{name}")

    names, roles = get("cluster_names"), get("gallery_roles")
    gallery = None if roles is None else GalleryRows(get("gallery_clusters"), roles.tolist(), get("gallery_samples"))
    nmi, ami = get("stability").tolist()
    return Clustering(name, get("ids").astype(np.int64), int(get("num_clusters")), get("distances"),
                      get("centroids"), None if names is None else names.tolist(), gallery, nmi, ami,
                      int(get("previous_epoch")))


def previous_clustering(run_dir: str | Path, name: str, before: int) -> tuple[int, Clustering] | None:
    """The latest clustering called `name` RUN made before epoch `before`, with its epoch (None: none)."""
    for epoch in reversed([e for e in cluster_epochs(run_dir) if e < before]):
        record = load_clusters(run_dir, epoch)
        if name in (c.name for c in record.clusterings):
            return epoch, record[name]
    return None


def _spans(epochs: list[int]) -> str:
    """[1, 2, 3, 5] -> "1-3, 5": the list an error names stays one line."""
    spans, start = [], epochs[0]
    for previous, now in zip(epochs, [*epochs[1:], None], strict=True):
        if now != previous + 1:
            spans.append(str(start) if start == previous else f"{start}-{previous}")
            start = now
    return ", ".join(spans)
