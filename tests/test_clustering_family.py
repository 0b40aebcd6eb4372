"""SwAV and DeepCluster-v2: their losses and Sinkhorn against the official facebookresearch/swav arithmetic on
identical tensors, the prototypes' freeze and normalisation, the queue, and bad input refused before training.

The references below are transcriptions of main_swav.py's `distributed_sinkhorn` and loss loop and of
main_deepclusterv2.py's cross-entropy, in float64 numpy, written from the official code and not from ours: a
changed epsilon, a changed order of the normalisations or a loss without the swap in ours breaks them.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from selfsup_clusters.core.errors import UserError
from selfsup_clusters.methods.losses import prototype_cross_entropy, sinkhorn, swapped_prediction
from tests.conftest import TINY, metrics, needs_fashion_mnist


def official_sinkhorn(out: np.ndarray, epsilon: float = 0.05, iterations: int = 3) -> np.ndarray:
    """main_swav.py distributed_sinkhorn on one process, in float64."""
    q = np.exp(out / epsilon).T  # K x B
    b, k = q.shape[1], q.shape[0]
    q = q / q.sum()
    for _ in range(iterations):
        q = q / q.sum(axis=1, keepdims=True)
        q = q / k
        q = q / q.sum(axis=0, keepdims=True)
        q = q / b
    return (q * b).T


def official_swav_loss(output: np.ndarray, codes: list[np.ndarray], temperature: float = 0.1) -> float:
    """main_swav.py's loss loop, nmb_crops = [2], crops_for_assign = [0, 1]; output: (2B, K) scores."""
    bs, loss = codes[0].shape[0], 0.0
    for crop_id, q in enumerate(codes):
        subloss = 0.0
        for v in np.delete(np.arange(2), crop_id):
            x = output[bs * v: bs * (v + 1)] / temperature
            top = x.max(1, keepdims=True)
            log_softmax = x - top - np.log(np.exp(x - top).sum(1, keepdims=True))
            subloss -= np.mean(np.sum(q * log_softmax, axis=1))
        loss += subloss / (2 - 1)
    return loss / 2


def unit(*shape, seed=0) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def cosines(batch=24, prototypes=40, seed=0) -> torch.Tensor:
    return unit(batch, 16, seed=seed) @ unit(prototypes, 16, seed=seed + 1).T


