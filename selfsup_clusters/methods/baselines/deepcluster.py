"""DeepCluster-v2 (Caron et al., 2020, the SwAV paper's improved DeepCluster), as facebookresearch/swav
main_deepclusterv2.py: spherical k-means of the memory bank, the centroids as frozen prototypes, and each view's
projection classified into its sample's cluster.

Before every epoch the loop clusters the memory bank that the previous epoch's training pass filled (before the
first, a fresh pass: the official `init_memory`), once per K of the spec (the official 3 x 3000 is
`--clusters kmeans:3000,3000,3000`, each K its own k-means seed); the method takes the centroids as its prototypes
(no gradient: the official code cancels theirs for all of training) and trains the cross-entropy of each view's
cosines with them, divided by T, against the sample's assignment, averaged over the clusterings. Samples without an
assignment (id < 0) are left out.

Deviations: one memory bank of the first view's projection (the official code keeps one per crop and alternates
them over the heads); the project's k-means (FAISS, spherical, FAISS's initialisation and empty-cluster splitting,
clusters.niter=10 as the official nmb_kmeans_iters) rather than the official hand-written Lloyd loop; no multi-crop
(as SwAV here).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from selfsup_clusters.core.errors import UserError
from selfsup_clusters.methods.backbones import projection_head
from selfsup_clusters.methods.base import ContrastiveOptions, Method
from selfsup_clusters.methods.losses import prototype_cross_entropy


@dataclass
class DeepClusterOptions(ContrastiveOptions):
    temperature: float = 0.1


class DeepClusterV2(Method):
    name = "deepcluster-v2"
    Options = DeepClusterOptions
    needs_cluster_spec = True
    learns_from = "k-means of the memory bank: each view classified into its sample's cluster (frozen centroids)"
    # facebookresearch/swav scripts/deepclusterv2_800ep_pretrain.sh: T 0.1, 3 x 3000 prototypes, 128-d projection
    # after a 2048-d hidden layer, wd 1e-6, momentum 0.9, LARS at 4.8 for a batch of 4096 (0.3 per 256), cosine to
    # 1/1000 of it, 10 k-means iterations, clustering before every epoch from the first. Here SGD (no LARS, as every
    # method of the suite) at lr 0.15 per 256, chosen at the cpu budget with `tune` on the validation split from
    # {0.075, 0.15, 0.3 (the reference's per 256), 0.6} (docs/recipes.md).
    recipe = {"optim.name": "sgd", "optim.lr": 0.15, "optim.momentum": 0.9, "optim.nesterov": False,
              "optim.weight_decay": 1e-6, "optim.min_lr_ratio": 0.001, "clusters.warmup": 0, "clusters.every": 1,
              "clusters.features": "memory", "clusters.niter": 10}
    reference = "Caron et al. 2020 (DeepCluster-v2), facebookresearch/swav main_deepclusterv2.py"

    def __init__(self, cfg, backbone, **kwargs):
        super().__init__(cfg, backbone, **kwargs)
        self.require_kmeans("kmeans:300,300,300 (the official three heads) or kmeans:300")
        self.projector = projection_head(self.feature_dim, cfg.model.proj_hidden_dim, cfg.model.proj_dim)
        # (ids (N,), centroids (K, d)) per clustering; plain attributes: the checkpoint keeps the assignments and the
        # trainer hands them back on resume
        self.clusterings: list[tuple[torch.Tensor, torch.Tensor]] = []

    @classmethod
    def check_data(cls, cfg, num_samples: int) -> str | None:
        if cfg.clusters.warmup != 0:
            return (f"deepcluster-v2 learns from its clusters alone, from the first step: clusters.warmup must be 0 "
                    f"(got {cfg.clusters.warmup})")
        return None

    def set_clusters(self, assignments) -> list:
        if assignments.centroids is None:
            raise UserError("method 'deepcluster-v2' needs k-means centroids; pass --clusters kmeans:K[,K2,...]")
        device = next(self.parameters()).device
        self.clusterings = [(ids.to(device), F.normalize(centroids.to(device, torch.float32), dim=1))
                            for ids, centroids in zip(assignments.ids, assignments.centroids, strict=True)]
        return []

    def training_step(self, views: list[torch.Tensor], index: torch.Tensor, label: torch.Tensor) -> dict:
        if not self.clusterings:
            raise UserError("deepcluster-v2 trained before its first clustering (clusters.warmup must be 0)")
        z = F.normalize(self.projector(self.backbone(torch.cat(views))), dim=1)
        losses = [prototype_cross_entropy(z, centroids, ids[index].repeat(len(views)), self.temperature)
                  for ids, centroids in self.clusterings]
        return {"loss": self.mean_over_clusterings(losses), "z": z[: index.shape[0]].detach()}
