"""Evaluation shared by every method: feature extraction with norm layers in eval mode, weighted kNN."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn


@torch.no_grad()
def extract_features(
    encode: Callable[[torch.Tensor], torch.Tensor],
    batches: Iterable[torch.Tensor],
    modules: list[nn.Module] | None = None,
) -> torch.Tensor:
    """L2-normalised features of every batch of network input (e.g. `Batches.eval`), (N, D) float32 on the CPU.

    The `modules` are put in eval mode for the pass (BatchNorm uses running statistics) and restored afterwards.
    """
    modules = modules or []
    was_training = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        return torch.cat([F.normalize(encode(x).float(), dim=1).cpu() for x in batches])
    finally:
        for m, mode in zip(modules, was_training, strict=True):
            m.train(mode)


@torch.no_grad()
def weighted_knn(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    k: int = 200,
    temperature: float = 0.1,
    chunk_size: int = 1024,
) -> float:
    """Top-1 accuracy of the weighted kNN classifier of Wu et al. (2018), as in solo-learn and the MoCo demo.

    Features are L2-normalised (N, D); each test sample votes over its k most cosine-similar training samples
    with weight exp(similarity / temperature). Training samples labelled -1 are ignored.
    """
    keep = train_labels >= 0
    train_features, train_labels = train_features[keep], train_labels[keep]
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    k = min(k, train_features.shape[0])
    correct = 0
    for start in range(0, test_features.shape[0], chunk_size):
        sims = test_features[start : start + chunk_size] @ train_features.T
        top_sims, top_idx = sims.topk(k, dim=1)
        weights = (top_sims / temperature).exp()
        votes = torch.zeros(sims.shape[0], num_classes, dtype=weights.dtype)
        votes.scatter_add_(1, train_labels[top_idx], weights)
        correct += (votes.argmax(dim=1) == test_labels[start : start + chunk_size]).sum().item()
    return correct / test_features.shape[0]


def raw_pixel_knn(train_images: torch.Tensor, train_labels: torch.Tensor, test_images: torch.Tensor,
                  test_labels: torch.Tensor, k: int = 200, temperature: float = 0.1) -> float:
    """The same kNN on raw pixels (mean-centred, L2-normalised): the floor a representation should beat."""
    train = train_images.flatten(1).float()
    mean = train.mean(dim=0, keepdim=True)
    train_features = F.normalize(train - mean, dim=1)
    test_features = F.normalize(test_images.flatten(1).float() - mean, dim=1)
    return weighted_knn(train_features, train_labels, test_features, test_labels, k, temperature)