def test_sinkhorn_is_the_official_arithmetic():
    from selfsup_clusters.methods.baselines.swav import SwAVOptions

    defaults = SwAVOptions()  # swav_200ep_bs256_pretrain.sh's
    assert (defaults.epsilon, defaults.sinkhorn_iterations, defaults.temperature) == (0.05, 3, 0.1)
    scores = cosines()
    ours = sinkhorn(scores, 0.05, 3)
    reference = official_sinkhorn(scores.double().numpy())
    np.testing.assert_allclose(ours.numpy(), reference, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(ours.sum(dim=1).numpy(), 1.0, rtol=1e-5)  # each sample's code sums to 1
    # the details the comparison pins: each one changed moves the codes far past the tolerance above
    for changed in (official_sinkhorn(scores.double().numpy(), epsilon=0.1),
                    official_sinkhorn(scores.double().numpy(), iterations=2),
                    official_sinkhorn(scores.double().numpy().T, iterations=3).T):  # columns before rows
        assert np.abs(changed - reference).max() > 1e-2


def test_sinkhorn_across_processes_is_sinkhorn_on_the_union():
    """Two processes played by two threads, each with half the batch and an all-reduce that sums over both: each
    gets the rows of the one-process codes of the whole batch (the official distributed_sinkhorn)."""
    scores = cosines(batch=32)
    halves, results = scores.split(16), [None, None]
    barrier, slots = threading.Barrier(2), [None, None]

    def worker(rank: int) -> None:
        def all_reduce(x: torch.Tensor) -> torch.Tensor:
            slots[rank] = x.clone()
            barrier.wait()
            total = slots[0] + slots[1]
            barrier.wait()
            return x.copy_(total)

        results[rank] = sinkhorn(halves[rank], 0.05, 3, world_size=2, all_reduce=all_reduce)

    threads = [threading.Thread(target=worker, args=(rank,)) for rank in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    torch.testing.assert_close(torch.cat(results), sinkhorn(scores, 0.05, 3), rtol=1e-5, atol=1e-7)


def test_swapped_prediction_is_the_official_loss():
    scores = torch.stack([cosines(seed=0), cosines(seed=2)])
    codes = torch.stack([sinkhorn(s, 0.05, 3) for s in scores])
    reference = official_swav_loss(scores.reshape(-1, scores.shape[2]).double().numpy(),
                                   [c.double().numpy() for c in codes])
    ours = swapped_prediction(scores, codes, 0.1)
    assert abs(float(ours) - reference) < 1e-4
    unswapped = swapped_prediction(scores, codes.flip(0), 0.1)  # each view predicting its own code
    assert abs(float(unswapped) - reference) > 1e-2


def test_prototype_cross_entropy_is_the_official_loss_and_ignores_unassigned_samples():
    z, centroids = unit(30, 16), unit(7, 16, seed=3)
    targets = torch.randint(0, 7, (30,), generator=torch.Generator().manual_seed(4))
    targets[::5] = -1
    official = torch.nn.CrossEntropyLoss(ignore_index=-100)(
        (z.double() @ centroids.double().T) / 0.1, torch.where(targets < 0, -100, targets))
    assert abs(float(prototype_cross_entropy(z, centroids, targets, 0.1)) - float(official)) < 1e-5
    assert float(prototype_cross_entropy(z, centroids, torch.full((30,), -1), 0.1)) == 0.0


# --- the methods ----------------------------------------------------------------------------------------------------


def tiny_method(*overrides: str):
    from selfsup_clusters.methods.registry import build_method
    from selfsup_clusters.recipes import load_config

    return build_method(load_config(overrides=[*TINY, *overrides]), in_chans=1)


def one_step(method, epoch: int) -> None:
    views = [torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(epoch + v)) for v in range(2)]
    optimizer = torch.optim.SGD(method.parameters(), lr=0.5, momentum=0.9)
    method.start_epoch(epoch)
    method(views, torch.arange(8), torch.zeros(8, dtype=torch.long))["loss"].backward()
    method.after_backward()
    optimizer.step()


def test_swav_prototypes_are_normalised_every_step_and_frozen_in_the_first_epoch():
    method = tiny_method("method=swav", "method_args.num_prototypes=16", "batch_size=8")
    one_step(method, epoch=0)
    before = method.prototypes.weight.detach().clone()
    assert torch.allclose(before.norm(dim=1), torch.ones(16), atol=1e-5)  # normalised before the step
    one_step(method, epoch=0)
    torch.testing.assert_close(method.prototypes.weight, before)  # normalised again, and no update
    one_step(method, epoch=1)
    assert not torch.allclose(method.prototypes.weight, before)


def test_swav_queue_joins_sinkhorn_once_full(monkeypatch):
    from selfsup_clusters.methods import losses
    from selfsup_clusters.methods.baselines import swav

    method = tiny_method("method=swav", "method_args.num_prototypes=16", "batch_size=8",
                         "method_args.queue_length=20", "method_args.queue_start_epoch=1")
    assert method.queue.shape == (2, 16, 32)  # rounded down to whole batches of 8
    seen = []
    monkeypatch.setattr(swav, "sinkhorn", lambda scores, *a, **k: seen.append(len(scores)) or
                        losses.sinkhorn(scores, *a, **k))
    for epoch in (0, 1, 1, 1):
        one_step(method, epoch)
    assert seen == [8, 8, 8, 8, 8, 8, 24, 24]  # epoch 0: no queue; epoch 1: filled in two steps, then used


@needs_fashion_mnist
@pytest.mark.parametrize("overrides, message", [
    (["method=swav", "method_args.num_prototypes=300"], "num_prototypes=300 is more than the 256 training images"),
    (["method=swav", "method_args.num_prototypes=16", "method_args.queue_length=512"], "queue_length=512 is longer"),
    (["method=deepcluster-v2"], "learns from clusters; pass --clusters"),
    (["method=deepcluster-v2", "clusters.spec=wordnet:8"], "'wordnet:8' is not k-means"),
    (["method=deepcluster-v2", "clusters.spec=kmeans:8", "clusters.warmup=1"], "clusters.warmup must be 0"),
])
def test_bad_input_is_one_error_before_training(tmp_path, overrides, message):
    from selfsup_clusters.recipes import load_config
    from selfsup_clusters.training.trainer import train

    with pytest.raises(UserError, match=message):
        train(load_config(overrides=[*TINY, *overrides, f"out={tmp_path / 'run'}"]))
    assert not (tmp_path / "run" / "checkpoints").exists()


@needs_fashion_mnist
@pytest.mark.parametrize("freeze", [0, 1])
def test_swav_trains_with_and_without_a_frozen_first_epoch(tmp_path, freeze):
    from selfsup_clusters.recipes import load_config
    from selfsup_clusters.training.trainer import train

    final = train(load_config(overrides=[*TINY, "method=swav", "method_args.num_prototypes=16", "eval.linear=false",
                                         f"method_args.freeze_prototypes_epochs={freeze}", f"out={tmp_path / 'run'}"]))
    last = metrics(tmp_path / "run")[-1]  # its own clusters' diagnostics, once the bank holds every sample
    assert final["loss"] > 0 and last["cluster_diagnostics"][0]["name"] == "prototypes:16"


def test_swav_own_clusters_are_each_rows_nearest_prototype_across_blocks():
    method = tiny_method("method=swav", "method_args.num_prototypes=16")
    bank = unit(70_000, 32, seed=5)  # past one block of 65,536 rows
    [(name, ids)] = method.own_clusters(bank)
    weight = F.normalize(method.prototypes.weight.detach(), dim=1)
    assert name == "prototypes:16" and torch.equal(ids, (bank @ weight.T).argmax(dim=1))
