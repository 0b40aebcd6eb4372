"""The method registry: one line per method. A new method is one file (a `Method` subclass) plus one line here.

Checking a name or listing the methods imports the method classes only, never the training loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from selfsup_clusters.core.errors import UserError
from selfsup_clusters.methods.backbones import create_backbone
from selfsup_clusters.methods.base import Method
from selfsup_clusters.methods.baselines.cross_entropy import ClusterCrossEntropy, Supervised
from selfsup_clusters.methods.baselines.moco import MoCo
from selfsup_clusters.methods.baselines.pcl import PCL
from selfsup_clusters.methods.baselines.simclr import SimCLR
from selfsup_clusters.methods.cl_infonce import ClInfoNCE

if TYPE_CHECKING:  # type hints only: the schema sits below, and imports nothing of this
    from selfsup_clusters.config import Config

METHODS: dict[str, type[Method]] = {
    "simclr": SimCLR,
    "cl-infonce": ClInfoNCE,
    "moco": MoCo,
    "pcl": PCL,
    "ce": ClusterCrossEntropy,
    "supervised": Supervised,
}


def method_class(name: str) -> type[Method]:
    if name not in METHODS:
        raise UserError(f"unknown method {name!r}; choose one of: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def build_method(cfg: Config, in_chans: int, num_classes: int = 0, num_clusters: list[int] | None = None) -> Method:
    """The configured method around a fresh timm backbone."""
    return method_class(cfg.method)(cfg, create_backbone(cfg.model, in_chans), num_classes=num_classes,
                                    num_clusters=num_clusters)


RECIPE_COLUMNS = {"optim.name": "optimizer", "optim.lr": "lr/256", "optim.momentum": "momentum",
                  "optim.weight_decay": "wd", "method_args.temperature": "T"}


def methods_table() -> str:
    """One block per method: what it learns from, its recipe (every key it sets) and the reference."""
    lines = []
    for name, kind in METHODS.items():
        recipe = kind.recipe
        main = ", ".join(f"{label} {recipe[key]}" for key, label in RECIPE_COLUMNS.items()
                         if recipe.get(key) is not None)
        nesterov = " (nesterov)" if recipe.get("optim.nesterov") else ""
        rest = ", ".join(f"{key}={value}" for key, value in recipe.items()
                         if key not in RECIPE_COLUMNS and key != "optim.nesterov")
        lines += [f"{name}{' [clusters]' if kind.uses_clusters else ''}: {kind.learns_from}",
                  f"    recipe: {main}{nesterov}; cosine schedule with linear warm-up" + (f"; {rest}" if rest else ""),
                  f"    reference: {kind.reference}"]
    return "\n".join(lines)
