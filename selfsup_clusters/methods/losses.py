"""Pure loss functions. Inputs are plain tensors; nothing is stored between calls.

Notation: B samples in a batch, V views each, d embedding size, N = V * B rows. Embeddings are L2-normalised
by the caller. Every loss is in log-sum-exp (cross-entropy) form, so it is stable for small temperatures.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F


def in_float32(loss):
    """Run `loss` on float32 copies of its floating-point tensors with autocast off: under bf16 autocast the
    similarity logits (cosines / T, T ~ 0.1) would keep about three significant digits."""

    @functools.wraps(loss)
    def wrapper(*args, **kwargs):
        def to_float(x):
            return x.float() if isinstance(x, torch.Tensor) and x.is_floating_point() else x

        args = [to_float(a) for a in args]
        kwargs = {k: to_float(v) for k, v in kwargs.items()}
        device_type = next(a.device.type for a in args if isinstance(a, torch.Tensor))
        with torch.autocast(device_type, enabled=False):
            return loss(*args, **kwargs)

    return wrapper


@in_float32
def cluster_info_nce(
    z: torch.Tensor,
    ids: torch.Tensor,
    temperature: float,
    keys: torch.Tensor | None = None,
    key_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Contrastive loss whose positives are all other rows with the same id (Cl-InfoNCE / SupCon "out" form).

    z: (N, d) L2-normalised embeddings of every view in the batch (the anchors).
    ids: (N,) int64; rows with equal ids are positives of each other.
         ids = sample index  -> SimCLR's NT-Xent (the only positive is the other view of the same image);
         ids = class labels  -> supervised contrastive; ids = cluster ids -> Cl-InfoNCE.
    keys, key_ids: optional (Q, d) extra L2-normalised embeddings (e.g. a queue of past batches) and their
         (Q,) ids, contrasted like the batch rows; key_ids < 0 mark empty slots, which are left out.
    Returns the scalar mean over anchors of
        -1/|P(i)| * sum_{p in P(i)} log( exp(z_i.c_p / T) / sum_{a != i} exp(z_i.c_a / T) ),
    over the contrast set c = batch rows and keys, with P(i) = {j != i : ids[j] == ids[i]}.
    Anchors without a positive are left out of the mean.
    """
    n = z.shape[0]
    if ids.shape != (n,):
        raise ValueError(f"ids must have shape ({n},), got {tuple(ids.shape)}")
    contrast, contrast_ids = z, ids
    excluded = torch.eye(n, dtype=torch.bool, device=z.device)  # an anchor is not its own positive or negative
    if keys is not None:
        # Empty slots are masked rather than dropped: dropping them would need their count on the host.
        contrast = torch.cat([z, keys])
        contrast_ids = torch.cat([ids, key_ids])
        excluded = torch.cat([excluded, (key_ids < 0).expand(n, -1)], dim=1)
    logits = (z @ contrast.T / temperature).masked_fill(excluded, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positives = (ids.view(-1, 1) == contrast_ids.view(1, -1)) & ~excluded
    num_positives = positives.sum(dim=1)
    has_positive = num_positives > 0
    # where() rather than multiply: excluded entries hold -inf and 0 * -inf is nan.
    pos_log_prob = torch.where(positives, log_prob, torch.zeros_like(log_prob)).sum(dim=1)
    per_anchor = -pos_log_prob / num_positives.clamp(min=1)
    # A masked mean rather than boolean indexing, which would wait for the GPU to count the anchors.
    return torch.where(has_positive, per_anchor, 0.0).sum() / has_positive.sum()


def weighted_mean(losses: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
    """sum_k w_k * loss_k / sum_k w_k: a composite cluster spec's loss over its clusterings ("wordnet:7@0.5+...")."""
    if len(losses) != len(weights) or not losses:
        raise ValueError(f"need one weight per loss, got {len(weights)} weights for {len(losses)} losses")
    w = torch.tensor(weights, dtype=losses[0].dtype, device=losses[0].device)
    return (torch.stack(losses) * w).sum() / w.sum()


def nt_xent(z: torch.Tensor, temperature: float, num_views: int = 2) -> torch.Tensor:
    """SimCLR's NT-Xent over (V*B, d) embeddings laid out view-major: rows [v*B + b] are views of sample b."""
    batch = z.shape[0] // num_views
    ids = torch.arange(batch, device=z.device).repeat(num_views)
    return cluster_info_nce(z, ids, temperature)


@in_float32
def info_nce(query: torch.Tensor, key: torch.Tensor, negatives: torch.Tensor, temperature: float) -> torch.Tensor:
    """MoCo's InfoNCE: one positive key per query, negatives shared by all queries.

    query, key: (B, d) L2-normalised; negatives: (K, d) L2-normalised (e.g. the queue).
    Returns mean over b of -log( exp(q_b.k_b/T) / (exp(q_b.k_b/T) + sum_k exp(q_b.n_k/T)) ).
    """
    positive = (query * key).sum(dim=1, keepdim=True)
    logits = torch.cat([positive, query @ negatives.T], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(query.shape[0], dtype=torch.long, device=query.device))


@in_float32
def proto_nce(
    query: torch.Tensor,
    prototypes: torch.Tensor,
    concentration: torch.Tensor,
    positive_ids: torch.Tensor,
    negative_ids: torch.Tensor,
) -> torch.Tensor:
    """PCL's prototype term of ProtoNCE for one clustering, built as facebookresearch/PCL pcl/builder.py does.

    query: (B, d) L2-normalised; prototypes: (K, d) L2-normalised centroids; concentration: (K,) phi per cluster;
    positive_ids: (B,) int64, the cluster of each query; negative_ids: (r,) int64, sampled once per batch from
    the clusters that are nobody's positive.
    The candidates are the B positive prototypes of the batch followed by the r negatives, so a query's
    candidates include the other queries' positive prototypes too (a cluster shared by two queries appears
    twice, once as the positive and once as a negative, exactly as in PCL). Each logit is divided by its
    prototype's own concentration. Returns the scalar mean over b of
        -log( exp(q_b.c_{p_b} / phi_{p_b}) / sum_{j in positive_ids ++ negative_ids} exp(q_b.c_j / phi_j) ).
    With one cluster per sample, prototypes = the keys and phi = T everywhere, this is InfoNCE whose negatives
    for q_b are the other keys of the batch plus the r negative prototypes.
    """
    selected = torch.cat([positive_ids, negative_ids])
    logits = query @ prototypes[selected].T / concentration[selected]
    return F.cross_entropy(logits, torch.arange(query.shape[0], device=query.device))


def _no_reduce(x: torch.Tensor) -> torch.Tensor:
    return x


@torch.no_grad()
@in_float32
def sinkhorn(scores: torch.Tensor, epsilon: float, iterations: int, world_size: int = 1,
             all_reduce=_no_reduce) -> torch.Tensor:
    """SwAV's codes: Sinkhorn-Knopp's equal-partition soft assignment of B samples to K prototypes, as the official
    facebookresearch/swav `distributed_sinkhorn`.

    scores: (B, K) cosines of this process's samples (queue rows first, if any) with the prototypes. With Q =
    exp(scores / epsilon)^T (K x B_total over all processes) scaled to sum 1, each iteration divides every row by
    its sum times K (each prototype gets 1/K of the mass), then every column by its sum times B_total (each sample
    1/B_total); the result is Q * B_total transposed, so each sample's code sums to 1. `all_reduce` sums a tensor
    over the processes in place (torch.distributed's, under torchrun): the total and the row sums are global, the
    column sums are each process's own samples. Returns (B, K), no gradient.
    """
    q = torch.exp(scores / epsilon).t()
    total = q.shape[1] * world_size
    k = q.shape[0]
    q /= all_reduce(q.sum())
    for _ in range(iterations):
        q /= all_reduce(q.sum(dim=1, keepdim=True))
        q /= k
        q /= q.sum(dim=0, keepdim=True)
        q /= total
    return (q * total).t()


@in_float32
def swapped_prediction(scores: torch.Tensor, codes: torch.Tensor, temperature: float) -> torch.Tensor:
    """SwAV's loss: each view's code predicted from every other view's scores (main_swav.py's loss with
    crops_for_assign = every view).

    scores: (V, B, K) cosines of each view's normalised projections with the normalised prototypes; codes:
    (V, B, K) each view's Sinkhorn codes. Returns the mean over the views v of
        1/(V-1) * sum_{u != v} mean_b( -sum_k codes[v, b, k] * log_softmax(scores[u, b] / T)[k] ).
    """
    views = scores.shape[0]
    log_p = F.log_softmax(scores / temperature, dim=2)
    total = scores.new_zeros(())
    for v in range(views):
        for u in range(views):
            if u != v:
                total = total - (codes[v] * log_p[u]).sum(dim=1).mean() / (views - 1)
    return total / views


@in_float32
def prototype_cross_entropy(z: torch.Tensor, prototypes: torch.Tensor, targets: torch.Tensor,
                            temperature: float) -> torch.Tensor:
    """DeepCluster-v2's loss for one clustering: cross-entropy of the (N, d) L2-normalised projections' cosines
    with the (K, d) frozen, normalised centroids, divided by T, against each row's (N,) k-means assignment; rows
    whose target is negative (not yet assigned) are left out of the mean (main_deepclusterv2.py's ignore_index).
    Returns 0 with a gradient when no row is assigned."""
    logits = z @ prototypes.T / temperature
    assigned = targets >= 0
    per_row = F.cross_entropy(logits, targets.clamp(min=0), reduction="none")
    return torch.where(assigned, per_row, 0.0).sum() / assigned.sum().clamp(min=1)
