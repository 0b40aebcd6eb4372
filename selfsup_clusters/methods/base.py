"""The one base class every method subclasses (solo-learn style): a backbone, a name and a training step."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from selfsup_clusters.clusters.spec import parse_spec
from selfsup_clusters.methods.losses import weighted_mean

if TYPE_CHECKING:  # type hints only: the schema sits below, and imports nothing of this
    from selfsup_clusters.config import Config


class Method(nn.Module):
    """A training method. The trainer calls, per step, `training_step(views, index, label)` and `after_step()`;
    per clustering, `set_clusters(assignments)` when `uses_clusters`.

    training_step returns a dict with "loss" (scalar tensor to minimise), "z" ((B, d) detached, L2-normalised
    per-sample embedding for the memory bank) and any further scalars to log.
    """

    name: ClassVar[str]
    uses_clusters: ClassVar[bool] = False
    needs_labels: ClassVar[bool] = False  # the trainer checks every training image has one, once, before training
    # The authors' recipe as dotted config keys (optimizer, lr per 256, temperature, method settings): applied
    # beneath the user's --config and key=value (config.load_config), so a comparison trains each method its way.
    recipe: ClassVar[dict[str, object]] = {}
    reference: ClassVar[str] = ""  # where the recipe comes from
    learns_from: ClassVar[str] = ""  # one line for the `methods` table

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
        t = cfg.method_args.temperature
        self.temperature: float | None = self.recipe.get("method_args.temperature") if t is None else t
        self.cluster_spec = parse_spec(cfg.clusters.spec) if self.uses_clusters else None
        self.cluster_weights: list[float] = self.cluster_spec.clustering_weights() if self.cluster_spec else []

    def training_step(self, views: list[torch.Tensor], index: torch.Tensor, label: torch.Tensor) -> dict:
        raise NotImplementedError

    def forward(self, views: list[torch.Tensor], index: torch.Tensor, label: torch.Tensor) -> dict:
        """The training step: the loop calls the module, since DistributedDataParallel syncs gradients only for
        what goes through its forward."""
        return self.training_step(views, index, label)

    def scale_loss(self, loss: torch.Tensor) -> torch.Tensor:
        """loss * T / method_args.base_temperature when that is set (SupCon's and the official Cl-InfoNCE code's
        scaling: a contrastive gradient grows like 1/T, the scaled one does not), else the loss unchanged."""
        base = self.cfg.method_args.base_temperature
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

    def after_step(self) -> None:  # noqa: B027 - optional hook
        pass

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone features used for evaluation (the caller sets eval mode)."""
        return self.backbone(x)

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The embedding the memory bank holds (what k-means clusters), for a fresh forward pass."""
        return F.normalize(self.projector(self.backbone(x)), dim=1)
