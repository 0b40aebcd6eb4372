"""Clusters you can see: each time the loop (re)makes clusters, the assignments file RUN/clusters/epochNNNN.npz
(clusters/archive.py), each clustering's stability against the previous one of its name and its size histogram
(for metrics.jsonl and TensorBoard) and its gallery in TensorBoard's images tab (clusters/gallery.py); and the same
gallery drawn offline from the file (`selfsup-clusters clusters --run DIR`, `draw_clusters`).

The previous clustering comes back from its file, not from memory: a resumed run compares and follows clusters
exactly as an uninterrupted one.

Every epoch, the diagnostics of the clusterings it trained with (`diagnostics`: cluster-mates per anchor, occupancy,
NMI), the spec's or a method's own (SwAV's prototypes, `tracked_clusterings`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from selfsup_clusters.clusters import cluster_statistics
from selfsup_clusters.clusters.archive import (
    FOLDER,
    ClusterFile,
    Clustering,
    load_clusters,
    previous_clustering,
    write_clusters,
)
from selfsup_clusters.clusters.gallery import centroids_of, gallery_rows, render, size_histogram, stability, title_of
from selfsup_clusters.core import distributed
from selfsup_clusters.core.errors import UserError
from selfsup_clusters.training.logger import RunLogger

if TYPE_CHECKING:
    from selfsup_clusters.training.run import EpochProgress, Run

_told: set[str] = set()  # run folders already told that their gallery is skipped (once per run, not per epoch)


def after_clustering(run: Run, epoch: int, features: torch.Tensor | None, names: list[str],
                     logger: RunLogger) -> list[dict]:
    """For the clusterings `names` just made before 0-based `epoch`: the file written, the galleries logged;
    per clustering what its metrics.jsonl row adds (stability to the previous one, size histogram, the file, the
    seconds all this took). Rank 0 only (the others: nothing)."""
    if not distributed.is_main() or not names:
        return [{} for _ in names]
    start = time.perf_counter()
    step = epoch * run.steps_per_epoch
    record = ClusterFile(epoch + 1, step, np.arange(len(run.data.train)), run.data.train.labels.cpu().numpy(),
                         list(run.data.class_names))
    rng = np.random.default_rng([run.cfg.seed, epoch])  # the same rows on a rerun or a resume
    record.clusterings = [clustering_now(run, features, name, record.epoch, rng) for name in names]
    path = write_clusters(run.out_dir, record)
    images = run.data.train.images
    if isinstance(logger, RunLogger) and logger.writer is not None:
        if images is None:
            if str(run.out_dir) not in _told:
                _told.add(str(run.out_dir))
                print(f"cluster gallery skipped: {run.cfg.data.name} keeps no images in memory (data.cache=false); "
                      f"the assignments are in {run.out_dir / FOLDER}", flush=True)
        else:
            for c in record.clusterings:
                picture = render(c, record.labels, record.class_names, images, title_of(c, record.epoch))
                logger.image(f"clusters/{c.name}/gallery", picture, step)
    seconds = time.perf_counter() - start
    return [{**({"stability_NMI": c.stability_nmi, "stability_AMI": c.stability_ami,
                 "stability_to_epoch": c.previous_epoch} if c.previous_epoch else {}),
             "size_histogram": size_histogram(c.ids, c.num_clusters),
             "assignments": str(path.relative_to(run.out_dir)), "views_seconds": seconds}
            for c in record.clusterings]


def clustering_now(run: Run, features: torch.Tensor | None, name: str, epoch: int, rng: np.random.Generator
                   ) -> Clustering:
    """Clustering `name` of the run's current assignments (made for 1-based `epoch`), with its centroids and
    distances (computed from the features for a k-means part of a composite spec, which keeps none), its stability
    to the previous clustering of this name and its gallery rows."""
    spec, assignments = run.cluster_source.spec, run.assignments
    i = spec.clustering_names().index(name)
    ids = assignments.ids[i].cpu()
    k = max(run.cluster_source.num_clusters[i], int(ids.max()) + 1)
    centroids = None if assignments.centroids is None else assignments.centroids[i].cpu().numpy()
    distances = None if assignments.distances is None else assignments.distances[i].cpu().numpy()
    dynamic = spec.clustering_dynamic()[i]
    if dynamic and distances is None and features is not None:
        centroids, distances = centroids_of(features, ids, k)
    # A composite's names list numbers for its k-means parts: only a fixed source's names say something.
    names = None if dynamic or assignments.names is None else list(assignments.names[i])
    clustering = Clustering(name, ids.numpy().astype(np.int64), k, distances, centroids, names)
    previous = previous_clustering(run.out_dir, name, before=epoch) if dynamic else None
    if previous is not None and previous[1].ids.shape == clustering.ids.shape:
        clustering.previous_epoch = previous[0]
        clustering.stability_nmi, clustering.stability_ami = stability(previous[1].ids, clustering.ids)
    clustering.gallery = gallery_rows(clustering, rng, previous[1] if previous else None)
    return clustering


def draw_clusters(run_dir: str | Path, out: str | Path, epoch: int | None = None,
                  overrides: list[str] | None = None) -> ClusterFile:
    """The galleries of the clusterings RUN made before `epoch` (default: the latest), one under the other, as the
    PNG `out`; the images come from the run's own dataset (its config.yaml; `overrides` such as data.root=DIR
    where the data has moved). The file read."""
    from matplotlib.image import imsave

    from selfsup_clusters.core.files import atomic_write

    record = load_clusters(run_dir, epoch)
    images = run_images(Path(run_dir), len(record.index), overrides or [])
    pictures = [render(c, record.labels, record.class_names, images, title_of(c, record.epoch))
                for c in record.clusterings if c.gallery is not None]
    if not pictures:
        raise UserError(f"epoch {record.epoch} of {run_dir} keeps no gallery rows; pick another --epoch")
    width = max(p.shape[1] for p in pictures)
    sheet = np.concatenate([np.pad(p, ((0, 0), (0, width - p.shape[1]), (0, 0)), constant_values=255)
                            for p in pictures])
    atomic_write(out, lambda f: imsave(f, sheet, format="png"))
    return record


def run_images(run_dir: Path, count: int, overrides: list[str]) -> torch.Tensor:
    """The run's training images (uint8 (N, C, H, W)), as it trained on them: its config.yaml's dataset, subset
    and holdout."""
    from selfsup_clusters.config import read_config
    from selfsup_clusters.data import load_dataset

    config = run_dir / "config.yaml"
    if not config.is_file():
        raise UserError(f"{run_dir} has no config.yaml, so its images cannot be found; pass a run folder")
    data = load_dataset(read_config(config, overrides).data)
    if data.train.images is None:
        raise UserError(f"{data.name} keeps no images in memory (data.cache=false): add data.cache=true to draw "
                        "its clusters")
    if len(data.train) != count:
        raise UserError(f"the run's dataset now has {len(data.train)} training images, its assignments {count}: "
                        "the data has changed; point data.root=DIR at the data it trained on")
    return data.train.images


def describe(record: ClusterFile, run_dir: str | Path) -> str:
    """A few lines on the file: each clustering's K, occupied clusters and stability."""
    lines = [f"{run_dir}: clusters made before epoch {record.epoch} ({len(record.index)} samples; "
             f"{Path(FOLDER) / f'epoch{record.epoch:04d}.npz'})"]
    for c in record.clusterings:
        occupied = np.unique(c.ids).size
        moved = (f"; to epoch {c.previous_epoch}'s: NMI {c.stability_nmi:.3f}, AMI {c.stability_ami:.3f}"
                 if c.previous_epoch else "")
        lines.append(f"  {c.name}: K={c.num_clusters}, {occupied} occupied{moved}")
    return "\n".join(lines)


