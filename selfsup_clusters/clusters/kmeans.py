"""Spherical k-means with FAISS.

Follows facebookresearch/PCL main_pcl.py `run_kmeans`, with FAISS's
`spherical=True` (centroids re-normalised every iteration) because the
features it clusters are L2-normalised anyway.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import numpy as np
import torch

from selfsup_clusters.core.progress import progress

from .assignments import Assignments, ClusterError

logger = logging.getLogger(__name__)

USE_GPU_CHOICES = ("auto", "cpu", "gpu")


@dataclass
class KMeansOptions:
    """FAISS k-means settings.

    niter: Lloyd iterations per run. nredo: runs per K (random restarts, best
    objective kept). seed: base seed; clustering i of a list of Ks uses seed + i.
    min_points_per_centroid: below this many samples per cluster we warn once.
    use_gpu: "auto" (GPU when faiss-gpu sees one), "cpu", or "gpu" (fail if
    there is none). progress: a bar over the Ks (on a terminal; see selfsup_clusters/core/progress.py).
    """

    niter: int = 20
    nredo: int = 1
    seed: int = 0
    min_points_per_centroid: int = 10
    use_gpu: str = "auto"
    progress: bool = False


def run_kmeans(
    features: torch.Tensor, ks: list[int], options: KMeansOptions | None = None, *, warn: bool = True
) -> Assignments:
    """Cluster (N, d) features once per K in `ks`.

    Features are L2-normalised float32 before clustering. Returns ids (N,),
    L2-normalised centroids (K, d) and each sample's distance to its centroid
    (N,) per K, all on the CPU. `warn=False` silences the too-few-samples warning (a source that
    re-clusters every epoch warns only on its first call).
    """
    options = options or KMeansOptions()
    import faiss  # imported here so the rest of the package works without FAISS

    points = _prepare_features(features)
    num_samples = points.shape[0]
    too_large = [k for k in ks if k > num_samples]
    if too_large or not ks or min(ks) < 1:
        raise ClusterError(
            f"k-means needs 1 <= K <= N: got K={','.join(map(str, ks))} for N={num_samples} samples; "
            f"use K <= {num_samples}"
        )
    crowded = [k for k in ks if num_samples < options.min_points_per_centroid * k]
    if warn and crowded:
        logger.warning(
            "k-means: N=%d samples is fewer than min_points_per_centroid=%d per cluster for K=%s; "
            "clusters will be noisy (use a smaller K or more data)",
            num_samples,
            options.min_points_per_centroid,
            ",".join(map(str, crowded)),
        )
    num_gpus = _faiss_gpus(faiss, options.use_gpu)
    logger.info("k-means: FAISS on %s", f"{num_gpus} GPU(s)" if num_gpus else "CPU")

    ids, centroids, distances = [], [], []
    for offset, k in progress(list(enumerate(ks)), desc=f"k-means K={','.join(map(str, ks))}",
                              enabled=options.progress, unit="K"):
        kmeans = faiss.Kmeans(
            points.shape[1],
            k,
            niter=options.niter,
            nredo=options.nredo,
            seed=options.seed + offset,
            spherical=True,
            # We warn ourselves (once); min=1 keeps FAISS's own stderr warning quiet.
            min_points_per_centroid=1,
            # FAISS silently subsamples above k * max_points; never let it.
            max_points_per_centroid=num_samples,
            verbose=False,
            gpu=num_gpus if num_gpus else False,
        )
        kmeans.train(points)
        # Spherical FAISS k-means searches by inner product; for unit vectors
        # the squared L2 distance PCL uses is 2 - 2 * cosine.
        cosine, nearest = kmeans.assign(points)
        squared_distance = np.clip(2.0 - 2.0 * cosine, 0.0, None)
        ids.append(torch.from_numpy(nearest.astype(np.int64)))
        centroids.append(torch.nn.functional.normalize(torch.from_numpy(kmeans.centroids.copy()), dim=1))
        distances.append(torch.from_numpy(np.sqrt(squared_distance).astype(np.float32)))
    return Assignments(ids=ids, centroids=centroids, distances=distances)


def _prepare_features(features: torch.Tensor) -> np.ndarray:
    if not isinstance(features, torch.Tensor) or features.ndim != 2:
        raise ClusterError("k-means needs features as an (N, d) tensor (e.g. the memory bank)")
    points = features.detach().float().cpu()
    if not torch.isfinite(points).all():
        raise ClusterError(
            "features contain NaN or inf (training diverged?); lower the learning rate or resume"
        )
    points = torch.nn.functional.normalize(points, dim=1)
    return np.ascontiguousarray(points.numpy(), dtype=np.float32)


def _faiss_gpus(faiss, use_gpu: str) -> int:
    if use_gpu not in USE_GPU_CHOICES:
        raise ClusterError(f"kmeans use_gpu={use_gpu!r}; use one of {', '.join(USE_GPU_CHOICES)}")
    available = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if use_gpu == "gpu" and available == 0:
        raise ClusterError("kmeans use_gpu='gpu' but FAISS sees no GPU; install faiss-gpu or use 'auto'")
    if use_gpu == "auto" and available == 0 and torch.cuda.is_available():
        _warn_cpu_fallback()
    return 0 if use_gpu == "cpu" else available


@functools.cache  # one line per process, not one per clustering
def _warn_cpu_fallback() -> None:
    logger.warning("k-means: a CUDA GPU is present but this FAISS build has no GPU support; clustering on the CPU "
                   "(SELFSUP_GPU=1 bash tools/setup.sh installs faiss-gpu)")
