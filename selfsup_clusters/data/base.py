"""In-memory image datasets: one uint8 tensor per split, plus what cluster sources need."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Split:
    images: torch.Tensor  # (N, C, H, W) uint8
    labels: torch.Tensor  # (N,) int64; -1 where a sample has no label
    attributes: torch.Tensor | None = None  # (N, A) int64 discrete attribute values, where the data has them

    def __len__(self) -> int:
        return self.images.shape[0]

    def first(self, n: int) -> Split:
        attributes = None if self.attributes is None else self.attributes[:n]
        return Split(self.images[:n], self.labels[:n], attributes)


@dataclass
class ImageDataset:
    name: str
    train: Split
    test: Split
    class_names: list[str]
    mean: tuple[float, ...]  # per channel, in [0, 1], for normalisation
    std: tuple[float, ...]
    wnids: list[str] | None = None  # WordNet ids per class (e.g. n03595614), where known
    attribute_names: list[str] = field(default_factory=list)  # columns of Split.attributes

    @property
    def channels(self) -> int:
        return self.train.images.shape[1]

    @property
    def image_size(self) -> int:
        return self.train.images.shape[-1]