def clusters_command(run_dir: str, epoch: int | None, out: str | None, overrides: list[str]) -> int:
    """`selfsup-clusters clusters --run DIR [--epoch N] [--out FILE.png]`."""
    if out is None:
        print(describe(load_clusters(run_dir, epoch), run_dir))
        return 0
    if not str(out).lower().endswith(".png"):
        raise UserError(f"--out {out}: the gallery is written as a PNG; name a FILE.png")
    record = draw_clusters(run_dir, out, epoch, overrides)
    print(describe(record, run_dir))
    print(f"gallery written to {out}")
    return 0


def tracked_clusterings(run: Run, done: EpochProgress) -> list[tuple[str, torch.Tensor]]:
    """The clusterings the epoch's diagnostics follow, as (name, ids (N,)): those the method learns from (the
    spec's), or a method's own clusters (SwAV's prototypes) of the memory bank at the epoch's start, once every
    sample is in it (kept in `done`, so a run resumed inside the epoch follows the same)."""
    if run.assignments is not None:
        return list(zip(run.cluster_source.spec.clustering_names(), run.assignments.ids, strict=True))
    if run.method.makes_clusters and done.own_clusters is None and run.memory.all_seen():
        if not distributed.enabled():
            done.own_clusters = run.method.own_clusters(run.memory.features)
        else:  # each process's shard, then every process's ids gathered into the (N,) table
            shard = run.memory.shard()
            index = torch.cat(distributed.all_gather_uneven(shard.index))
            done.own_clusters = []
            for name, ids in run.method.own_clusters(shard.rows):
                table = torch.full((shard.total,), -1, dtype=torch.long)
                table[index.cpu()] = torch.cat(distributed.all_gather_uneven(ids.to(shard.index.device))).cpu()
                done.own_clusters.append((name, table))
    return done.own_clusters or []


def diagnostics(run: Run, mates: list[tuple[str, torch.Tensor, float]], logger: RunLogger,
                        epoch: int) -> dict:
    """Each tracked clustering (name, ids, mates), this epoch (to metrics.jsonl and TensorBoard's clusters/NAME/):
    the mean number of cluster-mates an anchor had in its (global) batch - the positives clusters add beyond its
    own views -, the occupied clusters, the largest cluster's share of the samples and NMI/AMI to the labels (NaN
    without labels). Empty before the first clustering."""
    rows = []
    for name, ids, mean_mates in mates:
        if run.assignments is None:  # a method's own clusters: new every epoch
            stats = cluster_statistics(ids, run.data.train.labels)
        else:  # the spec's: from update_clusters, or (resumed) computed once from the restored assignments
            if name not in run.cluster_stats:
                run.cluster_stats[name] = cluster_statistics(ids, run.data.train.labels)
            stats = run.cluster_stats[name]
        rows.append({"name": name, "mates_per_anchor": mean_mates, "occupied_clusters": stats["num_clusters"],
                     "largest_share": stats["largest_cluster"] / len(ids), "NMI": stats["NMI"], "AMI": stats["AMI"]})
        logger.scalars({k: v for k, v in rows[-1].items() if k != "name"}, (epoch + 1) * run.steps_per_epoch,
                       prefix=f"clusters/{name}/")
    return {"cluster_diagnostics": rows} if rows else {}
