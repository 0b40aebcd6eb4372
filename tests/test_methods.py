"""Cl-InfoNCE, CE and the supervised reference: loss identities and short training runs."""

import json

import pytest
import torch
import torch.nn.functional as F

from selfsup_clusters.clusters import Assignments
from selfsup_clusters.methods.losses import cluster_info_nce
from selfsup_clusters.methods.registry import build_method
from selfsup_clusters.recipes import load_config
from selfsup_clusters.training.trainer import train
from tests.conftest import TINY, needs_fashion_mnist, needs_wordnet


def tiny_method(name, overrides=(), **kwargs):
    cfg = load_config(overrides=[*TINY, f"method={name}", *overrides])
    torch.manual_seed(0)
    return build_method(cfg, 1, **kwargs)


def test_cl_infonce_with_singleton_clusters_equals_simclr():
    g = torch.Generator().manual_seed(0)
    views = [torch.randn(8, 1, 28, 28, generator=g) for _ in range(2)]
    index = torch.randperm(32, generator=g)[:8]  # 8 of 32 samples, not 0..7
    labels = index % 3  # repeated labels: code using them as cluster ids would compute SupCon instead
    simclr = tiny_method("simclr", ["method_args.temperature=0.1"])
    cl = tiny_method("cl-infonce")
    cl.load_state_dict(simclr.state_dict(), strict=False)  # the same backbone and projector; cl has a queue too
    cl.set_clusters(Assignments(ids=[torch.randperm(32, generator=g)]))  # one cluster per sample, ids != indices
    simclr.train(), cl.train()
    assert cl.training_step(views, index, labels)["loss"].item() == pytest.approx(
        simclr.training_step(views, index, labels)["loss"].item(), rel=1e-6)


def supcon_reference(z, labels, t):
    """Khosla et al.'s SupCon (L_out), written as loops."""
    total, count = 0.0, 0
    for i in range(z.shape[0]):
        others = [a for a in range(z.shape[0]) if a != i]
        positives = [p for p in others if labels[p] == labels[i]]
        if not positives:
            continue
        log_denominator = torch.logsumexp(torch.stack([z[i] @ z[a] / t for a in others]), 0)
        total += -sum((z[i] @ z[p] / t - log_denominator) for p in positives) / len(positives)
        count += 1
    return total / count


def test_cl_infonce_with_labels_equals_supervised_contrastive():
    views = [torch.randn(6, 1, 28, 28) for _ in range(2)]
    index = torch.arange(6)
    labels = torch.tensor([0, 1, 0, 2, 1, 0])
    cl = tiny_method("cl-infonce")
    cl.set_clusters(Assignments(ids=[labels]))
    cl.eval()  # BatchNorm on running statistics, so the reference sees the same embeddings
    out = cl.training_step(views, index, labels)
    out["loss"] = out["loss"].detach()
    z = F.normalize(cl.projector(cl.backbone(torch.cat(views))), dim=1)
    expected = supcon_reference(z.detach(), labels.repeat(2), 0.1)
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_cluster_info_nce_with_a_key_queue_counts_queued_positives():
    z = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=1)
    keys = F.normalize(torch.tensor([[1.0, 0.1], [0.0, -1.0], [5.0, 5.0]]), dim=1)
    ids, key_ids = torch.tensor([0, 1]), torch.tensor([0, 1, -1])  # the last slot is empty
    expected = 0.0
    for i in range(2):
        logits = torch.cat([z[1 - i : 2 - i] @ z[i], keys[:2] @ z[i]]) / 0.5  # contrast set without i itself
        expected += -(logits[1 + i] - torch.logsumexp(logits, 0))  # the queued key with the same id
    assert cluster_info_nce(z, ids, 0.5, keys, key_ids).item() == pytest.approx(expected.item() / 2, rel=1e-6)


