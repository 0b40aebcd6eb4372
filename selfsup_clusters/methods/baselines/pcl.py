"""PCL v1 (Li et al., 2021, "Prototypical Contrastive Learning"): MoCo plus ProtoNCE's prototype term over
k-means clusters of the momentum features, as facebookresearch/PCL main_pcl.py and pcl/builder.py."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from selfsup_clusters.core.errors import UserError
from selfsup_clusters.methods.baselines.moco import MoCo, MoCoOptions
from selfsup_clusters.methods.losses import proto_nce

logger = logging.getLogger(__name__)


@dataclass
class PCLOptions(MoCoOptions):
    proto_negatives: int = 16384  # negative prototypes sampled per clustering (r); all when K-1 is fewer

    def check(self) -> str | None:
        if self.proto_negatives < 0:
            return f"method_args.proto_negatives must be >= 0 (got {self.proto_negatives})"
        return super().check()


def pcl_concentration(distance: np.ndarray, ids: np.ndarray, num_clusters: int, temperature: float) -> np.ndarray:
    """PCL's concentration phi per cluster, as float32 of shape (K,).

    For a cluster c with members' L2 distances d_i to its centroid and size Z = |c| > 1 (main_pcl.py
    `run_kmeans`):

        phi_c = mean_i(d_i) / log(Z + 10)

    Clusters with Z <= 1 get the largest phi of the others (1.0 if none has
    two members). Then phi is clipped to its [10th, 90th] percentile and
    scaled so its mean is `temperature` (PCL ties it to the InfoNCE temperature): phi = T * phi / mean(phi).
    """
    distance = np.asarray(distance, dtype=np.float64)
    ids = np.asarray(ids, dtype=np.int64)
    sizes = np.bincount(ids, minlength=num_clusters)
    sums = np.bincount(ids, weights=distance, minlength=num_clusters)
    phi = np.zeros(num_clusters, dtype=np.float64)
    populated = sizes > 1
    phi[populated] = sums[populated] / sizes[populated] / np.log(sizes[populated] + 10)
    phi[~populated] = phi[populated].max() if populated.any() else 1.0
    phi = np.clip(phi, np.percentile(phi, 10), np.percentile(phi, 90))
    if phi.mean() <= 0:  # every point sits on its centroid: no spread to compare
        phi = np.ones_like(phi)
    return (temperature * phi / phi.mean()).astype(np.float32)


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
    Options = PCLOptions
    needs_cluster_spec = True
    learns_from = "instances (MoCo) + k-means prototypes of several K (ProtoNCE)"
    # facebookresearch/PCL main_pcl.py: SGD lr 0.03 per 256, momentum 0.9, wd 1e-4, T 0.2, cosine, k-means with
    # nredo 5 on a fresh eval-mode pass of the momentum encoder over centre views (compute_features), phi's mean
    # tied to T, r = 16384 negative prototypes (we sample up to K-1). Deviations: spherical k-means (PCL: L2 on
    # normalised features, then normalised centroids); warm-up 1 epoch (PCL: 20 of 200, i.e. 10%).
    recipe = {**MoCo.recipe, "clusters.nredo": 5,
              "clusters.features": "forward", "clusters.warmup": 1}
    reference = "Li et al. 2021 (PCL v1), facebookresearch/PCL main_pcl.py"

    def __init__(self, cfg, backbone, **kwargs):
        super().__init__(cfg, backbone, **kwargs)
        self.require_kmeans("kmeans:500,1000 or kmeans:500+kmeans:1000@0.5")
        self.proto_negatives = self.args.proto_negatives
        crowded = [k for k in self.num_clusters if k <= 2 * cfg.batch_size]
        if crowded:
            # With K near the batch size most clusters hold a query of the batch, so few negative prototypes are
            # left to sample and a query's own prototype recurs among the candidates (PCL uses K >> batch).
            logger.warning("pcl: K=%s <= 2 x batch_size (%d): few negative prototypes per query; PCL uses K far "
                           "above the batch size (e.g. kmeans:%d or more)", ",".join(map(str, crowded)),
                           cfg.batch_size, 4 * cfg.batch_size)
        # One (ids (N,), prototypes (K, d), concentration (K,)) per clustering, on the method's device.
        self.clusterings: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None

    def set_clusters(self, assignments) -> list:
        if assignments.centroids is None or assignments.distances is None:
            raise UserError("method 'pcl' needs k-means prototypes; pass --clusters kmeans:K[,K2,...] "
                            "(fixed clusters such as labels or wordnet have no centroids)")
        device = self.queue.device
        self.clusterings = []
        for ids, centroids, distances in zip(assignments.ids, assignments.centroids, assignments.distances,
                                             strict=True):
            phi = pcl_concentration(distances.cpu().numpy(), ids.cpu().numpy(), centroids.shape[0], self.temperature)
            self.clusterings.append((ids.to(device), centroids.to(device, torch.float32),
                                     torch.from_numpy(phi).to(device)))
        return []

    def training_step(self, views: list[torch.Tensor], index: torch.Tensor, label: torch.Tensor) -> dict:
        query, key, loss_infonce = self.contrast(views)
        if self.clusterings is None:
            return {"loss": loss_infonce, "z": key, "loss_infonce": loss_infonce.detach()}
        proto_losses = []
        for ids, prototypes, concentration in self.clusterings:
            positive_ids = ids[index]
            negative_ids = sample_negative_prototypes(positive_ids, prototypes.shape[0], self.proto_negatives)
            proto_losses.append(proto_nce(query, prototypes, concentration, positive_ids, negative_ids))
        loss_proto = self.mean_over_clusterings(proto_losses)
        return {"loss": loss_infonce + loss_proto, "z": key, "loss_infonce": loss_infonce.detach(),
                "loss_proto": loss_proto.detach()}
