"""The clustering side of the loop: k-means between epochs, fixed auxiliary clusters, statistics, resume."""


import torch

from selfsup_clusters.cli import main
from selfsup_clusters.config import load_config
from selfsup_clusters.trainer import train
from tests.conftest import TINY, interrupted_run, metrics, needs_fashion_mnist

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


def test_fixed_wordnet_clusters_are_computed_once(tmp_path):
    out = tmp_path / "run"
    train(load_config(overrides=[*TINY, "clusters.spec=wordnet:7", f"out={out}"]))
    records = metrics(out)
    assert records[0]["clusters"][0]["name"] == "wordnet7" and records[0]["clusters"][0]["num_clusters"] == 3
    assert records[0]["clusters"][0]["H_Z_given_T"] == 0.0
    assert "clusters" not in records[1]


def test_forward_pass_features_for_kmeans(tmp_path):
    out = tmp_path / "run"
    train(load_config(overrides=[*TINY, "epochs=1", "clusters.spec=kmeans:4", "clusters.features=forward",
                                 f"out={out}"]))
    assert metrics(out)[0]["clusters"][0]["num_clusters"] == 4


def test_resume_keeps_the_saved_assignments(tmp_path, monkeypatch):
    from selfsup_clusters import trainer

    out = tmp_path / "run"
    # Cluster only before epoch 0 (every=10), so epoch 1 must reuse the checkpoint's assignments.
    interrupted_run([*TINY, "clusters.spec=kmeans:8", "clusters.every=10", f"out={out}"], monkeypatch)
    saved = torch.load(out / "checkpoints" / "last.pt", weights_only=True)["assignments"]

    seen = []
    real_setup = trainer.setup

    def spy_setup(cfg, resume=None):
        run = real_setup(cfg, resume)
        seen.append(run.assignments)
        return run

    monkeypatch.setattr(trainer, "setup", spy_setup)
    train(load_config(), resume=out)
    assert torch.equal(seen[0].ids[0], saved["ids"][0])
    final = torch.load(out / "checkpoints" / "last.pt", weights_only=True)["assignments"]
    assert torch.equal(final["ids"][0], saved["ids"][0])  # not re-clustered at epoch 1


def test_k_larger_than_the_data_stops_before_training(capsys, tmp_path):
    status = main(["train", *TINY, "--clusters", "kmeans:1000", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert status == 2 and "K=1000" in err and "N=256" in err
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_clusters_command_prints_every_wordnet_level(capsys):
    assert main(["clusters", "--subset", "500"]) == 0
    out = capsys.readouterr().out
    for spec in ("wordnet:1", "wordnet:5", "wordnet:7", "wordnet:10", "labels"):
        assert spec in out
    assert "NMI" in out and "I_Z_T" in out
