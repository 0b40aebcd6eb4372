"""Image datasets: per split either one uint8 tensor in memory (small images) or a list of image files
(file-backed: image folders, CSV tables), plus what cluster sources need."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

import torch

from selfsup_clusters.core.errors import UserError

WNID_PATTERN = re.compile(r"^n(\d{8})$")  # an ImageNet/WordNet id: "n" + the synset's offset in data.noun


@dataclass(frozen=True)
class AuxiliaryInfo:
    """What cluster sources may build clusters from, for the N training samples: the labels (-1 = unlabelled),
    the classes' names and WordNet ids, per-sample attributes, and the classes' superclasses."""

    labels: torch.Tensor  # (N,) int64
    class_names: list[str]
    wnids: list[str] | None = None
    attributes: torch.Tensor | None = None  # (N, A) int64
    attribute_names: list[str] | None = None
    superclasses: list[int] | None = None  # the superclass id of each class
    superclass_names: list[str] | None = None


@dataclass
class Split:
    images: torch.Tensor | None  # (N, C, H, W) uint8 in memory; None when file-backed (see `paths`)
    labels: torch.Tensor  # (N,) int64; -1 where a sample has no label
    attributes: torch.Tensor | None = None  # (N, A) int64 discrete attribute values, where the data has them
    paths: list[str] | None = None  # file-backed splits: one image file per sample, decoded by DataLoader workers

    def __len__(self) -> int:
        return self.labels.shape[0]

    @property
    def labelled(self) -> bool:
        """Some sample has a label (-1: none): the split can be scored."""
        return bool((self.labels >= 0).any())

    @property
    def fully_labelled(self) -> bool:
        """Every sample has a label (what supervised and cross-entropy-on-labels training need)."""
        return bool((self.labels >= 0).all())

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
    # image files left out because they could not be decoded (data.skip_unreadable=true; data/cache.py)
    skipped_files: list[str] = field(default_factory=list)

    def holdout(self, fraction: float, seed: int = 0) -> ImageDataset:
        """This dataset with a validation split held out of the training set in place of the test set, so that
        every choice made on it never reads the test set. Stratified: each label (unlabelled samples count as one
        more group) gives round(fraction * its count) samples, chosen by a permutation seeded with `seed` (fixed,
        so every run of a comparison or a tuning grid holds out the same samples)."""
        if not 0 < fraction < 1:
            raise UserError(f"data.val_fraction must lie in (0, 1), got {fraction}")
        generator = torch.Generator().manual_seed(seed)
        held = []
        for label in self.train.labels.unique().tolist():
            members = (self.train.labels == label).nonzero().squeeze(1)
            members = members[torch.randperm(len(members), generator=generator)]
            held.append(members[: round(fraction * len(members))])
        is_val = torch.zeros(len(self.train), dtype=torch.bool)
        is_val[torch.cat(held)] = True
        if is_val.all() or not is_val.any():
            raise UserError(f"data.val_fraction={fraction} leaves no training or no validation samples out of "
                            f"{len(self.train)}; use more data or another fraction")
        return replace(self, train=self.train.select(torch.nonzero(~is_val).squeeze(1)),
                       test=self.train.select(torch.nonzero(is_val).squeeze(1)))

    @property
    def auxiliary(self) -> AuxiliaryInfo:
        """The training split's auxiliary information, for cluster sources and their statistics."""
        return AuxiliaryInfo(self.train.labels, list(self.class_names), self.wnids, self.train.attributes,
                             self.attribute_names or None, self.superclasses, self.superclass_names)

    @property
    def scorable(self) -> bool:
        """Both splits have labels: kNN and the linear probe can score a representation of this data."""
        return self.train.labelled and self.test.labelled

    @property
    def channels(self) -> int:
        return 3 if self.train.images is None else self.train.images.shape[1]  # files are decoded as RGB

    @property
    def image_size(self) -> int | None:
        """Native size of in-memory images; None for files (their sizes vary)."""
        return None if self.train.images is None else self.train.images.shape[-1]
