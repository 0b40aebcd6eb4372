import math

import pytest
import torch
import torch.nn.functional as F

from selfsup_clusters.methods.losses import cluster_info_nce, info_nce, nt_xent


def test_nt_xent_matches_hand_computed_case():
    # Two samples, two views, 2-d embeddings at known angles.
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [0.8, -0.6]])  # rows: s0v0, s1v0, s0v1, s1v1
    t = 0.5
    sims = z @ z.T
    expected = 0.0
    for i, pos in [(0, 2), (1, 3), (2, 0), (3, 1)]:
        others = [j for j in range(4) if j != i]
        denominator = sum(math.exp(sims[i, j] / t) for j in others)
        expected += -math.log(math.exp(sims[i, pos] / t) / denominator)
    assert nt_xent(z, t).item() == pytest.approx(expected / 4, rel=1e-6)


def test_cluster_info_nce_averages_over_all_positives():
    z = F.normalize(torch.tensor([[1.0, 0.2], [0.9, 0.1], [0.1, 1.0], [-0.5, 0.4]]), dim=1)
    ids = torch.tensor([0, 0, 0, 1])  # anchor 3 has no positive and is left out
    t = 0.3
    sims = (z @ z.T).tolist()
    expected = []
    for i in range(3):
        denominator = sum(math.exp(sims[i][j] / t) for j in range(4) if j != i)
        positives = [j for j in range(3) if j != i]
        expected.append(-sum(math.log(math.exp(sims[i][p] / t) / denominator) for p in positives) / len(positives))
    assert cluster_info_nce(z, ids, t).item() == pytest.approx(sum(expected) / 3, rel=1e-6)


def test_cluster_info_nce_is_finite_and_rejects_bad_shapes():
    z = F.normalize(torch.randn(8, 4), dim=1)
    assert torch.isfinite(cluster_info_nce(z, torch.arange(4).repeat(2), 0.1))
    with pytest.raises(ValueError, match="ids must have shape"):
        cluster_info_nce(z, torch.arange(4), 0.1)


def test_info_nce_matches_hand_computed_case():
    q = torch.tensor([[1.0, 0.0]])
    k = torch.tensor([[0.6, 0.8]])
    negatives = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])
    t = 0.2
    expected = -math.log(math.exp(0.6 / t) / (math.exp(0.6 / t) + math.exp(0.0 / t) + math.exp(-1.0 / t)))
    assert info_nce(q, k, negatives, t).item() == pytest.approx(expected, rel=1e-6)
