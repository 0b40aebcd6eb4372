"""Cross-entropy baselines: predict cluster ids ("ce", the paper's comparison) or the labels ("supervised").

As the Cl-InfoNCE authors' code does, the classifier is linear on the backbone features. With k-means clusters the
ids are arbitrary after every re-clustering, so the heads are re-initialised then (DeepCluster does the same), from
a generator seeded by (seed, number of re-clusterings) so every rank draws the same heads, and the trainer clears
their optimizer state. The memory bank holds the L2-normalised backbone features.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from selfsup_clusters.core.errors import UserError
from selfsup_clusters.core.seeds import derived_seed
from selfsup_clusters.methods.base import Method


class ClusterCrossEntropy(Method):
    name = "ce"
    needs_cluster_spec = True
    learns_from = "clusters: a linear head on the backbone predicts each sample's cluster id (cross-entropy)"
    # The standard supervised ResNet recipe (He et al. 2016; Goyal et al. 2017: lr 0.1 per 256, momentum 0.9) with
    # CIFAR's wd 5e-4; no temperature. lr 0.1 kept after `tune` on the validation split (0.4 scored lower; see
    # docs/recipes.md).
    recipe = {"optim.name": "sgd", "optim.lr": 0.1, "optim.momentum": 0.9, "optim.nesterov": False,
              "optim.weight_decay": 5e-4}
    reference = "He et al. 2016 / Goyal et al. 2017 (supervised SGD recipe); the paper's CE baseline"

    def __init__(self, cfg, backbone, **kwargs):
        super().__init__(cfg, backbone, **kwargs)
        self.embedding_dim = self.feature_dim
        if self.cluster_spec is not None and self.cluster_spec.dynamic and cfg.clusters.warmup > 0:
            raise UserError(f"method {self.name!r} predicts cluster ids from the first step, so its k-means "
                            f"clusters cannot wait for a warm-up: use clusters.warmup=0 "
                            f"(got {cfg.clusters.warmup})")
        self.heads = nn.ModuleList(nn.Linear(self.feature_dim, k) for k in self.head_sizes())
        self.targets: list[torch.Tensor] = []  # (N,) per head; handed over by set_clusters, not checkpointed
        self.register_buffer("resets", torch.zeros((), dtype=torch.long))  # checkpointed: resume draws the same heads

    def head_sizes(self) -> list[int]:
        return self.num_clusters

    def set_clusters(self, assignments) -> list[nn.Parameter]:
        device = self.heads[0].weight.device
        reset: list[nn.Parameter] = []
        if self.targets:  # new k-means ids mean nothing to the old heads
            self.resets += 1
            # The same heads on every rank, and the global RNG untouched.
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(derived_seed(self.seed, int(self.resets)))
                for head in self.heads:
                    head.reset_parameters()
            reset = list(self.heads.parameters())
        self.targets = [ids.to(device) for ids in assignments.ids]
        return reset

    def training_step(self, views: list[torch.Tensor], index: torch.Tensor, label: torch.Tensor) -> dict:
        if not self.targets:
            raise UserError(f"method {self.name!r} got no cluster ids before its first step; "
                            "use clusters.warmup=0 with k-means")
        return self.classify(views, [t[index] for t in self.targets])

    def classify(self, views: list[torch.Tensor], targets: list[torch.Tensor]) -> dict:
        """Mean cross-entropy of each head against its (B,) targets, over every view."""
        h = self.backbone(torch.cat(views))
        # float32 logits: under bf16 autocast the softmax would keep about three significant digits
        losses = [F.cross_entropy(head(h).float(), t.repeat(len(views)))
                  for head, t in zip(self.heads, targets, strict=True)]
        return {"loss": self.mean_over_clusterings(losses), "z": F.normalize(h[: targets[0].shape[0]].detach(), dim=1)}

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.backbone(x), dim=1)


class Supervised(ClusterCrossEntropy):
    """The reference upper bound: cross-entropy on the class labels, same backbone and augmentation."""

    name = "supervised"
    needs_cluster_spec = False
    needs_labels = True
    learns_from = "the class labels (cross-entropy): the supervised reference"

    def head_sizes(self) -> list[int]:
        return [self.num_classes]

    def training_step(self, views: list[torch.Tensor], index: torch.Tensor, label: torch.Tensor) -> dict:
        return self.classify(views, [label])
