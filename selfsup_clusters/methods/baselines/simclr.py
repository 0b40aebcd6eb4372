"""SimCLR (Chen et al., 2020): NT-Xent between augmented views; every other view in the batch is a negative."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from selfsup_clusters.core import distributed
from selfsup_clusters.methods.backbones import projection_head
from selfsup_clusters.methods.base import ContrastiveOptions, Method
from selfsup_clusters.methods.losses import cluster_info_nce, nt_xent


@dataclass
class SimCLROptions(ContrastiveOptions):
    temperature: float = 0.5


class SimCLR(Method):
    name = "simclr"
    Options = SimCLROptions
    learns_from = "instances: the other view of the same image against every other view in the batch"
    # Chen et al. 2020, CIFAR-10 (appendix B.9): T 0.5, wd 1e-6; LARS there, SGD with momentum 0.9 here, its lr
    # 0.5 per 256 chosen on the validation split with `tune` from {0.25, 0.5, 1.0} (docs/recipes.md).
    recipe = {"optim.name": "sgd", "optim.lr": 0.5, "optim.momentum": 0.9, "optim.nesterov": False,
              "optim.weight_decay": 1e-6}
    reference = "Chen et al. 2020 (SimCLR), appendix B.9 (CIFAR-10)"

    def __init__(self, cfg, backbone, **kwargs):
        super().__init__(cfg, backbone, **kwargs)
        self.projector = projection_head(self.feature_dim, cfg.model.proj_hidden_dim, cfg.model.proj_dim)

    def training_step(self, views: list[torch.Tensor], index: torch.Tensor, label: torch.Tensor) -> dict:
        z = F.normalize(self.projector(self.backbone(torch.cat(views))), dim=1)
        if not distributed.enabled():
            loss = nt_xent(z, self.temperature, num_views=len(views))
        else:
            # Under torchrun the other ranks' views (gathered with their gradient) are further negatives; ids are the
            # sample indices, so each anchor's positive is its own other view wherever it was computed.
            ids = index.repeat(len(views))
            keys, key_ids = distributed.gather_others(z, ids)
            loss = cluster_info_nce(z, ids, self.temperature, keys, key_ids)
        return {"loss": self.scale_loss(loss), "z": z[: index.shape[0]].detach()}
