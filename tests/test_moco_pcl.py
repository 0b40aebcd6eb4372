"""MoCo v2 and PCL: the prototype loss, the momentum encoder, the queue, shuffle-BN, clusters, training, resume."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from selfsup_clusters.clusters import Assignments
from selfsup_clusters.core.errors import UserError
from selfsup_clusters.methods.baselines.pcl import sample_negative_prototypes
from selfsup_clusters.methods.losses import info_nce, proto_nce
from selfsup_clusters.methods.registry import build_method
from selfsup_clusters.recipes import load_config
from selfsup_clusters.training.run import build_optimizer
from selfsup_clusters.training.trainer import resume, train
from tests.conftest import TINY, interrupted_run, metrics, needs_fashion_mnist

BATCH = 16


def make_method(name: str, *overrides: str):
    cfg = load_config(overrides=[*TINY, f"method={name}", f"batch_size={BATCH}", "method_args.queue_size=40",
                                 *overrides])
    torch.manual_seed(0)  # every method built here starts from the same weights and queue
    method = build_method(cfg, in_chans=1)
    method.train()
    return cfg, method


NUM_SAMPLES = 4 * BATCH  # the training set the batches are drawn from


def make_batch(seed: int = 1):
    """Two views of BATCH samples drawn from NUM_SAMPLES; their labels are not their indices (and repeat), so code
    that mixes up index and label shows."""
    generator = torch.Generator().manual_seed(seed)
    views = [torch.randn(BATCH, 1, 28, 28, generator=generator) for _ in range(2)]
    index = torch.randperm(NUM_SAMPLES, generator=generator)[:BATCH]
    labels = (index * 7 + 3) % 10
    return views, index, labels


# --- proto_nce -------------------------------------------------------------------------------------------------


def test_proto_nce_matches_hand_computed_case():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    prototypes = torch.tensor([[0.6, 0.8], [0.8, -0.6], [-1.0, 0.0]])
    phi = torch.tensor([0.1, 0.2, 0.4])
    positive_ids, negative_ids = torch.tensor([0, 1]), torch.tensor([2])
    # Candidates for both queries: prototypes 0, 1 (the batch's positives) and 2 (the sampled negative).
    expected = 0.0
    for b, positive in [(0, 0), (1, 1)]:
        logits = [float(q[b] @ prototypes[j]) / float(phi[j]) for j in (0, 1, 2)]
        expected += -math.log(math.exp(logits[positive]) / sum(math.exp(x) for x in logits))
    assert proto_nce(q, prototypes, phi, positive_ids, negative_ids).item() == pytest.approx(expected / 2, rel=1e-6)


def test_proto_nce_counts_a_shared_positive_prototype_again_as_a_negative_like_pcl():
    q = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    prototypes = torch.tensor([[0.8, 0.6], [0.0, 1.0]])
    phi = torch.tensor([0.5, 0.5])
    # Both queries in cluster 0: each query's candidates are [c0, c0, c1], target its own column.
    loss = proto_nce(q, prototypes, phi, torch.tensor([0, 0]), torch.tensor([1]))
    expected = 0.0
    for b in range(2):
        same, other = float(q[b] @ prototypes[0]) / 0.5, float(q[b] @ prototypes[1]) / 0.5
        expected += -math.log(math.exp(same) / (2 * math.exp(same) + math.exp(other)))
    assert loss.item() == pytest.approx(expected / 2, rel=1e-6)


def test_proto_nce_with_one_cluster_per_sample_is_info_nce_against_the_keys():
    torch.manual_seed(0)
    q, k = F.normalize(torch.randn(4, 8), dim=1), F.normalize(torch.randn(4, 8), dim=1)
    extra = F.normalize(torch.randn(3, 8), dim=1)
    t = 0.2
    # Cluster b holds sample b alone with prototype k_b; clusters 4..6 are the sampled negatives; phi = T.
    loss = proto_nce(q, torch.cat([k, extra]), torch.full((7,), t), torch.arange(4), torch.arange(4, 7))
    reference = torch.stack([
        info_nce(q[b : b + 1], k[b : b + 1], torch.cat([k[torch.arange(4) != b], extra]), t) for b in range(4)
    ]).mean()
    assert loss.item() == pytest.approx(reference.item(), rel=1e-6)


def test_negative_prototypes_are_distinct_and_never_a_positive_of_the_batch():
    positive_ids = torch.tensor([0, 3, 3, 5])
    negatives = sample_negative_prototypes(positive_ids, num_clusters=10, count=4)
    assert negatives.shape == (4,) and len(set(negatives.tolist())) == 4
    assert not set(negatives.tolist()) & {0, 3, 5}
    # Fewer candidates than asked for: all of them.
    every_other = sample_negative_prototypes(positive_ids, num_clusters=10, count=100)
    assert sorted(every_other.tolist()) == [1, 2, 4, 6, 7, 8, 9]


# --- MoCo ------------------------------------------------------------------------------------------------------


def test_key_encoder_moves_only_by_ema_and_is_not_optimised():
    cfg, moco = make_method("moco")
    optimizer, _ = build_optimizer(cfg, moco, steps_per_epoch=1)
    optimised = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert all(not p.requires_grad and id(p) not in optimised for p in moco.key_parameters())
    assert all(id(p) in optimised for p in moco.query_parameters())

    # Make the two encoders differ first, so the EMA check below is not trivially true.
    for p in moco.query_parameters():
        p.data.add_(0.01)
    key_before = [p.detach().clone() for p in moco.key_parameters()]
    out = moco.training_step(*make_batch())
    optimizer.zero_grad()
    out["loss"].backward()
    assert all(p.grad is None for p in moco.key_parameters())
    optimizer.step()
    moco.after_step()

    m = cfg.method_args.momentum
    for old, new, query in zip(key_before, moco.key_parameters(), moco.query_parameters(), strict=True):
        torch.testing.assert_close(new, m * old + (1 - m) * query.detach())


def test_queue_takes_the_returned_keys_and_wraps_around():
    _, moco = make_method("moco")  # queue of 40 keys, batches of 16
    first = moco.training_step(*make_batch(1))["z"]
    assert int(moco.queue_ptr) == BATCH
    torch.testing.assert_close(moco.queue[:BATCH], first)
    assert torch.allclose(first.norm(dim=1), torch.ones(BATCH)) and not first.requires_grad
    moco.training_step(*make_batch(2))
    third = moco.training_step(*make_batch(3))["z"]
    assert int(moco.queue_ptr) == 3 * BATCH - 40
    torch.testing.assert_close(moco.queue[2 * BATCH :], third[: 40 - 2 * BATCH])
    torch.testing.assert_close(moco.queue[: 3 * BATCH - 40], third[40 - 2 * BATCH :])


def test_shuffle_bn_normalises_keys_over_shuffled_groups():
    views, _, _ = make_batch()
    x = views[1]
    _, single = make_method("moco", "method_args.shuffle_bn_splits=1")
    _, grouped = make_method("moco", "method_args.shuffle_bn_splits=4")  # same seed: the same weights

    def whole_batch_keys(method):
        with torch.no_grad():
            return F.normalize(method.key_projector(method.key_backbone(x)), dim=1)

    # One group: a permutation does not change batch statistics, so this is the plain forward.
    torch.testing.assert_close(single.encode_keys(x), whole_batch_keys(single))
    # Four groups: each key is normalised with the statistics of the random group it was shuffled into.
    torch.manual_seed(7)
    keys = grouped.encode_keys(x)
    torch.manual_seed(7)
    order = torch.randperm(BATCH)
    expected = torch.empty_like(keys)
    with torch.no_grad():
        for group in order.tensor_split(4):
            expected[group] = F.normalize(grouped.key_projector(grouped.key_backbone(x[group])), dim=1)
    torch.testing.assert_close(keys, expected)
    assert not torch.allclose(keys, whole_batch_keys(grouped), atol=1e-3)


def test_bad_moco_settings_stop_with_a_clear_message():
    with pytest.raises(UserError, match="queue_size"):
        make_method("moco", "method_args.queue_size=0")
    with pytest.raises(UserError, match="shuffle_bn_splits"):
        make_method("moco", "method_args.shuffle_bn_splits=9")  # 16 / 9 < 2 samples per group


# --- PCL -------------------------------------------------------------------------------------------------------


def kmeans_like_assignments(num_samples: int, ks: list[int], dim: int = 32) -> Assignments:
    generator = torch.Generator().manual_seed(3)
    return Assignments(
        ids=[torch.randint(k, (num_samples,), generator=generator) for k in ks],  # not the sample indices
        centroids=[F.normalize(torch.randn(k, dim, generator=generator), dim=1) for k in ks],
        distances=[torch.rand(num_samples, generator=generator) for _ in ks],
    )


def test_pcl_before_clusters_is_moco():
    _, moco = make_method("moco")
    _, pcl = make_method("pcl")
    torch.manual_seed(5)
    expected = moco.training_step(*make_batch())
    torch.manual_seed(5)
    out = pcl.training_step(*make_batch())
    assert out["loss"].item() == expected["loss"].item() == out["loss_infonce"].item()
    torch.testing.assert_close(out["z"], expected["z"])
    assert "loss_proto" not in out
    assert pcl.state_dict().keys() == moco.state_dict().keys()


def test_pcl_adds_the_mean_prototype_loss_once_clusters_arrive():
    from selfsup_clusters.methods.baselines.pcl import pcl_concentration

    _, pcl = make_method("pcl", "method_args.proto_negatives=3")
    checkpointed = set(pcl.state_dict())
    assignments = kmeans_like_assignments(NUM_SAMPLES, [4, 8])
    pcl.set_clusters(assignments)
    reference = copy.deepcopy(pcl)
    views, index, labels = make_batch()
    assert not torch.equal(assignments.ids[1][index], assignments.ids[1][labels])  # index and label differ
    torch.manual_seed(11)
    out = pcl.training_step(views, index, labels)

    # The same step written out: MoCo's InfoNCE, then for each clustering the prototypes of the batch's own
    # clusters (looked up by sample index) and 3 sampled negatives, with PCL's concentration from the distances.
    torch.manual_seed(11)
    query, _, loss_infonce = reference.contrast(views)
    proto_losses = []
    for ids, centroids, distances in zip(assignments.ids, assignments.centroids, assignments.distances, strict=True):
        phi = torch.from_numpy(pcl_concentration(distances.numpy(), ids.numpy(), centroids.shape[0],
                                                 reference.temperature))
        assert phi.std() > 0  # per-cluster concentrations, not one constant
        positive_ids = ids[index]
        negative_ids = sample_negative_prototypes(positive_ids, centroids.shape[0], 3)
        proto_losses.append(proto_nce(query, centroids, phi, positive_ids, negative_ids))
    expected_proto = torch.stack(proto_losses).mean()
    assert out["loss_infonce"].item() == pytest.approx(loss_infonce.item(), rel=1e-6)
    assert out["loss_proto"].item() == pytest.approx(expected_proto.item(), rel=1e-5)
    assert out["loss"].item() == pytest.approx(loss_infonce.item() + expected_proto.item(), rel=1e-5)
    out["loss"].backward()  # the prototype term reaches the query encoder
    assert all(p.grad is not None for p in pcl.query_parameters())
    assert set(pcl.state_dict()) == checkpointed  # clusters travel in the checkpoint's assignments instead


def test_pcl_needs_kmeans_prototypes():
    _, pcl = make_method("pcl")
    with pytest.raises(UserError, match="kmeans"):
        pcl.set_clusters(Assignments(ids=[torch.zeros(BATCH, dtype=torch.long)]))


# --- training through the trainer ------------------------------------------------------------------------------


def train_losses(out, *overrides: str) -> list[dict]:
    train(load_config(overrides=[*TINY, "method_args.queue_size=128", *overrides, f"out={out}"]))
    return metrics(out)


# MoCo's loss rises over the first epochs as the queue's random vectors give way to real keys (harder negatives),
# so "learning lowers the loss" is tested against the same run with lr=0, not against the first epoch.


@needs_fashion_mnist
def test_moco_trains_and_lowers_its_loss(tmp_path):
    trained = train_losses(tmp_path / "trained", "method=moco")
    frozen = train_losses(tmp_path / "frozen", "method=moco", "optim.lr=0")
    assert trained[1]["loss"] < frozen[1]["loss"]


@needs_fashion_mnist
def test_pcl_clusters_from_warmup_on_and_lowers_its_loss(tmp_path):
    overrides = ["method=pcl", "epochs=3", "clusters.spec=kmeans:4,8", "clusters.warmup=1"]
    trained = train_losses(tmp_path / "trained", *overrides)
    frozen = train_losses(tmp_path / "frozen", *overrides, "optim.lr=0")
    assert "clusters" not in trained[0]
    assert [[row["name"] for row in r["clusters"]] for r in trained[1:]] == [["kmeans4", "kmeans8"]] * 2
    assert trained[1]["loss"] > trained[0]["loss"]  # the prototype term joins in at epoch 1
    assert trained[2]["loss"] < frozen[2]["loss"]


@needs_fashion_mnist
def test_pcl_without_clusters_says_to_pass_them(tmp_path):
    with pytest.raises(UserError, match="--clusters"):
        train(load_config(overrides=[*TINY, "method=pcl", "clusters.spec=none", f"out={tmp_path / 'run'}"]))


@needs_fashion_mnist
def test_pcl_resume_gives_the_same_metrics_as_an_uninterrupted_run(tmp_path, monkeypatch):
    # Cluster only before epoch 0 (every=10): epoch 1 trains on the assignments the checkpoint gives back.
    overrides = [*TINY, "method=pcl", "method_args.queue_size=128", "clusters.spec=kmeans:4", "clusters.every=10"]
    train(load_config(overrides=[*overrides, f"out={tmp_path / 'straight'}"]))

    resumed = tmp_path / "resumed"
    interrupted_run([*overrides, f"out={resumed}"], monkeypatch)
    resume(resumed)

    straight, again = metrics(tmp_path / "straight"), metrics(resumed)
    assert [r["epoch"] for r in again] == [0, 1]
    for a, b in zip(straight, again, strict=True):
        assert a["loss"] == b["loss"] and a["knn_top1"] == b["knn_top1"]
