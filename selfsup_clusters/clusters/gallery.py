"""What a researcher looks at first in a clustering: a gallery of a few clusters (the largest, the smallest, some
followed from one clustering to the next), each row the images nearest its centroid (a sample of its members where
there is no centroid) labelled with its id, size, majority label and purity; the sizes' histogram; and how much
the clustering moved since the previous one (NMI/AMI, DeepCluster's measure of convergence).

Everything here is bounded by the rows and images drawn, plus a few O(N) passes over the ids: cheap beside the
k-means it follows (the measured cost is in docs/training.md#cluster-views-gallery-stability-assignments).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score

from .archive import Clustering, GalleryRows

EXTREMES = 2  # rows for the largest clusters, and as many for the smallest
RANDOM = 4  # rows picked at random the first time, then followed from clustering to clustering
IMAGES = 8  # images per row


def stability(previous: np.ndarray, now: np.ndarray) -> tuple[float, float]:
    """NMI and AMI between two clusterings of the same samples (1: the same partition up to renaming)."""
    return (float(normalized_mutual_info_score(previous, now)), float(adjusted_mutual_info_score(previous, now)))


def size_histogram(ids: np.ndarray, num_clusters: int) -> dict:
    """Cluster sizes in powers-of-two bins (counts[i]: clusters of edges[i] to edges[i+1]-1 samples), and the
    empty clusters: a few numbers for metrics.jsonl however large K is."""
    sizes = np.bincount(ids, minlength=num_clusters)
    occupied = sizes[sizes > 0]
    top = int(math.log2(occupied.max())) + 1 if occupied.size else 1
    edges = 2 ** np.arange(top + 1)
    counts, _ = np.histogram(occupied, bins=edges)
    return {"empty": int((sizes == 0).sum()), "edges": edges.tolist(), "counts": counts.tolist()}


def choose_rows(ids: np.ndarray, num_clusters: int, rng: np.random.Generator,
                previous: Clustering | None = None) -> tuple[list[int], list[str]]:
    """The clusters to show: the largest, the smallest occupied ones, and either the clusters the previous
    gallery followed (each mapped to the cluster now holding most of its members: k-means renumbers its clusters
    every time) or, the first time, some at random."""
    sizes = np.bincount(ids, minlength=num_clusters)
    occupied = np.flatnonzero(sizes)
    by_size = occupied[np.argsort(-sizes[occupied], kind="stable")]
    chosen = [int(c) for c in by_size[:EXTREMES]]
    roles = ["largest"] * len(chosen)
    for c in by_size[::-1][:EXTREMES]:
        if int(c) not in chosen:
            chosen.append(int(c))
            roles.append("smallest")
    followed = follow(previous, ids) if previous is not None else []
    for c, role in followed:  # a followed cluster already shown (one of the largest, say) is one row with both roles
        if c in chosen:
            roles[chosen.index(c)] += f"; {role}"
        else:
            chosen.append(c)
            roles.append(role)
    if not followed:
        rest = np.setdiff1d(occupied, chosen)
        picks = rng.choice(rest, size=min(RANDOM, rest.size), replace=False) if rest.size else []
        chosen += [int(c) for c in picks]
        roles += ["random"] * len(picks)
    return chosen, roles


def follow(previous: Clustering, ids: np.ndarray) -> list[tuple[int, str]]:
    """For each cluster the previous gallery followed (or picked at random), the cluster that now holds most of
    its members and the share of them it holds."""
    rows = previous.gallery
    if rows is None or previous.ids.shape != ids.shape:
        return []
    out = []
    for c, role in zip(rows.clusters.tolist(), rows.roles, strict=True):
        if role == "random" or "follows" in role:
            now = ids[previous.ids == c]
            if now.size:
                counts = np.bincount(now)
                out.append((int(counts.argmax()), f"follows #{c} ({counts.max() / now.size:.0%} kept)"))
    return out


def members(ids: np.ndarray, cluster: int, distances: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    """Up to IMAGES samples of `cluster`: the nearest its centroid first, else a random sample; (IMAGES,) with
    -1 padding."""
    inside = np.flatnonzero(ids == cluster)
    if distances is not None and not np.isnan(distances[inside]).any():
        picked = inside[np.argsort(distances[inside], kind="stable")[:IMAGES]]
    else:
        picked = np.sort(rng.choice(inside, size=min(IMAGES, inside.size), replace=False))
    return np.concatenate([picked, np.full(IMAGES - picked.size, -1)]).astype(np.int64)


def gallery_rows(clustering: Clustering, rng: np.random.Generator, previous: Clustering | None) -> GalleryRows:
    chosen, roles = choose_rows(clustering.ids, clustering.num_clusters, rng, previous)
    samples = np.stack([members(clustering.ids, c, clustering.distances, rng) for c in chosen]) if chosen \
        else np.zeros((0, IMAGES), dtype=np.int64)
    return GalleryRows(np.array(chosen, dtype=np.int64), roles, samples)


def centroids_of(features: torch.Tensor, ids: torch.Tensor, num_clusters: int) -> tuple[np.ndarray, np.ndarray]:
    """L2-normalised mean of each cluster's L2-normalised features and each sample's distance to its own: for a
    k-means part of a composite spec, whose assignments keep no centroids."""
    points = torch.nn.functional.normalize(features.detach().float(), dim=1)
    ids = ids.to(points.device)
    sums = torch.zeros(num_clusters, points.shape[1], device=points.device).index_add_(0, ids, points)
    centroids = torch.nn.functional.normalize(sums, dim=1)
    distances = (points - centroids[ids]).norm(dim=1)
    return centroids.cpu().numpy(), distances.cpu().numpy()


def row_label(clustering: Clustering, row: int, labels: np.ndarray, class_names: list[str]) -> str:
    """"#17 n=523 · Dress 81% · largest": id (and name), size, majority label and purity (labelled samples only)."""
    rows = clustering.gallery
    cluster = int(rows.clusters[row])
    inside = clustering.ids == cluster
    name = f" {clustering.cluster_names[cluster]}" if clustering.cluster_names else ""
    text = f"#{cluster}{name}  n={int(inside.sum())}"
    known = labels[inside & (labels >= 0)]
    if known.size:
        counts = np.bincount(known, minlength=len(class_names))
        text += f"  {class_names[int(counts.argmax())]} {counts.max() / known.size:.0%}"
    return f"{text}  ({rows.roles[row]})"


def thumbnails(images: torch.Tensor, samples: np.ndarray) -> torch.Tensor:
    """The gallery's images, (R * IMAGES, C, H, W) float in [0, 1], white where a row is short. Only these few
    leave `images` (uint8 (N, C, H, W), on whatever device the data lives)."""
    flat = samples.reshape(-1)
    valid = torch.from_numpy(flat >= 0)
    index = torch.from_numpy(np.where(flat >= 0, flat, 0)).to(images.device)
    picked = images[index].cpu().float().div(255)
    picked[~valid] = 1.0
    return picked


def render(clustering: Clustering, labels: np.ndarray, class_names: list[str], images: torch.Tensor,
           title: str) -> np.ndarray:
    """The gallery as one (H, W, 3) uint8 picture: the rows' images (torchvision's make_grid) labelled on the left,
    the size histogram on the right. Matplotlib's object API on its Agg canvas: no pyplot state, no display."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from torchvision.utils import make_grid

    rows = clustering.gallery
    grid = make_grid(thumbnails(images, rows.samples), nrow=IMAGES, padding=2, pad_value=1.0)
    cell = images.shape[-2] + 2  # make_grid's padding above each row
    height = 0.5 * len(rows.clusters) + 1.3
    fig = Figure(figsize=(11, height), dpi=100)
    FigureCanvasAgg(fig)
    # A fixed layout, room on the left for the row labels: matplotlib's constrained layout doubled the drawing time.
    fig.subplots_adjust(left=0.34, right=0.98, bottom=0.75 / height, top=1 - 0.35 / height, wspace=0.25)
    ax, hist_ax = fig.subplots(1, 2, width_ratios=[3, 1])
    ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_anchor("W")  # the grid beside its labels, whatever room the equal aspect leaves
    ax.set_yticks([2 + r * cell + (cell - 2) / 2 for r in range(len(rows.clusters))],
                  [row_label(clustering, r, labels, class_names) for r in range(len(rows.clusters))], fontsize=8)
    ax.set_xticks([])
    ax.set_title(title, fontsize=9)
    histogram = size_histogram(clustering.ids, clustering.num_clusters)
    edges = histogram["edges"]
    hist_ax.bar(range(len(histogram["counts"])), histogram["counts"], color="tab:blue")
    hist_ax.set_xticks(range(len(histogram["counts"])),
                       [str(a) if b - a == 1 else f"{a}-{b - 1}" for a, b in zip(edges[:-1], edges[1:], strict=True)],
                       rotation=90, fontsize=6)
    hist_ax.set_xlabel("cluster size (samples)", fontsize=7)
    hist_ax.set_ylabel("clusters", fontsize=7)
    hist_ax.tick_params(labelsize=6)
    hist_ax.set_title(f"sizes: K={clustering.num_clusters}, {histogram['empty']} empty", fontsize=8)
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def title_of(clustering: Clustering, epoch: int) -> str:
    """"kmeans400 before epoch 3; to epoch 2's: NMI 0.71, AMI 0.55" (the first clustering: no comparison)."""
    text = f"{clustering.name} before epoch {epoch}; nearest the centroid" if clustering.distances is not None \
        else f"{clustering.name} before epoch {epoch}; a random sample of each cluster"
    if clustering.previous_epoch:
        text += (f"; to epoch {clustering.previous_epoch}'s: NMI {clustering.stability_nmi:.3f}, "
                 f"AMI {clustering.stability_ami:.3f}")
    return text
