"""The one base class every method subclasses (solo-learn style), and the option classes methods build theirs on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from selfsup_clusters.clusters.spec import parse_spec
from selfsup_clusters.core.errors import UserError
from selfsup_clusters.methods.losses import weighted_mean

if TYPE_CHECKING:  # type hints only: the schema sits below, and imports nothing of this
    from selfsup_clusters.config import Config


@dataclass
class NoOptions:
    """The options of a method that has none (`method_args` stays empty)."""

    def check(self) -> str | None:
        """None when the values are usable, else the problem in one line (registry.method_options raises it)."""
        return None


@dataclass
class ContrastiveOptions(NoOptions):
    """What every contrastive loss takes; a method's own class sets the defaults its reference uses."""

    temperature: float = 0.1
    # multiply the loss by T / base_temperature (SupCon's and the official Cl-InfoNCE code's scaling, which makes
    # the gradient's size independent of T); None: no scaling
    base_temperature: float | None = None

    def check(self) -> str | None:
        if not self.temperature > 0:
            return "method_args.temperature must be > 0"
        if self.base_temperature is not None and not self.base_temperature > 0:
            return "method_args.base_temperature must be > 0 (or null: no loss scaling)"
        return None


class Method(nn.Module):
    """A training method: one file (this subclass) plus one line in registry.py's METHODS.

    Must define:
      name             the `--method` name (the registry's key)
      learns_from      one line for the `methods` table and the docs' method tables
      reference        where its recipe comes from
      training_step(views, index, label) -> dict: "loss" (scalar tensor to minimise), "z" ((B, d) detached,
                       L2-normalised per-sample embedding the memory bank holds) and any further scalars to log
    May define:
      Options          a dataclass of its settings (`method_args.*`) with the reference's defaults, on NoOptions or
                       ContrastiveOptions (temperature, base_temperature); `check()` refuses unusable values.
                       `cfg.method_args` is an instance of it; config.yaml and final.json record these only
      recipe           dotted config keys beyond its options (optimizer, lr per 256, clusters.*), laid beneath the
                       user's --config and key=value (recipes.load_config)
      needs_cluster_spec  the trainer builds clusters from `--clusters` and hands them to `set_clusters` (before
                       the first step, and whenever k-means re-runs); preflight refuses a run without a spec
      makes_clusters   it clusters by itself (its own prototypes, e.g. SwAV): no spec needed, listed as such
      needs_labels     every training image must have a label (checked once, before training)
      projector        the head `embed` runs after the backbone (a fresh pass's memory-bank embedding); a method
                       without one overrides `embed`
      check_data(cfg, num_samples) -> None or the one-line problem with this data (before the first step)
      set_clusters(assignments) -> parameters it re-initialised (the trainer clears their optimizer state)
      start_epoch(epoch) -> parameters that begin to learn now: called before each epoch's first step, also when
                       a run resumes inside it
      after_backward() called between the backward pass and the optimizer step (SwAV's frozen prototypes)
      after_step()     called after each optimizer step (MoCo's EMA)
      own_clusters(bank) -> [(name, ids (N,))]: a `makes_clusters` method's clusters of the memory bank's rows,
                       for the loop's cluster diagnostics
      features(x)      what evaluation and export read (default: the backbone's features)
    """

    name: ClassVar[str]
    Options: ClassVar[type[NoOptions]] = NoOptions
    needs_cluster_spec: ClassVar[bool] = False
    makes_clusters: ClassVar[bool] = False
    needs_labels: ClassVar[bool] = False
    recipe: ClassVar[dict[str, object]] = {}
    reference: ClassVar[str] = ""
    learns_from: ClassVar[str] = ""
    projector: nn.Module

    def __init__(self, cfg: Config, backbone: nn.Module, num_classes: int = 0, num_clusters: list[int] | None = None):
        """num_classes: labelled classes of the data; num_clusters: K of each clustering of the cluster source
        (for methods whose heads are sized by it)."""
        super().__init__()
        self.cfg = cfg
        self.num_classes = num_classes
        self.num_clusters = num_clusters or []
        self.backbone = backbone
        self.feature_dim: int = backbone.num_features
        self.embedding_dim: int = cfg.model.proj_dim
        self.seed = cfg.seed
        self.args = cfg.method_args  # an instance of Options (registry.method_options made it one)
        self.temperature: float | None = getattr(self.args, "temperature", None)
        self.cluster_spec = parse_spec(cfg.clusters.spec) if self.needs_cluster_spec else None
        self.cluster_weights: list[float] = self.cluster_spec.clustering_weights() if self.cluster_spec else []

    @classmethod
    def check_data(cls, cfg: Config, num_samples: int) -> str | None:
        """None when the method can train on `num_samples` training images with `cfg`, else the problem in one line
        (checked before the first step)."""
        return None

    def training_step(self, views: list[torch.Tensor], index: torch.Tensor, label: torch.Tensor) -> dict:
        raise NotImplementedError

    def forward(self, views: list[torch.Tensor], index: torch.Tensor, label: torch.Tensor) -> dict:
        """The training step: the loop calls the module, since DistributedDataParallel syncs gradients only for
        what goes through its forward."""
        return self.training_step(views, index, label)

    def require_kmeans(self, example: str) -> None:
        """Refuse a cluster spec with a part that is not k-means (a method that learns from centroids)."""
        fixed = [str(part) for part in self.cluster_spec.parts if not part.dynamic]
        if fixed:
            raise UserError(f"method {self.name!r} learns from k-means centroids only, and '{fixed[0]}' is not "
                            f"k-means; use k-means parts only, e.g. --clusters {example}")

    def scale_loss(self, loss: torch.Tensor) -> torch.Tensor:
        """loss * T / method_args.base_temperature when that is set (SupCon's and the official Cl-InfoNCE code's
        scaling: a contrastive gradient grows like 1/T, the scaled one does not), else the loss unchanged."""
        base = self.args.base_temperature
        return loss if base is None else loss * (self.temperature / base)

    def mean_over_clusterings(self, losses: list[torch.Tensor]) -> torch.Tensor:
        """The loss over several clusterings: weighted by the cluster spec's weights ("wordnet:7@0.5+wordnet:9"),
        a plain mean when the count differs (before the first clustering)."""
        if len(losses) == len(self.cluster_weights):
            return weighted_mean(losses, self.cluster_weights)
        return torch.stack(losses).mean()

    def set_clusters(self, assignments) -> list[nn.Parameter]:
        """Take new cluster assignments; return the parameters re-initialised for them (the trainer clears their
        optimizer state)."""
        return []

    def start_epoch(self, epoch: int) -> list[nn.Parameter]:
        """Called before the epoch's first step; returns the parameters that begin to learn at this epoch (the
        trainer starts their optimizer state afresh)."""
        return []

    def after_backward(self) -> None:  # noqa: B027 - optional hook
        pass

    def after_step(self) -> None:  # noqa: B027 - optional hook
        pass

    def own_clusters(self, bank: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
        """A `makes_clusters` method's clusters of the bank's (N, d) rows: [(name, ids (N,) int64)]."""
        return []

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone features used for evaluation (the caller sets eval mode)."""
        return self.backbone(x)

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The embedding the memory bank holds (what k-means clusters), for a fresh forward pass."""
        return F.normalize(self.projector(self.backbone(x)), dim=1)
