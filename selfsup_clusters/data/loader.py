"""Where batches come from: the one interface the loop reads images through.

`train(split, order, batch_size, generator)` yields `(views, index, labels)` for one epoch in the given sample order;
`eval(split, batch_size)` yields the centre view of every image, in order. Datasets held in memory as one
uint8 tensor (`Split.images` is a tensor) are augmented in whole batches on the training device
(`InMemoryBatches`); `make_batches` picks the implementation for a dataset.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from selfsup_clusters.data.augment import BatchAugment
from selfsup_clusters.data.base import ImageDataset, Split


class InMemoryBatches:
    def __init__(self, augment: BatchAugment, device: torch.device):
        self.augment = augment
        self.device = device

    def train(self, split: Split, order: torch.Tensor, batch_size: int,
              generator: torch.Generator) -> Iterator[tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]]:
        labels = split.labels.to(self.device)  # on the device, so a step never waits for the host
        for step in range(len(order) // batch_size):
            index = order[step * batch_size : (step + 1) * batch_size]
            yield self.augment.views(split.images[index], generator), index, labels[index]

    def eval(self, split: Split, batch_size: int) -> Iterator[torch.Tensor]:
        for start in range(0, len(split), batch_size):
            yield self.augment.center(split.images[start : start + batch_size].to(self.device))


def make_batches(data: ImageDataset, augment: BatchAugment, device: torch.device) -> InMemoryBatches:
    data.train.images = data.train.images.to(device)
    return InMemoryBatches(augment, device)
