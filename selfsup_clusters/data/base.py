"""Image datasets: per split either one uint8 tensor in memory (small images) or a list of image files
(file-backed: image folders, CSV tables), plus what cluster sources need."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Split:
    images: torch.Tensor | None  # (N, C, H, W) uint8 in memory; None when file-backed (see `paths`)
    labels: torch.Tensor  # (N,) int64; -1 where a sample has no label
    attributes: torch.Tensor | None = None  # (N, A) int64 discrete attribute values, where the data has them
    paths: list[str] | None = None  # file-backed splits: one image file per sample, decoded by DataLoader workers

    def __len__(self) -> int:
        return self.labels.shape[0]

    def first(self, n: int) -> Split:
        return self.select(slice(0, n))

    def select(self, index: slice | torch.Tensor) -> Split:
        """The samples at `index` (a slice or an int64 tensor of positions), in that order."""
        attributes = None if self.attributes is None else self.attributes[index]
        images = None if self.images is None else self.images[index]
        if self.paths is None:
            paths = None
        elif isinstance(index, slice):
            paths = self.paths[index]
        else:
            paths = [self.paths[i] for i in index.tolist()]
        return Split(images, self.labels[index], attributes, paths)


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
    # A two-level class hierarchy from the data itself (CIFAR-100's 20 coarse classes): the superclass id of each
    # class, and the superclasses' names. `--clusters superclass` clusters by it.
    superclasses: list[int] | None = None
    superclass_names: list[str] | None = None

    @property
    def channels(self) -> int:
        return 3 if self.train.images is None else self.train.images.shape[1]  # files are decoded as RGB

    @property
    def image_size(self) -> int | None:
        """Native size of in-memory images; None for files (their sizes vary)."""
        return None if self.train.images is None else self.train.images.shape[-1]
