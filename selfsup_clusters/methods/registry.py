"""The method registry: one line per method. A new method is one file (a `Method` subclass with its `Options`)
plus one line here; the `--method` help, the `methods` table, the docs' method tables (tests/test_registry.py)
and every test that checks all methods read this dict.

Checking a name or listing the methods imports the method classes only, never the training loop.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import asdict, fields
from typing import TYPE_CHECKING

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from selfsup_clusters.core.errors import UserError, first_line
from selfsup_clusters.methods.backbones import create_backbone
from selfsup_clusters.methods.base import Method, NoOptions
from selfsup_clusters.methods.baselines.cross_entropy import ClusterCrossEntropy, Supervised
from selfsup_clusters.methods.baselines.deepcluster import DeepClusterV2
from selfsup_clusters.methods.baselines.moco import MoCo
from selfsup_clusters.methods.baselines.pcl import PCL
from selfsup_clusters.methods.baselines.simclr import SimCLR
from selfsup_clusters.methods.baselines.swav import SwAV
from selfsup_clusters.methods.cl_infonce import ClInfoNCE

if TYPE_CHECKING:  # type hints only: the schema sits below, and imports nothing of this
    from selfsup_clusters.config import Config

METHODS: dict[str, type[Method]] = {
    "simclr": SimCLR,
    "cl-infonce": ClInfoNCE,
    "moco": MoCo,
    "pcl": PCL,
    "deepcluster-v2": DeepClusterV2,
    "swav": SwAV,
    "ce": ClusterCrossEntropy,
    "supervised": Supervised,
}


def method_class(name: str) -> type[Method]:
    if name not in METHODS:
        raise UserError(f"unknown method {name!r}; choose one of: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def option_names(kind: type[Method]) -> list[str]:
    return [f.name for f in fields(kind.Options)]


def method_options(name: str, given: Mapping | NoOptions) -> NoOptions:
    """`method_args` as the method's own Options: its defaults <- `given` (the config's mapping), typed and checked.
    A key no method declares is an error naming the method, its options and the nearest name; a key another method
    declares is left to that method (a shared file such as configs/claims_cpu.yaml sets moco's queue for every
    method the claims train), so the run records its own method's options only."""
    kind = method_class(name)
    if isinstance(given, kind.Options):
        given = asdict(given)
    own = option_names(kind)
    known = {option for other in METHODS.values() for option in option_names(other)}
    for key in given:
        if key not in own and key not in known:
            near = difflib.get_close_matches(key, own, n=1) or difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"; did you mean method_args.{near[0]}?" if near else ""
            valid = ", ".join(own) if own else "none"
            raise UserError(f"method_args.{key}: method {name!r} has no such option{hint} (its options: {valid})")
    try:
        typed = OmegaConf.merge(OmegaConf.structured(kind.Options), {k: v for k, v in given.items() if k in own})
        options: NoOptions = OmegaConf.to_object(typed)  # type: ignore[assignment]
    except OmegaConfBaseException as e:
        raise UserError(f"method_args (method {name!r}): {first_line(e)}") from None
    problem = options.check()
    if problem:
        raise UserError(problem)
    return options


def build_method(cfg: Config, in_chans: int, num_classes: int = 0, num_clusters: list[int] | None = None) -> Method:
    """The configured method around a fresh timm backbone (a config built in Python gets its typed options here)."""
    kind = method_class(cfg.method)
    if not isinstance(cfg.method_args, kind.Options):
        cfg.method_args = method_options(cfg.method, cfg.method_args)
    return kind(cfg, create_backbone(cfg.model, in_chans), num_classes=num_classes, num_clusters=num_clusters)


RECIPE_COLUMNS = {"optim.name": "optimizer", "optim.lr": "lr/256", "optim.momentum": "momentum",
                  "optim.weight_decay": "wd"}


def clusters_column(kind: type[Method]) -> str:
    if kind.needs_cluster_spec:
        return "a `--clusters` spec"
    return "its own" if kind.makes_clusters else "not used"


def methods_table() -> str:
    """One block per method: what it learns from, its recipe (every key it sets), its options and the reference."""
    lines = []
    for name, kind in METHODS.items():
        recipe = kind.recipe
        main = ", ".join(f"{label} {recipe[key]}" for key, label in RECIPE_COLUMNS.items()
                         if recipe.get(key) is not None)
        nesterov = " (nesterov)" if recipe.get("optim.nesterov") else ""
        rest = ", ".join(f"{key}={value}" for key, value in recipe.items()
                         if key not in RECIPE_COLUMNS and key != "optim.nesterov")
        options = ", ".join(f"{key}={value}" for key, value in asdict(kind.Options()).items()) or "none"
        marks = "".join(f" [{mark}]" for mark, on in (("clusters", kind.needs_cluster_spec),
                                                      ("own clusters", kind.makes_clusters)) if on)
        lines += [f"{name}{marks}: {kind.learns_from}",
                  f"    recipe: {main}{nesterov}; cosine schedule with linear warm-up" + (f"; {rest}" if rest else ""),
                  f"    method_args: {options}",
                  f"    reference: {kind.reference}"]
    return "\n".join(lines)


def methods_markdown(options: bool = True) -> str:
    """The method table of docs/training.md (with each method's options) and of the README (without): written by
    tools/method_docs.py, kept equal by tests/test_registry.py."""
    head = ["| method (`--method`) | what it learns from | clusters |" + (" its options (`method_args.*`) |" * options),
            "|---|---|---|" + "---|" * options]
    rows = [f"| `{name}` | {kind.learns_from} | {clusters_column(kind)} |"
            + (f" {', '.join(f'`{option}`' for option in option_names(kind)) or '-'} |" * options)
            for name, kind in METHODS.items()]
    return "\n".join([*head, *rows])
