"""Fashion-MNIST from the IDX files of Debian's `dataset-fashion-mnist` (or any folder holding them)."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from selfsup_clusters.core.errors import UserError, first_line
from selfsup_clusters.data.base import ImageDataset, Split

if TYPE_CHECKING:  # type hints only: the schema sits above data (it imports evaluation's protocols)
    from selfsup_clusters.config import DataConfig

DEBIAN_ROOT = "/usr/share/datasets/fashion-mnist"
DOWNLOAD_ROOT = Path.home() / ".cache" / "selfsup-clusters" / "fashion-mnist"  # --download without --data-root
CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IDX_DTYPES = {0x08: np.uint8}
DAMAGED = ("the file is truncated or damaged - reinstall it (sudo apt-get install --reinstall dataset-fashion-mnist), "
           "or delete it and pass --download")


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (the MNIST format: zero, zero, dtype code, ndim, big-endian dims, data), gzipped or not; a
    truncated, damaged or foreign file is one UserError naming it."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:  # a cut-off gzip stream: EOFError; a damaged one: BadGzipFile
        raise UserError(f"cannot read {path} ({first_line(e)}): {DAMAGED}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise UserError(f"{path} is not an IDX file of unsigned bytes: {DAMAGED}")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise UserError(f"{path} ends inside its header: {DAMAGED}")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise UserError(f"{path} holds {data.size} values where its header promises {dims}: {DAMAGED}")
    return data.reshape(dims)


def _find(root: Path, stem: str) -> Path | None:
    for candidate in (root / f"{stem}.gz", root / stem, root / "FashionMNIST" / "raw" / stem):
        if candidate.is_file():
            return candidate
    return None


def load_fashion_mnist(cfg: DataConfig) -> ImageDataset:
    # Without --data-root: Debian's copy, else an earlier --download (the Debian folder is not ours to write to).
    candidates = [Path(cfg.root)] if cfg.root else [Path(DEBIAN_ROOT), DOWNLOAD_ROOT]
    root = next((r for r in candidates if _find(r, FILES["train"][0])), candidates[0])
    if cfg.download and _find(root, FILES["train"][0]) is None:
        from torchvision.datasets import FashionMNIST

        root = candidates[-1]
        for train in (True, False):
            FashionMNIST(str(root), train=train, download=True)
    splits = {}
    for split, (images_stem, labels_stem) in FILES.items():
        images_path, labels_path = _find(root, images_stem), _find(root, labels_stem)
        if images_path is None or labels_path is None:
            raise UserError(
                f"Fashion-MNIST not found in {root}: install it with `sudo apt-get install dataset-fashion-mnist`, "
                f"point --data-root at a folder with the {images_stem}.gz files, or pass --download"
            )
        images = torch.from_numpy(read_idx(images_path).copy()).unsqueeze(1)  # (N, 1, 28, 28)
        labels = torch.from_numpy(read_idx(labels_path).astype(np.int64))
        if len(labels) != len(images):
            raise UserError(f"{images_path} holds {len(images)} images but {labels_path} {len(labels)} labels: one "
                            f"of them is from another copy - {DAMAGED.partition(' - ')[2]}")
        splits[split] = Split(images, labels)
    return ImageDataset(
        name="fashion-mnist",
        train=splits["train"],
        test=splits["test"],
        class_names=list(CLASS_NAMES),
        mean=(0.2860,),
        std=(0.3530,),
    )
