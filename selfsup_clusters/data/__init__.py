"""Dataset registry. Every dataset is held in memory as uint8 tensors and yields (views, index, label) batches.

`DATASETS` maps a name to a loader `(DataConfig) -> ImageDataset`.
"""

from __future__ import annotations

from collections.abc import Callable

from selfsup_clusters.config import DataConfig
from selfsup_clusters.data.base import ImageDataset, Split
from selfsup_clusters.data.fashion_mnist import load_fashion_mnist
from selfsup_clusters.errors import UserError

DATASETS: dict[str, Callable[[DataConfig], ImageDataset]] = {
    "fashion-mnist": load_fashion_mnist,
}


def load_dataset(cfg: DataConfig) -> ImageDataset:
    if cfg.name not in DATASETS:
        raise UserError(f"unknown dataset {cfg.name!r}; choose one of: {', '.join(sorted(DATASETS))}")
    data = DATASETS[cfg.name](cfg)
    if cfg.subset is not None:
        if cfg.subset > len(data.train):
            raise UserError(
                f"--subset {cfg.subset} is larger than the {len(data.train)} training images of {cfg.name}; "
                f"pass at most {len(data.train)}"
            )
        data.train = data.train.first(cfg.subset)
    if cfg.test_subset is not None:
        data.test = data.test.first(min(cfg.test_subset, len(data.test)))
    return data


__all__ = ["DATASETS", "ImageDataset", "Split", "load_dataset"]
