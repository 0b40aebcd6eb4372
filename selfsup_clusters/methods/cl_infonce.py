"""Cl-InfoNCE (Tsai et al., "Integrating Auxiliary Information in Self-supervised Learning", ICLR 2022).

Two augmented views per image; for each anchor view the positives are all other views in the batch whose sample
shares the anchor's cluster id (its own other view included), the negatives are the rest. The clusters come from
any cluster source: auxiliary information (WordNet level, attributes), k-means, or the labels themselves.
With several clusterings (kmeans:K1,K2, or a composite spec such as wordnet:7@0.5+kmeans:500) the loss is their
weighted mean (spec.py).

Optionally (method_args.key_queue > 0) a FIFO queue of past embeddings, stored with their sample indices, joins
the contrast set, so positives and negatives are not limited to the batch. Cluster ids of queued keys are looked
up in the current assignments, so they stay right after k-means re-clusters.

Under torchrun each rank's anchors are its slice of the global batch, contrasted with every rank's views (gathered
with their gradient); DistributedDataParallel averages the ranks' gradients, so a step's gradient is that of the
loss over the whole global batch (each anchor has its other view as a positive, so every rank counts all of its
anchors).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from selfsup_clusters.core import distributed
from selfsup_clusters.methods.backbones import projection_head
from selfsup_clusters.methods.base import ContrastiveOptions, Method
from selfsup_clusters.methods.losses import cluster_info_nce
from selfsup_clusters.methods.memory import ring_write


@dataclass
class ClInfoNCEOptions(ContrastiveOptions):
    temperature: float = 0.1
    key_queue: int = 0  # past embeddings kept (with their samples' cluster ids) as extra keys; 0 = off

    def check(self) -> str | None:
        if self.key_queue < 0:
            return f"method_args.key_queue must be >= 0 (got {self.key_queue})"
        return super().check()


class ClInfoNCE(Method):
    name = "cl-infonce"
    Options = ClInfoNCEOptions
    needs_cluster_spec = True
    learns_from = "clusters: every view of a sample in the anchor's cluster is a positive"
    # The paper and its official code (Tsai et al. 2022): T 0.1, SGD nesterov momentum 0.95, wd 1e-4, no loss
    # scaling by default (docs/recipes.md); lr 0.2 per 256 chosen on the validation split with `tune` from
    # {0.05 (the official 0.01-0.03 at batch 128), 0.2, 0.5} (docs/recipes.md).
    recipe = {"optim.name": "sgd", "optim.lr": 0.2, "optim.momentum": 0.95, "optim.nesterov": True,
              "optim.weight_decay": 1e-4}
    reference = "Tsai et al. 2022 (Cl-InfoNCE), arXiv 2106.02869, official code's SGD settings"

    def __init__(self, cfg, backbone, **kwargs):
        super().__init__(cfg, backbone, **kwargs)
        self.projector = projection_head(self.feature_dim, cfg.model.proj_hidden_dim, cfg.model.proj_dim)
        self.cluster_ids: list[torch.Tensor] = []  # (N,) per clustering; not in the state_dict (the checkpoint
        # keeps the assignments and the trainer hands them back on resume)
        size = self.args.key_queue
        self.register_buffer("queue", torch.zeros(size, cfg.model.proj_dim))
        self.register_buffer("queue_index", torch.full((size,), -1, dtype=torch.long))  # -1: empty slot
        self.register_buffer("queue_pointer", torch.zeros((), dtype=torch.long))

    def set_clusters(self, assignments) -> list:
        device = self.queue.device
        self.cluster_ids = [ids.to(device) for ids in assignments.ids]
        return []

    def training_step(self, views: list[torch.Tensor], index: torch.Tensor, label: torch.Tensor) -> dict:
        z = F.normalize(self.projector(self.backbone(torch.cat(views))), dim=1)
        batch_index = index.repeat(len(views))
        keys = self.queue if self.queue.shape[0] else None
        key_index = self.queue_index if keys is not None else None
        if distributed.enabled():
            # The other ranks' views (with their gradient) and sample indices join the keys; their cluster ids are
            # looked up like the queue's, in the same assignments every rank holds.
            other_z, other_index = distributed.gather_others(z, batch_index)
            keys = other_z if keys is None else torch.cat([other_z, keys])
            key_index = other_index if key_index is None else torch.cat([other_index, key_index])
        losses = []
        # Before the first clustering (k-means warm-up) each sample is its own cluster: SimCLR.
        for ids in self.cluster_ids or [None]:
            def lookup(sample_index: torch.Tensor, ids=ids) -> torch.Tensor:
                if ids is None:
                    return sample_index
                return torch.where(sample_index >= 0, ids[sample_index.clamp(min=0)], -1)

            key_ids = lookup(key_index) if keys is not None else None
            losses.append(cluster_info_nce(z, lookup(batch_index), self.temperature, keys, key_ids))
        first_view = z[: index.shape[0]].detach()
        if self.queue.shape[0]:  # every rank enqueues the whole global batch, so the queues stay equal
            ring_write(self.queue_pointer, [self.queue, self.queue_index],
                       [distributed.all_gather(first_view), distributed.all_gather(index)])
        return {"loss": self.scale_loss(self.mean_over_clusterings(losses)), "z": first_view}
