"""CIFAR-10 and CIFAR-100 from their standard python-pickle folders (`cifar-10-batches-py`, `cifar-100-python`).

The files are the ones torchvision's CIFAR10/CIFAR100 download (`--download` uses them), but they are read here
directly: torchvision's CIFAR100 drops the `coarse_labels` that give the 20 superclasses, and its md5 check of every
file on every load would refuse the small copies the tests make.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torchvision.datasets import CIFAR10, CIFAR100

from selfsup_clusters.core.errors import UserError
from selfsup_clusters.data.base import ImageDataset, Split

if TYPE_CHECKING:  # type hints only: the schema sits above data (it imports evaluation's protocols)
    from selfsup_clusters.config import DataConfig

DEFAULT_ROOT = Path.home() / ".cache" / "selfsup-clusters"  # without --data-root
MEAN_STD = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as e:
        raise UserError(f"{path} is not a readable CIFAR batch ({e}); is the download complete?") from None


def _folder(cfg: DataConfig, torchvision_class: type[CIFAR10]) -> Path:
    """The folder holding the batches: --data-root itself or its `cifar-10-batches-py`-style subfolder."""
    root = Path(cfg.root) if cfg.root else DEFAULT_ROOT
    base = torchvision_class.base_folder
    if cfg.download and not (root / base).is_dir() and not (root / torchvision_class.meta["filename"]).is_file():
        torchvision_class(str(root), train=True, download=True)
    for folder in (root / base, root):
        if (folder / torchvision_class.meta["filename"]).is_file():
            return folder
    raise UserError(
        f"{cfg.name} not found: {root / base} must hold the python-pickle batches "
        f"({', '.join(name for name, _ in torchvision_class.train_list + torchvision_class.test_list)}, "
        f"{torchvision_class.meta['filename']}); point --data-root at the folder containing {base}, or pass --download"
    )


def _split(folder: Path, files: list[list[str]], label_key: str) -> tuple[torch.Tensor, np.ndarray, np.ndarray | None]:
    images, labels, coarse = [], [], []
    for name, _md5 in files:
        path = folder / name
        if not path.is_file():
            raise UserError(f"{path} is missing; the CIFAR folder {folder} is incomplete (re-extract it or --download)")
        batch = _unpickle(path)
        try:  # a pickle that loads but is not a whole CIFAR batch: cut short, or another file under this name
            images.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.append(np.asarray(batch[label_key], dtype=np.int64).reshape(-1))
            if "coarse_labels" in batch:
                coarse.append(np.asarray(batch["coarse_labels"], dtype=np.int64).reshape(-1))
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise UserError(f"{path} is not a whole CIFAR batch ({type(e).__name__}: {e}); the file is damaged - "
                            "re-extract it or --download") from None
        if len(images[-1]) != len(labels[-1]):
            raise UserError(f"{path} holds {len(images[-1])} images and {len(labels[-1])} labels; the file is "
                            "damaged - re-extract it or --download")
    return (torch.from_numpy(np.concatenate(images)), np.concatenate(labels),
            np.concatenate(coarse) if coarse else None)


def _superclasses(fine: np.ndarray, coarse: np.ndarray, num_classes: int) -> list[int]:
    """Each fine class's coarse class, read from the (fine, coarse) label pairs of the data."""
    mapping: dict[int, int] = {}
    for f, c in np.unique(np.stack([fine, coarse], axis=1), axis=0).tolist():
        if mapping.setdefault(f, c) != c:
            raise UserError(f"CIFAR-100 class {f} has two coarse labels ({mapping[f]} and {c}); the files are damaged")
    missing = [c for c in range(num_classes) if c not in mapping]
    if missing:
        raise UserError(f"the CIFAR-100 files hold no image of classes {missing[:5]}; they are incomplete")
    return [mapping[c] for c in range(num_classes)]


def _load(cfg: DataConfig, name: str, torchvision_class: type[CIFAR10], label_key: str) -> ImageDataset:
    folder = _folder(cfg, torchvision_class)
    meta = _unpickle(folder / torchvision_class.meta["filename"])
    class_names = list(meta[torchvision_class.meta["key"]])
    train_images, train_labels, train_coarse = _split(folder, torchvision_class.train_list, label_key)
    test_images, test_labels, test_coarse = _split(folder, torchvision_class.test_list, label_key)
    superclasses = superclass_names = None
    if train_coarse is not None and test_coarse is not None:
        superclasses = _superclasses(np.concatenate([train_labels, test_labels]),
                                     np.concatenate([train_coarse, test_coarse]), len(class_names))
        superclass_names = list(meta["coarse_label_names"])
    mean, std = MEAN_STD[name]
    return ImageDataset(
        name=name,
        train=Split(train_images, torch.from_numpy(train_labels)),
        test=Split(test_images, torch.from_numpy(test_labels)),
        class_names=class_names,
        mean=mean,
        std=std,
        superclasses=superclasses,
        superclass_names=superclass_names,
    )


def load_cifar10(cfg: DataConfig, path: str | None = None) -> ImageDataset:
    return _load(cfg, "cifar10", CIFAR10, "labels")


def load_cifar100(cfg: DataConfig, path: str | None = None) -> ImageDataset:
    return _load(cfg, "cifar100", CIFAR100, "fine_labels")
