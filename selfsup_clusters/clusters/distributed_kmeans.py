"""Spherical k-means over a feature table split across torchrun processes (issue #40).

DeepCluster-v2's scheme (and FAISS's demo_distributed_kmeans_torch.py): every process keeps only its shard of
the (N, d) features and no process ever holds all of them. Initial centroids are K distinct rows drawn once
(the same draw on every rank, from the seed) and summed into place with one all-reduce; each Lloyd iteration
assigns the shard's rows to their nearest centroid (FAISS IndexFlatIP on each rank), sums the rows and counts
per centroid, all-reduces sums and counts (every K of the spec in the same two all-reduces), and every rank
computes the same new centroids: the mean, empty clusters re-seeded by splitting a large one as FAISS's
`split_clusters` does (from a seed every rank shares), re-normalised. Every rank therefore ends with the same
centroids; the per-rank ids and distances are then gathered into the (N,) tables, in global sample order, that
the methods consume (`Assignments`), on every rank.

With one process (no torchrun) the same code runs over the whole table as one shard. Single-process training keeps
FAISS's own k-means (`run_kmeans`); tests/test_distributed_kmeans.py compares the two, and
tools/bench_kmeans_scaling.py times them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from selfsup_clusters.core import distributed

from .assignments import Assignments, ClusterError
from .kmeans import KMeansOptions, _faiss_gpus, _prepare_features

logger = logging.getLogger(__name__)

SPLIT_EPS = 1 / 1024  # FAISS's symmetric perturbation of a split centroid
BLOCK_ROWS = 1 << 16  # rows searched against every K at a time: one pass over the shard per iteration


@dataclass
class Shard:
    """This rank's part of an (N, d) feature table: `rows` (n, d) and each row's global sample id `index` (n,);
    over all ranks the shards hold every sample of 0..total-1 exactly once."""

    rows: torch.Tensor
    index: torch.Tensor
    total: int


def sharded_kmeans(shard: Shard, ks: list[int], options: KMeansOptions | None = None, *,
                   warn: bool = True) -> Assignments:
    """k-means for every K in `ks` over every rank's shard (a collective: every rank calls it, with the same
    `ks` and options). Returns ids, centroids and distances as `run_kmeans` does, for all N samples, on every
    rank. Clustering i of `ks` uses seed options.seed + i; restart r of nredo keeps the best objective (the
    all-reduced sum of each row's cosine to its centroid)."""
    options = options or KMeansOptions()
    import faiss  # imported here so the rest of the package works without FAISS

    points = _prepare_features(shard.rows)
    sizes = torch.cat(distributed.all_gather_uneven(torch.tensor([len(points)]))).tolist()
    total = sum(sizes)
    _check(shard, ks, total, options, warn)
    offsets = np.cumsum([0, *sizes])
    gpu = _faiss_gpus(faiss, options.use_gpu) > 0 and torch.cuda.is_available()
    best: list[tuple | None] = [None] * len(ks)
    for redo in range(options.nredo):
        seeds = [options.seed + offset + 7919 * redo for offset in range(len(ks))]
        centroids = [initial_centroids(points, offsets, k, seed) for k, seed in zip(ks, seeds, strict=True)]
        for iteration in range(options.niter):
            ids, cosines = assign(faiss, points, centroids, gpu)
            centroids = update(points, ids, centroids, [(seed, iteration) for seed in seeds])
        ids, cosines = assign(faiss, points, centroids, gpu)
        objectives = distributed.all_reduce_sum(torch.tensor([float(c.sum(dtype=np.float64)) for c in cosines],
                                                             dtype=torch.float64)).tolist()
        for i, objective in enumerate(objectives):
            if best[i] is None or objective > best[i][0]:
                best[i] = (objective, centroids[i], ids[i], cosines[i])
    return gather_assignments(shard, [b[1] for b in best], [b[2] for b in best], [b[3] for b in best])


def _check(shard: Shard, ks: list[int], total: int, options: KMeansOptions, warn: bool) -> None:
    """One clear error (the same on every rank) for K beyond the samples of all shards, or shards that do not
    hold the table; one warning for clusters with fewer than min_points_per_centroid samples."""
    if total != shard.total:
        raise ClusterError(f"the {distributed.world_size()} shards hold {total} rows for a table of "
                           f"N={shard.total} samples; every sample must be in exactly one shard")
    if not ks or min(ks) < 1 or max(ks) > total:
        raise ClusterError(f"k-means needs 1 <= K <= N: got K={','.join(map(str, ks))} for N={total} samples "
                           f"across {distributed.world_size()} process(es); use K <= {total}")
    crowded = [k for k in ks if total < options.min_points_per_centroid * k]
    if warn and crowded:
        logger.warning("k-means: N=%d samples is fewer than min_points_per_centroid=%d per cluster for K=%s; "
                       "clusters will be noisy (use a smaller K or more data)", total,
                       options.min_points_per_centroid, ",".join(map(str, crowded)))


def initial_centroids(points: np.ndarray, offsets: np.ndarray, k: int, seed: int) -> np.ndarray:
    """K distinct rows of the whole table (positions in rank order), drawn with `seed` on every rank alike; each
    rank writes the ones it holds into a zero (K, d) array and one all-reduce completes it everywhere."""
    chosen = np.random.default_rng(seed).choice(int(offsets[-1]), size=k, replace=False)
    start, end = offsets[distributed.rank()], offsets[distributed.rank() + 1]
    mine = np.flatnonzero((chosen >= start) & (chosen < end))
    centroids = torch.zeros(k, points.shape[1])
    centroids[torch.from_numpy(mine)] = torch.from_numpy(points[chosen[mine] - start])
    return distributed.all_reduce_sum(centroids).numpy()


def assign(faiss, points: np.ndarray, centroids: list[np.ndarray], gpu: bool = False
           ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Each row's nearest centroid (largest inner product) and its cosine, for every K, in one pass over the
    rows (blocks of BLOCK_ROWS, each searched against every K's centroids)."""
    indexes = [flat_index(faiss, c, gpu) for c in centroids]
    ids = [np.empty(len(points), dtype=np.int64) for _ in centroids]
    cosines = [np.empty(len(points), dtype=np.float32) for _ in centroids]
    for start in range(0, len(points), BLOCK_ROWS):
        block = points[start : start + BLOCK_ROWS]
        for index, nearest, cosine in zip(indexes, ids, cosines, strict=True):
            similarity, found = index.search(block, 1)
            nearest[start : start + len(block)] = found[:, 0]
            cosine[start : start + len(block)] = similarity[:, 0]
    return ids, cosines


def flat_index(faiss, centroids: np.ndarray, gpu: bool):
    """An exact inner-product index over the centroids: on this process's GPU with faiss-gpu, else the CPU."""
    index = faiss.IndexFlatIP(centroids.shape[1])
    if gpu:
        index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), torch.cuda.current_device(), index)
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    return index


def update(points: np.ndarray, ids: list[np.ndarray], centroids: list[np.ndarray],
           seeds: list[tuple[int, int]]) -> list[np.ndarray]:
    """New centroids for every K: each rank's per-centroid sums and counts, all-reduced (two all-reduces for all
    K together), then the same arithmetic on every rank."""
    rows = torch.from_numpy(points)
    sums = [torch.zeros(c.shape).index_add_(0, torch.from_numpy(i), rows) for c, i in zip(centroids, ids,
                                                                                          strict=True)]
    counts = [torch.bincount(torch.from_numpy(i), minlength=len(c)).double() for c, i in zip(centroids, ids,
                                                                                            strict=True)]
    flat_sums = distributed.all_reduce_sum(torch.cat([s.flatten() for s in sums]))
    flat_counts = distributed.all_reduce_sum(torch.cat(counts))
    new, start, first = [], 0, 0
    for c, seed in zip(centroids, seeds, strict=True):
        k, d = c.shape
        total_sums = flat_sums[start : start + k * d].view(k, d).numpy().copy()
        total_counts = flat_counts[first : first + k].numpy().copy()
        start, first = start + k * d, first + k
        filled = total_counts > 0
        total_sums[filled] /= total_counts[filled, None].astype(np.float32)
        split_empty(total_sums, total_counts, np.random.default_rng(seed))
        new.append(total_sums / np.maximum(np.linalg.norm(total_sums, axis=1, keepdims=True), 1e-12))
    return new


def split_empty(centroids: np.ndarray, counts: np.ndarray, rng: np.random.Generator) -> int:
    """FAISS's `split_clusters`, in place: each empty cluster takes a copy of a cluster drawn with probability
    proportional to its size minus one, the two perturbed by +-SPLIT_EPS in alternating coordinates, the size
    split in two. The number of clusters split."""
    empty = np.flatnonzero(counts == 0)
    sign = np.where(np.arange(centroids.shape[1]) % 2 == 0, 1.0, -1.0).astype(np.float32)
    for ci in empty:
        weights = np.clip(counts - 1, 0, None)
        cj = int(rng.choice(len(counts), p=weights / weights.sum()))
        centroids[ci] = centroids[cj] * (1 + SPLIT_EPS * sign)
        centroids[cj] = centroids[cj] * (1 - SPLIT_EPS * sign)
        counts[ci] = counts[cj] / 2
        counts[cj] -= counts[ci]
    return len(empty)


def gather_assignments(shard: Shard, centroids: list[np.ndarray], ids: list[np.ndarray],
                       cosines: list[np.ndarray]) -> Assignments:
    """Every rank's ids and distances, scattered into (N,) tables in global sample order, on every rank."""
    index = shard.index.detach().cpu().long()
    local_ids = torch.stack([index, *[torch.from_numpy(i) for i in ids]], dim=1)
    local_cosines = torch.from_numpy(np.stack(cosines, axis=1))
    device = shard.rows.device if distributed.enabled() else torch.device("cpu")  # nccl gathers CUDA tensors
    every_id = torch.cat(distributed.all_gather_uneven(local_ids.to(device))).cpu()
    every_cosine = torch.cat(distributed.all_gather_uneven(local_cosines.to(device))).cpu()
    covered = torch.zeros(shard.total, dtype=torch.bool)
    covered[every_id[:, 0]] = True
    if not bool(covered.all()) or len(every_id) != shard.total:
        raise ClusterError(f"the shards do not hold every one of the N={shard.total} samples exactly once")
    tables, distances = [], []
    for i in range(len(ids)):
        table = torch.empty(shard.total, dtype=torch.int64)
        table[every_id[:, 0]] = every_id[:, i + 1]
        distance = torch.empty(shard.total, dtype=torch.float32)
        distance[every_id[:, 0]] = torch.sqrt(torch.clamp(2.0 - 2.0 * every_cosine[:, i], min=0.0))
        tables.append(table)
        distances.append(distance)
    return Assignments(ids=tables, centroids=[torch.from_numpy(c.astype(np.float32)) for c in centroids],
                       distances=distances)
