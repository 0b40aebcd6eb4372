"""PCL v1 (Li et al., 2021, "Prototypical Contrastive Learning"): MoCo plus ProtoNCE's prototype term over
k-means clusters of the momentum features, as facebookresearch/PCL main_pcl.py and pcl/builder.py."""

from __future__ import annotations

import torch

from baselines.moco import MoCo
from selfsup_clusters.errors import UserError
from selfsup_clusters.losses import proto_nce


def sample_negative_prototypes(positive_ids: torch.Tensor, num_clusters: int, count: int) -> torch.Tensor:
    """(r,) int64: `count` distinct cluster ids, uniformly without replacement, from those not in `positive_ids`
    (B,); all of them when fewer remain. PCL samples once per batch and clustering, shared by every query.

    Uses the global CPU generator, which the trainer checkpoints, so a resumed run samples the same ids.
    """
    is_candidate = torch.ones(num_clusters, dtype=torch.bool)
    is_candidate[positive_ids.cpu()] = False
    candidates = is_candidate.nonzero().squeeze(1)
    chosen = candidates[torch.randperm(candidates.shape[0])[:count]]
    return chosen.to(positive_ids.device)


class PCL(MoCo):
    """loss = InfoNCE (MoCo's) + mean over the M clusterings of proto_nce.

    Before the first `set_clusters` (the cluster warm-up epochs) the loss is MoCo's InfoNCE alone. Each
    clustering's prototypes are its k-means centroids, scaled per cluster by PCL's concentration phi. The
    clusters are kept as plain attributes, not buffers: their shapes change with K, and the trainer stores the
    assignments in the checkpoint itself and hands them back through `set_clusters` on resume.
    """

    name = "pcl"
    uses_clusters = True
    default_temperature = 0.2

    def __init__(self, cfg, backbone, **kwargs):
        super().__init__(cfg, backbone, **kwargs)
        if cfg.method_args.proto_negatives < 0:
            raise UserError(f"method_args.proto_negatives must be >= 0 (got {cfg.method_args.proto_negatives})")
        self.proto_negatives = cfg.method_args.proto_negatives
        # One (ids (N,), prototypes (K, d), concentration (K,)) per clustering, on the method's device.
        self.clusterings: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None

    def set_clusters(self, assignments) -> None:
        if assignments.centroids is None or assignments.concentration is None:
            raise UserError("method 'pcl' needs k-means prototypes; pass --clusters kmeans:K[,K2,...] "
                            "(fixed clusters such as labels or wordnet have no centroids)")
        device = self.queue.device
        self.clusterings = [
            (ids.to(device), centroids.to(device, torch.float32), phi.to(device, torch.float32))
            for ids, centroids, phi in zip(assignments.ids, assignments.centroids, assignments.concentration,
                                           strict=True)
        ]

    def training_step(self, views: list[torch.Tensor], index: torch.Tensor, label: torch.Tensor) -> dict:
        query, key, loss_infonce = self.contrast(views)
        if self.clusterings is None:
            return {"loss": loss_infonce, "z": key, "loss_infonce": loss_infonce.detach()}
        proto_losses = []
        for ids, prototypes, concentration in self.clusterings:
            positive_ids = ids[index]
            negative_ids = sample_negative_prototypes(positive_ids, prototypes.shape[0], self.proto_negatives)
            proto_losses.append(proto_nce(query, prototypes, concentration, positive_ids, negative_ids))
        loss_proto = torch.stack(proto_losses).mean()
        return {"loss": loss_infonce + loss_proto, "z": key, "loss_infonce": loss_infonce.detach(),
                "loss_proto": loss_proto.detach()}
