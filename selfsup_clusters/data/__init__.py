"""Dataset registry. Every dataset yields (views, index, label) batches: small ones (Fashion-MNIST, CIFAR, STL-10)
are held in memory as uint8 tensors, image folders and CSV tables are read from their files, through their decoded
cache (data/cache.py; `data.cache=false`: PIL per image, every epoch).

`DATASETS` maps a name to a loader `(DataConfig, path) -> ImageDataset`; `path` is the PATH of the names that take
one (`imagefolder:PATH`, `csv:PATH`), else None.

Owns: datasets and their auxiliary information (base.py), multi-view augmentation, batching, the decoded cache.
May import: core.
The schema's dataclasses (DataConfig, ...) are type hints only here: the schema sits floors above.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from selfsup_clusters.core.errors import UserError
from selfsup_clusters.data.base import ImageDataset, Split
from selfsup_clusters.data.cache import cache_dataset
from selfsup_clusters.data.cifar import load_cifar10, load_cifar100
from selfsup_clusters.data.csv_table import load_csv_table
from selfsup_clusters.data.fashion_mnist import load_fashion_mnist
from selfsup_clusters.data.imagefolder import load_image_folder
from selfsup_clusters.data.stl10 import load_stl10

if TYPE_CHECKING:  # type hints only: the schema sits above data (it imports evaluation's protocols)
    from selfsup_clusters.config import DataConfig

DATASETS: dict[str, Callable[[DataConfig, str | None], ImageDataset]] = {
    "fashion-mnist": lambda cfg, path: load_fashion_mnist(cfg),
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
    "stl10": load_stl10,
    "imagefolder": load_image_folder,  # imagefolder:PATH, or imagefolder with --data-root PATH
    "csv": load_csv_table,  # csv:PATH
}
TAKE_A_PATH = ("imagefolder", "csv")


def load_dataset(cfg: DataConfig) -> ImageDataset:
    """The dataset `cfg` names, as every command sees it: the first `subset` training and `test_subset` test
    images, decoded once where `cache` says so; with `val_fraction` > 0, the validation split held out of the
    training images in place of the test split (ImageDataset.holdout), whose images are then never read. The one
    place each of these happens."""
    kind, _, path = cfg.name.partition(":")
    if kind not in DATASETS:
        raise UserError(f"unknown dataset {cfg.name!r}; choose one of: "
                        f"{', '.join(n + ':PATH' if n in TAKE_A_PATH else n for n in sorted(DATASETS))}")
    if path and kind not in TAKE_A_PATH:
        raise UserError(f"dataset {kind} takes no path ({cfg.name!r}); give its folder with --data-root")
    data = DATASETS[kind](cfg, path or None)
    if cfg.skip_unreadable and not (cfg.cache and data.train.paths is not None):
        raise UserError("data.skip_unreadable=true needs data.cache=true and an image folder or CSV table: the decoded "
                        "cache finds unreadable images once, before training")
    if cfg.subset is not None:
        if cfg.subset > len(data.train):
            raise UserError(
                f"--subset {cfg.subset} is larger than the {len(data.train)} training images of {cfg.name}; "
                f"pass at most {len(data.train)}"
            )
        data.train = data.train.first(cfg.subset)
    if cfg.test_subset is not None and cfg.val_fraction == 0:  # else the validation split stands in for it
        data.test = data.test.first(min(cfg.test_subset, len(data.test)))
    if cfg.cache and data.train.paths is not None:
        data = cache_dataset(data, cfg)[0]
    return data.holdout(cfg.val_fraction) if cfg.val_fraction > 0 else data


__all__ = ["DATASETS", "ImageDataset", "Split", "load_dataset"]
