"""The config a run trains with: typed defaults <- the method's recipe <- YAML file <- `key=value`.

Above the method registry, so that the schema (config.py) imports no method: `config.read_config` merges and
validates, and this module lays each method's recipe (selfsup_clusters/methods/registry.py) beneath what the user
writes, so `--method moco` trains at MoCo's recipe unless a file or override says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from selfsup_clusters.clusters.spec import parse_spec
from selfsup_clusters.config import Config, read_config
from selfsup_clusters.methods.registry import METHODS, method_class, method_options


def recipe(method: str) -> dict:
    """The method's recipe as {dotted key: value}; nothing for an unknown name (the run's setup names the error)."""
    return dict(METHODS[method].recipe) if method in METHODS else {}


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """The run's config: typed defaults <- the method's recipe <- YAML file (default: configs/fashion_mnist.yaml)
    <- `key=value` overrides, validated; the method's name, its options (`method_args`, made the method's own
    dataclass) and the clusters spec too, here, so that every command and flag that loads a config
    (`--print-config` as much as `train`) refuses a typo the same way."""
    cfg = read_config(path, overrides, recipe)
    method_class(cfg.method)
    cfg.method_args = method_options(cfg.method, cfg.method_args)
    parse_spec(cfg.clusters.spec)
    return cfg


@dataclass(frozen=True)
class UserConfig:
    """What the user asked for: a YAML file and `key=value` overrides. Commands that train several runs
    (compare, analyze, claims, tune) load it once per run with that run's method, clusters and seed on top, so
    each method starts from its own recipe."""

    path: str | None = None
    overrides: tuple[str, ...] = ()

    def load(self, *extra: str) -> Config:
        return load_config(self.path, [*self.overrides, *extra])
