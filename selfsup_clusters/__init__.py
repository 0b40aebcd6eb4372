"""selfsup-clusters: self-supervised representation learning from clusters.

The library API (docs/library.md): the loss `cluster_info_nce`; cluster sources from a spec over `AuxiliaryInfo`
(`build_cluster_source("labels" | "wordnet:L" | "attributes:K" | "kmeans:K", aux)`); training from Python
(`train(load_config(...))`, `resume(run_dir)`); a trained backbone taken out (`export_backbone`, `load_backbone`,
`embed`); a run's clusters read back (`load_clusters`, `draw_clusters`).

The names load on first use, so `import selfsup_clusters` (and the command line) stays quick.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING


def _version() -> str:
    """The one version string, pyproject.toml's, as installed; a source tree that was never installed has none."""
    from importlib import metadata

    try:
        return metadata.version("selfsup-clusters")
    except metadata.PackageNotFoundError:
        return "0+unknown"


__version__ = _version()

_EXPORTS = {
    "cluster_info_nce": "selfsup_clusters.methods.losses",
    "AuxiliaryInfo": "selfsup_clusters.data.base",
    "Assignments": "selfsup_clusters.clusters",
    "ClusterSource": "selfsup_clusters.clusters",
    "KMeansOptions": "selfsup_clusters.clusters",
    "build_cluster_source": "selfsup_clusters.clusters",
    "Config": "selfsup_clusters.config",
    "load_config": "selfsup_clusters.recipes",
    "METHODS": "selfsup_clusters.methods.registry",
    "train": "selfsup_clusters.training.trainer",
    "resume": "selfsup_clusters.training.trainer",
    "export_backbone": "selfsup_clusters.training.export",
    "load_backbone": "selfsup_clusters.training.export",
    "embed": "selfsup_clusters.training.export",
    "load_clusters": "selfsup_clusters.clusters.archive",
    "draw_clusters": "selfsup_clusters.training.cluster_views",
    "UserError": "selfsup_clusters.core.errors",
}

__all__ = [  # the names of _EXPORTS, spelled out for type checkers and linters
    "METHODS",
    "Assignments",
    "AuxiliaryInfo",
    "ClusterSource",
    "Config",
    "KMeansOptions",
    "UserError",
    "__version__",
    "build_cluster_source",
    "cluster_info_nce",
    "draw_clusters",
    "embed",
    "export_backbone",
    "load_backbone",
    "load_clusters",
    "load_config",
    "resume",
    "train",
]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'selfsup_clusters' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


if TYPE_CHECKING:
    from selfsup_clusters.clusters import Assignments, ClusterSource, KMeansOptions, build_cluster_source
    from selfsup_clusters.clusters.archive import load_clusters
    from selfsup_clusters.config import Config
    from selfsup_clusters.core.errors import UserError
    from selfsup_clusters.data.base import AuxiliaryInfo
    from selfsup_clusters.methods.losses import cluster_info_nce
    from selfsup_clusters.methods.registry import METHODS
    from selfsup_clusters.recipes import load_config
    from selfsup_clusters.training.cluster_views import draw_clusters
    from selfsup_clusters.training.export import embed, export_backbone, load_backbone
    from selfsup_clusters.training.trainer import resume, train
