"""The clustering side of the loop: k-means between epochs, fixed auxiliary clusters, statistics, resume."""


import pytest
import torch

from selfsup_clusters.cli import main
from selfsup_clusters.recipes import load_config
from selfsup_clusters.training.trainer import resume, train
from tests.conftest import TINY, interrupted_run, metrics, needs_fashion_mnist, needs_wordnet

pytestmark = needs_fashion_mnist


def test_kmeans_runs_from_warmup_every_epoch_and_logs_statistics(tmp_path):
    out = tmp_path / "run"
    train(load_config(overrides=[*TINY, "epochs=3", "clusters.spec=kmeans:5,10", "clusters.warmup=1", f"out={out}"]))
    records = metrics(out)
    assert "clusters" not in records[0]  # before the warm-up ends
    for record in records[1:]:
        names = [row["name"] for row in record["clusters"]]
        assert names == ["kmeans5", "kmeans10"]
        for row in record["clusters"]:
            assert {"H_Z", "H_Z_given_T", "I_Z_T", "NMI", "AMI", "largest_cluster", "smallest_cluster"} <= row.keys()
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert [ids.shape for ids in state["assignments"]["ids"]] == [torch.Size([256])] * 2


@needs_wordnet
def test_fixed_wordnet_clusters_are_computed_once(tmp_path):
    out = tmp_path / "run"
    train(load_config(overrides=[*TINY, "clusters.spec=wordnet:7", f"out={out}"]))
    records = metrics(out)
    assert records[0]["clusters"][0]["name"] == "wordnet7" and records[0]["clusters"][0]["num_clusters"] == 3
    assert records[0]["clusters"][0]["H_Z_given_T"] == 0.0
    assert "clusters" not in records[1]


@pytest.mark.parametrize("features, fresh_passes", [("forward", 2), ("memory", 1)])
def test_kmeans_input_is_a_fresh_pass_or_the_full_memory_bank(tmp_path, monkeypatch, features, fresh_passes):
    from selfsup_clusters.training import run as runs
    from selfsup_clusters.training import trainer

    # k-means before epochs 0 and 1. Before epoch 0 the bank holds random vectors, so both settings make a fresh
    # pass; before epoch 1 "memory" clusters the (now full) bank instead.
    inputs, passes = [], []
    real_extract = runs.extract_features  # run.clustering_features's fresh pass
    monkeypatch.setattr(runs, "extract_features", lambda *a, **k: passes.append(1) or real_extract(*a, **k))
    real_setup = trainer.setup

    def spy_setup(cfg, out_dir):
        run = real_setup(cfg, out_dir)
        assign = run.cluster_source.assign
        run.cluster_source.assign = lambda f: inputs.append((f.clone(), run.memory.features.clone())) or assign(f)
        return run

    monkeypatch.setattr(trainer, "setup", spy_setup)
    out = tmp_path / "run"
    train(load_config(overrides=[*TINY, "method=cl-infonce", "clusters.spec=kmeans:4", f"clusters.features={features}",
                                 "eval.linear=false", "eval.cluster_metrics=false", f"out={out}"]))
    assert len(passes) == fresh_passes and len(inputs) == 2
    clustered, bank = inputs[1]
    assert torch.equal(clustered, bank) == (features == "memory")
    assert [r["clusters"][0]["num_clusters"] for r in metrics(out)] == [4, 4]


def test_resume_keeps_the_saved_assignments(tmp_path, monkeypatch):
    from selfsup_clusters.training import trainer

    out = tmp_path / "run"
    # Cluster only before epoch 0 (every=10), so epoch 1 must train Cl-InfoNCE on the checkpoint's assignments.
    overrides = [*TINY, "method=cl-infonce", "clusters.spec=kmeans:8", "clusters.every=10", "eval.linear=false",
                 "eval.cluster_metrics=false", f"out={out}"]
    interrupted_run(overrides, monkeypatch)
    saved = torch.load(out / "checkpoints" / "last.pt", weights_only=True)["assignments"]

    seen, trained_with = [], []
    real_setup = trainer.setup_resumed

    def spy_setup(run_dir):
        run = real_setup(run_dir)
        seen.append(run.assignments)
        step = run.method.training_step

        def spy_step(views, index, label):
            trained_with.append(run.method.cluster_ids[0].clone())
            return step(views, index, label)

        run.method.training_step = spy_step
        return run

    monkeypatch.setattr(trainer, "setup_resumed", spy_setup)
    monkeypatch.setattr(trainer, "update_clusters", lambda *a, **k: pytest.fail("re-clustered after resume"))
    resume(out)
    assert torch.equal(seen[0].ids[0], saved["ids"][0])
    assert trained_with and all(torch.equal(ids, saved["ids"][0]) for ids in trained_with)  # the method has them
    assert len(saved["ids"][0].unique()) == 8
    final = torch.load(out / "checkpoints" / "last.pt", weights_only=True)["assignments"]
    assert torch.equal(final["ids"][0], saved["ids"][0])


def test_k_larger_than_the_data_stops_before_training(capsys, tmp_path):
    status = main(["train", *TINY, "--clusters", "kmeans:1000", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert status == 2 and "K=1000" in err and "N=256" in err
    assert not (tmp_path / "r" / "checkpoints").exists()


@needs_wordnet
def test_clusters_command_prints_every_wordnet_level(capsys):
    assert main(["clusters", "--subset", "500"]) == 0
    out = capsys.readouterr().out
    for spec in ("wordnet:1", "wordnet:5", "wordnet:7", "wordnet:10", "labels"):
        assert spec in out
    assert "NMI" in out and "I_Z_T" in out