def test_key_queue_keeps_sample_indices_and_looks_up_their_current_clusters():
    import copy

    n, g = 40, torch.Generator().manual_seed(0)
    cl = tiny_method("cl-infonce", ["method_args.key_queue=16"])
    cl.train()

    def batch():
        index = torch.randperm(n, generator=g)[:8]
        return [torch.randn(8, 1, 28, 28, generator=g) for _ in range(2)], index, (index * 3 + 1) % 5

    cl.set_clusters(Assignments(ids=[torch.randint(0, 3, (n,), generator=g)]))
    views, first_index, labels = batch()
    cl.training_step(views, first_index, labels)
    assert cl.queue_index.tolist() == [*first_index.tolist(), *[-1] * 8]  # sample indices, not labels or ids

    new_ids = torch.randint(0, 3, (n,), generator=g)  # re-clustered: the queued keys' ids change with it
    cl.set_clusters(Assignments(ids=[new_ids]))
    views, index, labels = batch()
    reference = copy.deepcopy(cl)
    out = cl.training_step(views, index, labels)
    z = F.normalize(reference.projector(reference.backbone(torch.cat(views))), dim=1)
    queued = reference.queue_index
    key_ids = torch.where(queued >= 0, new_ids[queued.clamp(min=0)], -1)
    expected = cluster_info_nce(z, new_ids[index].repeat(2), 0.1, reference.queue, key_ids)
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert cl.queue_index.tolist() == [*first_index.tolist(), *index.tolist()]


def test_ce_heads_are_sized_by_the_clusters_and_reset_on_reclustering():
    ce = tiny_method("ce", ["clusters.spec=kmeans:5,7"], num_clusters=[5, 7])
    assert [head.out_features for head in ce.heads] == [5, 7]
    ce.set_clusters(Assignments(ids=[torch.arange(16) % 5, torch.arange(16) % 7]))
    before = ce.heads[0].weight.clone()
    ce.set_clusters(Assignments(ids=[torch.arange(16) % 5, torch.arange(16) % 7]))
    assert not torch.equal(before, ce.heads[0].weight)


@needs_fashion_mnist
@pytest.mark.parametrize("method, clusters", [
    pytest.param("cl-infonce", "wordnet:7", marks=needs_wordnet),
    ("cl-infonce", "kmeans:8"),
    pytest.param("ce", "wordnet:8", marks=needs_wordnet),
    ("ce", "kmeans:8 clusters.every=10"),  # clustered once: re-clustering re-initialises the head
    ("supervised", "none"),
])
def test_method_trains_and_lowers_its_loss(tmp_path, method, clusters):
    out = tmp_path / "run"
    train(load_config(overrides=[*TINY, "epochs=3", f"method={method}", *f"clusters.spec={clusters}".split(),
                                 f"out={out}"]))
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["loss"] < records[0]["loss"]
    assert 0 <= records[-1]["knn_top1"] <= 1


@needs_fashion_mnist
@needs_wordnet
def test_cl_infonce_with_key_queue_trains(tmp_path):
    out = tmp_path / "run"
    train(load_config(overrides=[*TINY, "method=cl-infonce", "clusters.spec=wordnet:8",
                                 "method_args.key_queue=128", f"out={out}"]))
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert (state["model"]["queue_index"] >= 0).all()  # 2 epochs x 4 steps x 64 samples filled all 128 slots


@needs_fashion_mnist
@pytest.mark.parametrize("method", ["cl-infonce", "ce"])
def test_cluster_methods_without_clusters_stop_with_a_clear_message(capsys, tmp_path, method):
    from selfsup_clusters.cli import main

    assert main(["train", *TINY, "--method", method, "--out", str(tmp_path / "r")]) == 2
    assert "pass --clusters" in capsys.readouterr().err


def test_ring_write_wraps_and_keeps_the_last_rows_of_an_oversized_batch():
    from selfsup_clusters.methods.memory import ring_write

    queue, index, pointer = torch.zeros(4, 2), torch.full((4,), -1), torch.tensor(3)
    ring_write(pointer, [queue, index], [torch.ones(2, 2), torch.tensor([7, 8])])
    assert index.tolist() == [8, -1, -1, 7] and int(pointer) == 1
    ring_write(pointer, [queue, index], [torch.zeros(6, 2), torch.arange(6)])  # more rows than slots
    assert sorted(index.tolist()) == [2, 3, 4, 5] and int(pointer) == 1
