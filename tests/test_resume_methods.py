"""Exact resume of the methods that carry state outside their parameters: Cl-InfoNCE's key queue with k-means
clusters, CE's re-initialised heads after re-clustering, PCL's prototypes after its warm-up. Each is interrupted
after an epoch and resumed; every logged number and the final weights must equal those of an uninterrupted run.
Also: `eval` of a finished run reproduces the run's own final kNN."""

from __future__ import annotations

import pytest
import torch

from selfsup_clusters.core.errors import UserError
from selfsup_clusters.recipes import load_config
from selfsup_clusters.training import trainer
from selfsup_clusters.training.trainer import resume, train
from tests.conftest import TINY, every_method, metrics, needs_fashion_mnist

pytestmark = needs_fashion_mnist

QUICK = ["eval.linear=false", "eval.cluster_metrics=false", "eval.projector=0", "clusters.niter=5"]
# Every registered method (conftest.every_method); those named here with what makes their resume hard.
CASES = every_method({
    # k-means before every epoch (on the bank from epoch 1 on); the queue holds sample indices looked up in the
    # current clusters.
    "cl-infonce": ["method=cl-infonce", "clusters.spec=kmeans:8", "method_args.key_queue=96"],
    # Re-clustering before every epoch re-initialises the heads, seeded by the checkpointed reset count.
    "ce": ["method=ce", "clusters.spec=kmeans:8"],
    # No prototypes in epoch 0, k-means on a fresh pass before epoch 1 only; epoch 2 (resumed) trains on the
    # prototypes and concentrations rebuilt from the checkpoint's assignments, sampling negatives from the
    # checkpointed RNG.
    "pcl": ["method=pcl", "clusters.spec=kmeans:4,8", "clusters.warmup=1", "clusters.every=10",
            "method_args.queue_size=128"],
    # The queue and the key encoder, and the shuffle-BN permutations from the checkpointed RNG.
    "moco": ["method=moco", "method_args.queue_size=128"],
    # Prototypes frozen in epoch 0 and learning from epoch 1 on (their momentum from the checkpoint); the queue
    # from epoch 1 on, in use from its third step: epoch 2 (resumed) needs the checkpointed queue and its pointer.
    "swav": ["method=swav", "method_args.num_prototypes=16", "method_args.queue_length=128",
             "method_args.queue_start_epoch=1"],
    # k-means of the bank before every epoch (a fresh pass before the first), centroids rebuilt from the
    # checkpoint's assignments on resume; two heads.
    "deepcluster-v2": ["method=deepcluster-v2", "clusters.spec=kmeans:4,8"],
})


def interrupted_after(overrides: list[str], epoch: int, monkeypatch) -> None:
    """Train, stopped as by Ctrl-C right after epoch `epoch`'s checkpoint."""
    real_save = trainer.save_checkpoint

    def save_then_interrupt(state, path):
        real_save(state, path)
        if state["epoch"] == epoch:
            raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(trainer, "save_checkpoint", save_then_interrupt)
        with pytest.raises(UserError, match="--resume"):
            train(load_config(overrides=overrides))


@pytest.mark.parametrize("method, settings", CASES)
def test_resume_is_exact(tmp_path, monkeypatch, method, settings):
    overrides = [*TINY, *QUICK, "epochs=3", *settings]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(load_config(overrides=[*overrides, f"out={straight}"]))
    interrupted_after([*overrides, f"out={resumed}"], 1, monkeypatch)
    assert [r["epoch"] for r in metrics(resumed)] == [0, 1]
    resume(resumed)

    one, two = metrics(straight), metrics(resumed)
    assert [r["epoch"] for r in two] == [0, 1, 2]
    for a, b in zip(one, two, strict=True):
        assert (a["loss"], a["knn_top1"], a["lr"]) == (b["loss"], b["knn_top1"], b["lr"])
        assert [row["NMI"] for row in a.get("clusters", [])] == [row["NMI"] for row in b.get("clusters", [])]
    final = [torch.load(run / "checkpoints" / "last.pt", weights_only=True) for run in (straight, resumed)]
    for key, value in final[0]["model"].items():
        assert torch.equal(value, final[1]["model"][key]), key
    assert torch.equal(final[0]["memory"]["features"], final[1]["memory"]["features"])
    assignments = [(state["assignments"] or {}).get("ids", []) for state in final]  # none without clusters
    for ids, again in zip(*assignments, strict=True):
        assert torch.equal(torch.as_tensor(ids), torch.as_tensor(again))
    if method == "ce":
        assert int(final[1]["model"]["resets"]) == 2  # re-clustered before epochs 1 and 2: the heads reset twice
    if method == "cl-infonce":
        assert (final[1]["model"]["queue_index"] >= 0).all()


def test_eval_reproduces_the_runs_own_final_knn(tmp_path):
    from selfsup_clusters.training.run_eval import evaluate_checkpoint

    run = tmp_path / "run"
    final = train(load_config(overrides=[*TINY, *QUICK, "epochs=1", "method=cl-infonce", "clusters.spec=kmeans:8",
                                         "eval.knn_k=7", "eval.knn_t=0.2", f"out={run}"]))
    # The same subsets as training; the run's own k and temperature come from its checkpoint.
    results = evaluate_checkpoint(run / "checkpoints" / "last.pt", linear=False, clusters=False,
                                  overrides=["data.subset=256", "data.test_subset=200"])
    assert (results["train_images"], results["test_images"]) == (256, 200)
    assert (results["knn_k"], results["knn_t"]) == (7, 0.2)
    assert results["knn_top1"] == final["knn_top1"]
