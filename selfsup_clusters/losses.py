"""Pure loss functions. Inputs are plain tensors; nothing is stored between calls.

Notation: B samples in a batch, V views each, d embedding size, N = V * B rows. Embeddings are L2-normalised
by the caller. Every loss is in log-sum-exp (cross-entropy) form, so it is stable for small temperatures.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cluster_info_nce(z: torch.Tensor, ids: torch.Tensor, temperature: float) -> torch.Tensor:
    """Contrastive loss whose positives are all other rows with the same id (Cl-InfoNCE / SupCon "out" form).

    z: (N, d) L2-normalised embeddings of every view in the batch.
    ids: (N,) int64; rows with equal ids are positives of each other.
         ids = sample index  -> SimCLR's NT-Xent (the only positive is the other view of the same image);
         ids = class labels  -> supervised contrastive; ids = cluster ids -> Cl-InfoNCE.
    Returns the scalar mean over anchors of
        -1/|P(i)| * sum_{p in P(i)} log( exp(z_i.z_p / T) / sum_{a != i} exp(z_i.z_a / T) ),
    with P(i) = {j != i : ids[j] == ids[i]}. Anchors without a positive are left out of the mean.
    """
    n = z.shape[0]
    if ids.shape != (n,):
        raise ValueError(f"ids must have shape ({n},), got {tuple(ids.shape)}")
    self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
    logits = (z @ z.T / temperature).masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positives = (ids.view(-1, 1) == ids.view(1, -1)) & ~self_mask
    num_positives = positives.sum(dim=1)
    has_positive = num_positives > 0
    # where() rather than multiply: the diagonal holds -inf and 0 * -inf is nan.
    pos_log_prob = torch.where(positives, log_prob, torch.zeros_like(log_prob)).sum(dim=1)
    per_anchor = -pos_log_prob[has_positive] / num_positives[has_positive]
    return per_anchor.mean()


def nt_xent(z: torch.Tensor, temperature: float, num_views: int = 2) -> torch.Tensor:
    """SimCLR's NT-Xent over (V*B, d) embeddings laid out view-major: rows [v*B + b] are views of sample b."""
    batch = z.shape[0] // num_views
    ids = torch.arange(batch, device=z.device).repeat(num_views)
    return cluster_info_nce(z, ids, temperature)


def info_nce(query: torch.Tensor, key: torch.Tensor, negatives: torch.Tensor, temperature: float) -> torch.Tensor:
    """MoCo's InfoNCE: one positive key per query, negatives shared by all queries.

    query, key: (B, d) L2-normalised; negatives: (K, d) L2-normalised (e.g. the queue).
    Returns mean over b of -log( exp(q_b.k_b/T) / (exp(q_b.k_b/T) + sum_k exp(q_b.n_k/T)) ).
    """
    positive = (query * key).sum(dim=1, keepdim=True)
    logits = torch.cat([positive, query @ negatives.T], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(query.shape[0], dtype=torch.long, device=query.device))
