"""STL-10 from its binary folder (`stl10_binary`: train_X.bin, train_y.bin, test_X.bin, test_y.bin,
unlabeled_X.bin, class_names.txt), 96x96 colour images held in memory.

The training split is the 5,000 labelled images followed by the 100,000 unlabeled ones (label -1) when
`data.unlabeled` is on: pre-training sees all of them, the kNN evaluation only the labelled ones. The files are the
ones torchvision's STL10 downloads (`--download`), read here directly: torchvision's class md5-checks the 2.6 GB of
files on every load.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torchvision.datasets import STL10

from selfsup_clusters.core.errors import UserError
from selfsup_clusters.data.base import ImageDataset, Split
from selfsup_clusters.data.cifar import DEFAULT_ROOT

if TYPE_CHECKING:  # type hints only: the schema sits above data (it imports evaluation's protocols)
    from selfsup_clusters.config import DataConfig

CLASS_NAMES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]


def _read_images(path: Path) -> torch.Tensor:
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size % (3 * 96 * 96):
        raise UserError(f"{path} is not a whole number of 96x96 colour images; is the download complete?")
    # The binary format stores each image channel-major and column-major: transpose to (N, C, H, W).
    return torch.from_numpy(raw.reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2).copy())


def _read_labels(path: Path, count: int) -> torch.Tensor:
    labels = torch.from_numpy(np.fromfile(path, dtype=np.uint8).astype(np.int64)) - 1  # stored 1..10
    if len(labels) != count:
        raise UserError(f"{path} holds {len(labels)} labels for {count} images; the files are damaged")
    return labels


def load_stl10(cfg: DataConfig, path: str | None = None) -> ImageDataset:
    root = Path(cfg.root) if cfg.root else DEFAULT_ROOT
    needed = ["train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin", *(["unlabeled_X.bin"] * cfg.unlabeled)]
    if cfg.download and not (root / STL10.base_folder / "train_X.bin").is_file():
        STL10(str(root), split="train", download=True)
    folder = root if (root / "train_X.bin").is_file() else root / STL10.base_folder  # the folder itself, or its parent
    missing = [name for name in needed if not (folder / name).is_file()]
    if missing:
        only_unlabeled = missing == ["unlabeled_X.bin"]
        hint = " (or data.unlabeled=false to train on the labelled images only)" if only_unlabeled else ""
        raise UserError(f"STL-10 not found: {folder} lacks {', '.join(missing)}; point --data-root at the folder "
                        f"containing {STL10.base_folder}, or pass --download{hint}")
    splits = {}
    for split in ("train", "test"):
        images = _read_images(folder / f"{split}_X.bin")
        splits[split] = Split(images, _read_labels(folder / f"{split}_y.bin", len(images)))
    if cfg.unlabeled:
        unlabeled = _read_images(folder / "unlabeled_X.bin")
        train = splits["train"]
        splits["train"] = Split(torch.cat([train.images, unlabeled]),
                                torch.cat([train.labels, torch.full((len(unlabeled),), -1, dtype=torch.int64)]))
    names_file = folder / STL10.class_names_file
    class_names = names_file.read_text().split() if names_file.is_file() else list(CLASS_NAMES)
    return ImageDataset(
        name="stl10",
        train=splits["train"],
        test=splits["test"],
        class_names=class_names,
        mean=(0.4467, 0.4398, 0.4066),
        std=(0.2603, 0.2566, 0.2713),
    )
