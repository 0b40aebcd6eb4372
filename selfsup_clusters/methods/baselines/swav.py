"""SwAV (Caron et al., 2020, "Unsupervised Learning of Visual Features by Contrasting Cluster Assignments"), as
facebookresearch/swav main_swav.py: online clusters from learnt prototypes, no k-means.

Each step: the prototypes (a bias-free linear layer, K x d) are L2-normalised; each view's normalised projection is
scored against them (cosines); Sinkhorn-Knopp turns each view's scores (with a queue of past projections' scores
in front, once the queue is full) into codes that split the batch evenly over the prototypes, computed across all
processes under torchrun (the official `distributed_sinkhorn`); each view then predicts the other view's codes
(cross-entropy of softmax(scores / T)). The prototypes get no update during the first `freeze_prototypes_epochs`.

Two views, no multi-crop: every view gives codes (the official crops_for_assign = [0, 1] with nmb_crops = [2]);
multi-crop's extra low-resolution views are an augmentation this suite gives no method, so the comparison stays
fair. The official repository trains this setting too (scripts/swav_400ep_2x224_pretrain.sh; its README lists it at
70.1% ImageNet top-1 against 74.6% with 2x224 + 6x96 crops at the same 400 epochs).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from selfsup_clusters.core import distributed
from selfsup_clusters.methods.backbones import projection_head
from selfsup_clusters.methods.base import ContrastiveOptions, Method
from selfsup_clusters.methods.losses import sinkhorn, swapped_prediction
from selfsup_clusters.methods.memory import ring_write

logger = logging.getLogger(__name__)


@dataclass
class SwAVOptions(ContrastiveOptions):
    temperature: float = 0.1
    num_prototypes: int = 3000
    epsilon: float = 0.05  # Sinkhorn's entropic regularisation
    sinkhorn_iterations: int = 3
    freeze_prototypes_epochs: int = 1  # the official 5005 iterations at batch 256 on ImageNet: one epoch
    # past projections (global count, shared evenly by the processes) whose scores join each view's Sinkhorn, once
    # the queue is full, from epoch `queue_start_epoch` (0-based) on; rounded down to a multiple of the batch size
    queue_length: int = 0
    queue_start_epoch: int = 15

    def check(self) -> str | None:
        for key in ("num_prototypes", "sinkhorn_iterations"):
            if getattr(self, key) < 1:
                return f"method_args.{key} must be >= 1 (got {getattr(self, key)})"
        if not self.epsilon > 0:
            return f"method_args.epsilon must be > 0 (got {self.epsilon})"
        if min(self.freeze_prototypes_epochs, self.queue_length, self.queue_start_epoch) < 0:
            return "method_args.freeze_prototypes_epochs, queue_length and queue_start_epoch must be >= 0"
        return super().check()


class SwAV(Method):
    name = "swav"
    Options = SwAVOptions
    makes_clusters = True
    learns_from = "its own prototypes: each view predicts the other's Sinkhorn codes (online equal-size clusters)"
    # facebookresearch/swav scripts/swav_200ep_bs256_pretrain.sh: T 0.1, epsilon 0.05, 3 Sinkhorn iterations, 3000
    # prototypes, 128-d projection after a 2048-d hidden layer, wd 1e-6, momentum 0.9, final lr 1/1000 of the base
    # lr (cosine), prototypes frozen for one epoch, a 3840 queue from epoch 15 (with batches smaller than the
    # prototypes), LARS at lr 0.6 per 256. Here SGD (no LARS, as every method of the suite); at the cpu budget `tune`
    # on the validation split kept lr 0.6 (of 0.3, 0.6, 1.2), no queue (of 0, 1024 from epoch 2) and the one frozen
    # epoch (of 0, 1) (docs/recipes.md).
    recipe = {"optim.name": "sgd", "optim.lr": 0.6, "optim.momentum": 0.9, "optim.nesterov": False,
              "optim.weight_decay": 1e-6, "optim.min_lr_ratio": 0.001}
    reference = "Caron et al. 2020 (SwAV), facebookresearch/swav main_swav.py, swav_200ep_bs256_pretrain.sh"

    def __init__(self, cfg, backbone, **kwargs):
        super().__init__(cfg, backbone, **kwargs)
        args = self.args
        self.projector = projection_head(self.feature_dim, cfg.model.proj_hidden_dim, cfg.model.proj_dim)
        self.prototypes = nn.Linear(cfg.model.proj_dim, args.num_prototypes, bias=False)
        batch = cfg.batch_size
        length = args.queue_length - args.queue_length % batch  # whole global batches, as the official code
        if length != args.queue_length:
            logger.warning("swav: queue_length %d rounded down to %d, a multiple of batch_size %d",
                           args.queue_length, length, batch)
        # One queue per view of whole global batches, the same on every process (so the checkpoint holds all of
        # it and a run resumes on any number of processes); each process's Sinkhorn takes the rows its own slices
        # wrote, as the official per-process queues of queue_length / world rows.
        self.register_buffer("queue", torch.zeros(cfg.augment.views, length, cfg.model.proj_dim))
        self.batch = batch
        self.register_buffer("queue_pointer", torch.zeros((), dtype=torch.long))
        self.register_buffer("queue_filled", torch.zeros((), dtype=torch.long))  # rows written since it started
        self.epoch = 0

    @classmethod
    def check_data(cls, cfg, num_samples: int) -> str | None:
        args = cfg.method_args
        if args.num_prototypes > num_samples:
            return (f"swav: method_args.num_prototypes={args.num_prototypes} is more than the {num_samples} training "
                    f"images (equal-size codes need K <= N); use method_args.num_prototypes={num_samples // 10} or "
                    "fewer")
        if args.queue_length > num_samples:
            return (f"swav: method_args.queue_length={args.queue_length} is longer than the {num_samples} training "
                    "images (the queue would hold a sample twice); use a shorter queue or method_args.queue_length=0")
        return None

    def start_epoch(self, epoch: int) -> list[nn.Parameter]:
        self.epoch = epoch
        unfrozen = 0 < self.args.freeze_prototypes_epochs == epoch  # (not frozen at all: nothing starts later)
        return [self.prototypes.weight] if unfrozen else []

    def after_backward(self) -> None:
        if self.epoch < self.args.freeze_prototypes_epochs:  # the official code drops the prototypes' gradient
            self.prototypes.weight.grad = None

    def queue_on(self) -> bool:
        return self.queue.shape[1] > 0 and self.epoch >= self.args.queue_start_epoch

    def training_step(self, views: list[torch.Tensor], index: torch.Tensor, label: torch.Tensor) -> dict:
        with torch.no_grad():
            self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))
        batch = index.shape[0]
        z = F.normalize(self.projector(self.backbone(torch.cat(views))), dim=1)
        scores = self.prototypes(z).view(len(views), batch, -1)
        codes = torch.stack([self.codes(score.detach(), v) for v, score in enumerate(scores)])
        if self.queue_on():
            every_rank = distributed.all_gather(z.detach())  # rank-major: each view's global batch
            ring_write(self.queue_pointer, list(self.queue.unbind(0)), list(every_rank.view(
                distributed.world_size(), len(views), batch, -1).transpose(0, 1).flatten(1, 2).unbind(0)))
            self.queue_filled += self.batch
        loss = swapped_prediction(scores, codes, self.temperature)
        return {"loss": loss, "z": z[:batch].detach()}

    def codes(self, scores: torch.Tensor, view: int) -> torch.Tensor:
        """The view's Sinkhorn codes (B, K); the queue's scores go in front once it has been filled."""
        batch = scores.shape[0]
        if self.queue_on() and int(self.queue_filled) >= self.queue.shape[1]:
            rows = self.queue[view].view(-1, distributed.world_size(), batch, self.queue.shape[2])
            own = rows[:, distributed.rank()].flatten(0, 1)  # the rows this process's slices wrote
            scores = torch.cat([own @ self.prototypes.weight.detach().T, scores])
        return sinkhorn(scores, self.args.epsilon, self.args.sinkhorn_iterations, distributed.world_size(),
                        distributed.all_reduce_sum)[-batch:]

    @torch.no_grad()
    def own_clusters(self, bank: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
        """Each bank row's nearest prototype (in blocks of rows: an N x K score matrix at N=10^6, K=3000 would be
        12 GB)."""
        weight = F.normalize(self.prototypes.weight.detach().float(), dim=1)
        ids = [(rows.float() @ weight.T).argmax(dim=1).cpu() for rows in bank.split(65536)]
        return [(f"prototypes:{weight.shape[0]}", torch.cat(ids) if ids else torch.zeros(0, dtype=torch.long))]
