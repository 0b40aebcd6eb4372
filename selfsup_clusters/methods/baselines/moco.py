"""MoCo v2 (He et al., 2020; Chen et al., 2020): a momentum key encoder and a queue of past keys as negatives."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from selfsup_clusters.core import distributed
from selfsup_clusters.core.errors import UserError
from selfsup_clusters.methods.backbones import projection_head
from selfsup_clusters.methods.base import ContrastiveOptions, Method
from selfsup_clusters.methods.losses import info_nce
from selfsup_clusters.methods.memory import ring_write


@dataclass
class MoCoOptions(ContrastiveOptions):
    """MoCo v2's settings, at the reference's values (see MoCo.recipe's comment for where each comes from)."""

    temperature: float = 0.2
    momentum: float = 0.99  # EMA of the key encoder
    queue_size: int = 4096  # negative keys in the queue
    symmetric: bool = False  # both views are queries (the loss averaged over the two directions)
    shuffle_bn_splits: int = 4  # on one device: BatchNorm over this many shuffled groups (shuffle-BN)

    def check(self) -> str | None:
        if self.queue_size < 1:
            return f"method_args.queue_size must be >= 1 (got {self.queue_size})"
        return super().check()


def forward_in_groups(encoder: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, groups: int) -> torch.Tensor:
    """encoder(x) with x (B, ...) split into `groups` contiguous chunks, so BatchNorm sees each chunk alone."""
    return torch.cat([encoder(chunk) for chunk in x.tensor_split(groups)])


class MoCo(Method):
    """MoCo v2, standard asymmetric loss: query = view 0 (gradient), key = view 1 (momentum encoder, no gradient),
    negatives = a queue of the last `queue_size` keys; further views are unused. The queue starts as random unit
    vectors, which are easy negatives: the loss rises while real keys replace them.

    Shuffle-BN on one device: each encoder runs on `shuffle_bn_splits` chunks of the batch, as if each chunk were
    a GPU. Queries go in contiguous chunks, keys in chunks of a random permutation (undone afterwards), so query b
    and key b are normalised with BatchNorm statistics of different samples; otherwise the model can find its
    positive through the batch statistics they share. `shuffle_bn_splits=1` turns it off. Under torchrun each rank
    does the same on its own slice of the batch (keys are shuffled within a rank, not across ranks as the official
    code does); with model.sync_bn each chunk's statistics cover the same chunk of every rank.

    The key encoder's weights follow the query encoder's by EMA in `after_step`; its BatchNorm running statistics
    come from its own forward passes (it runs in train mode), as in the official code. "z" is the key, so the
    memory bank (and k-means, for PCL) holds momentum features, as PCL does.
    """

    name = "moco"
    Options = MoCoOptions
    learns_from = "instances: a query against its momentum key and a queue of past keys"
    # MoCo v2, facebookresearch/moco main_moco.py (--lr 0.03 --mlp --moco-t 0.2 --aug-plus --cos, batch 256, SGD
    # momentum 0.9, wd 1e-4); queue 4096 and key momentum 0.99 from the repository's CIFAR-10 demo (small data).
    # The asymmetric loss, as the reference: the symmetric one scored lower at equal epochs on the validation split
    # and costs 1.8x the time (docs/recipes.md).
    recipe = {"optim.name": "sgd", "optim.lr": 0.03, "optim.momentum": 0.9, "optim.nesterov": False,
              "optim.weight_decay": 1e-4}
    reference = "He et al. 2020 / Chen et al. 2020 (MoCo v2), facebookresearch/moco main_moco.py"

    def __init__(self, cfg, backbone, **kwargs):
        super().__init__(cfg, backbone, **kwargs)
        args: MoCoOptions = self.args
        if not 1 <= args.shuffle_bn_splits <= cfg.batch_size // distributed.world_size() // 2:
            raise UserError(f"method_args.shuffle_bn_splits={args.shuffle_bn_splits} needs 1 <= splits <= "
                            f"batch_size/2 per process (BatchNorm needs 2 samples per chunk); lower it or raise "
                            "batch_size")
        self.momentum = args.momentum
        self.splits = args.shuffle_bn_splits
        self.symmetric = args.symmetric
        self.projector = projection_head(self.feature_dim, cfg.model.proj_hidden_dim, cfg.model.proj_dim)
        self.key_backbone = copy.deepcopy(self.backbone)
        self.key_projector = copy.deepcopy(self.projector)
        for p in self.key_parameters():
            p.requires_grad_(False)  # so the trainer's optimizer (requires_grad only) never sees them
        self.register_buffer("queue", F.normalize(torch.randn(args.queue_size, self.embedding_dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    def query_parameters(self) -> list[nn.Parameter]:
        return [*self.backbone.parameters(), *self.projector.parameters()]

    def key_parameters(self) -> list[nn.Parameter]:
        return [*self.key_backbone.parameters(), *self.key_projector.parameters()]

    def encode_queries(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, d) L2-normalised queries, with gradient."""
        return F.normalize(forward_in_groups(lambda c: self.projector(self.backbone(c)), x, self.splits), dim=1)

    @torch.no_grad()
    def encode_keys(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, d) L2-normalised keys in the input's order, BatchNorm over shuffled groups."""
        # The global CPU generator: the trainer checkpoints it, so a resumed run shuffles the same way.
        order = torch.randperm(x.shape[0]).to(x.device)
        shuffled = forward_in_groups(lambda c: self.key_projector(self.key_backbone(c)), x[order], self.splits)
        keys = torch.empty_like(shuffled)
        keys[order] = shuffled  # undo the shuffle: row b is the key of sample b again
        return F.normalize(keys, dim=1)

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Overwrite the oldest keys with (B, d) `keys` of every rank (the global batch, so the queues of all ranks
        stay equal), wrapping around the end of the queue."""
        ring_write(self.queue_ptr, [self.queue], [distributed.all_gather(keys)])

    def contrast(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries of view 0 (B, d), keys of view 1 (B, d) and InfoNCE against the queue; the keys then enter the
        queue. Symmetric: view 1's queries against view 0's keys too, the loss the mean of both directions (as
        solo-learn's MoCo v2+ and the MoCo CIFAR demo's option); only view 1's keys are enqueued, so the queue
        spans as many past steps as in the asymmetric loss."""
        query = self.encode_queries(views[0])
        key = self.encode_keys(views[1])
        # A copy: the loss's backward needs the queue as it was, and enqueue changes it in place.
        negatives = self.queue.clone()
        loss = info_nce(query, key, negatives, self.temperature)
        if self.symmetric:
            loss = (loss + info_nce(self.encode_queries(views[1]), self.encode_keys(views[0]), negatives,
                                    self.temperature)) / 2
        self.enqueue(key)
        return query, key, self.scale_loss(loss)

    def training_step(self, views: list[torch.Tensor], index: torch.Tensor, label: torch.Tensor) -> dict:
        _, key, loss = self.contrast(views)
        return {"loss": loss, "z": key}

    @torch.no_grad()
    def after_step(self) -> None:
        # key <- m * key + (1 - m) * query, after the optimizer moved the query encoder.
        for key, query in zip(self.key_parameters(), self.query_parameters(), strict=True):
            key.lerp_(query.detach(), 1.0 - self.momentum)

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Key-encoder embedding, what the memory bank holds during training (the caller sets eval mode)."""
        return F.normalize(self.key_projector(self.key_backbone(x)), dim=1)
