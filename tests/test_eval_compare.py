"""The evaluation harness (kNN, linear probe, cluster quality), `eval`, `compare`, `analyze` and TensorBoard."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from selfsup_clusters.cli import main
from selfsup_clusters.clusters import build_cluster_source, cluster_statistics, entropy
from selfsup_clusters.core.errors import UserError
from selfsup_clusters.data.base import AuxiliaryInfo
from selfsup_clusters.evaluation.evaluate import cluster_quality, linear_probe, weighted_knn
from selfsup_clusters.studies.compare import parse_clusters_for
from tests.conftest import TINY, interrupting_after_a_checkpoint, metrics, needs_fashion_mnist, needs_wordnet

# One epoch, no per-epoch evaluation: the end-of-run harness is what these tests look at.
FAST = [o for o in TINY if not o.startswith("epochs=")] + ["epochs=1", "eval.projector=50"]


def separable(n: int, seed: int):
    """Four classes, each a Gaussian blob around its own direction in 16 dimensions: linearly separable."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (n,), generator=g)
    centres = torch.eye(16)[:4] * 4
    return centres[labels] + 0.5 * torch.randn(n, 16, generator=g), labels


def test_linear_probe_separates_separable_features():
    x, y = separable(400, 0)
    x_test, y_test = separable(200, 1)
    assert linear_probe(x, y, x_test, y_test) > 0.9


def test_linear_probe_is_chance_on_noise():
    g = torch.Generator().manual_seed(0)
    x, x_test = torch.randn(400, 16, generator=g), torch.randn(200, 16, generator=g)
    y, y_test = torch.randint(0, 4, (400,), generator=g), torch.randint(0, 4, (200,), generator=g)
    assert linear_probe(x, y, x_test, y_test) < 0.45


def test_weighted_knn_on_a_hand_made_neighbourhood():
    # Training points on the unit circle: class 0 near angle 0, class 1 near angle pi/2, one outlier of class 1
    # at angle 0.05. With k=3 the test point at angle 0 has two class-0 and one class-1 neighbour: class 0 wins.
    angles = torch.tensor([0.0, 0.1, 0.05, 1.5, 1.6, 1.55])
    train = torch.stack([angles.cos(), angles.sin()], dim=1)
    labels = torch.tensor([0, 0, 1, 1, 1, 1])
    test = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=1)
    assert weighted_knn(train, labels, test, torch.tensor([0, 1]), k=3, temperature=0.1) == 1.0
    # With k=6 every training point votes; the outlier's weight still loses to the two close class-0 points.
    assert weighted_knn(train, labels, test, torch.tensor([0, 1]), k=6, temperature=0.1) == 1.0
    # Unlabelled training points (-1) are ignored: only the class-1 outlier is left near angle 0.
    masked = torch.tensor([-1, -1, 1, 1, 1, 1])
    assert weighted_knn(train, masked, test, torch.tensor([0, 1]), k=1, temperature=0.1) == 0.5


def test_cluster_quality_finds_blobs():
    x, y = separable(400, 0)
    quality, ids = cluster_quality(F.normalize(x, dim=1), y)
    assert quality["nmi"] > 0.9 and quality["ari"] > 0.9
    assert ids.shape == (400,)


def test_synthetic_clusters_have_the_papers_statistics():
    labels = torch.arange(10).repeat(50)
    names = [str(i) for i in range(10)]
    merged = build_cluster_source("merge:3", AuxiliaryInfo(labels, names)).assign(None).ids[0]
    split = build_cluster_source("split:4", AuxiliaryInfo(labels, names)).assign(None).ids[0]
    merge_stats, split_stats = cluster_statistics(merged, labels), cluster_statistics(split, labels)
    assert merge_stats["num_clusters"] == 3 and merge_stats["H_Z_given_T"] == pytest.approx(0, abs=1e-9)
    assert merge_stats["I_Z_T"] < entropy(labels.numpy()) - 1
    assert split_stats["I_Z_T"] == pytest.approx(entropy(labels.numpy()), abs=1e-6)
    assert 1.5 < split_stats["H_Z_given_T"] <= 2.0  # log2(4) parts per class, minus sampling noise
    with pytest.raises(UserError, match="merge:11"):
        build_cluster_source("merge:11", AuxiliaryInfo(labels, names))


def test_parse_clusters_for():
    assert parse_clusters_for("cl-infonce=wordnet:8,pcl=kmeans:25,50,100,ce=wordnet:7|labels") == {
        "cl-infonce": ["wordnet:8"], "pcl": ["kmeans:25,50,100"], "ce": ["wordnet:7", "labels"]}
    with pytest.raises(UserError, match="METHOD=SPEC"):
        parse_clusters_for("wordnet:8")
    with pytest.raises(UserError, match="merge:0"):  # a bad spec stops before any training
        parse_clusters_for("cl-infonce=merge:0")


def test_compare_rejects_a_method_without_clusters(tmp_path, capsys):
    assert main(["compare", "--methods", "simclr,cl-infonce", "--out", str(tmp_path), *FAST]) == 2
    assert "cl-infonce learns from clusters" in capsys.readouterr().err


@needs_fashion_mnist
@needs_wordnet
def test_compare_writes_results_and_skips_finished_runs(tmp_path, capsys, monkeypatch):
    out = tmp_path / "cmp"
    args = ["compare", "--methods", "simclr,cl-infonce", "--clusters-for", "cl-infonce=wordnet:8|kmeans:100000",
            "--out", str(out), *FAST]
    assert main(args) == 1  # K larger than the data fails that row only; the others finish
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["name"] for r in rows] == ["simclr", "cl-infonce wordnet:8", "raw pixels"]
    for row in rows:
        assert 0.1 < float(row["knn_top1"]) <= 1 and 0.1 < float(row["linear_top1"]) <= 1
    assert float(rows[0]["nmi"]) > 0 and float(rows[0]["images_per_s"]) > 0
    assert 0 < float(rows[0]["eval_time_s"]) < float(rows[0]["train_time_s"])  # evaluation's share of the run time
    md = (out / "results.md").read_text()
    assert "| of which evaluation (s) |" in md
    assert "| simclr |" in md and "FAILED: cl-infonce kmeans:100000" in md
    assert (out / "results.png").stat().st_size > 1000
    assert (out / "simclr" / "seed0" / "final.json").exists()
    printed = capsys.readouterr().out
    assert "| cl-infonce wordnet:8 |" in printed

    # Re-running trains nothing that finished (only the failing row is tried again).
    from selfsup_clusters.training import trainer

    calls = []
    real_train = trainer.train
    monkeypatch.setattr(trainer, "train", lambda cfg: calls.append(cfg.clusters.spec) or real_train(cfg))
    monkeypatch.setattr(trainer, "resume", lambda run_dir: calls.append(str(run_dir)) or pytest.fail("resumed"))
    assert main(args) == 1
    assert calls == ["kmeans:100000"]
    assert list(csv.DictReader((out / "results.csv").open())) == rows


@needs_fashion_mnist
def test_compare_resumes_an_interrupted_run(tmp_path, monkeypatch, capsys):
    from selfsup_clusters.recipes import UserConfig
    from selfsup_clusters.studies.suite import Entry, run_config
    from selfsup_clusters.training import trainer

    settings = [o for o in FAST if not o.startswith("epochs=")] + ["epochs=2", "eval.projector=0",
                                                                  "eval.cluster_metrics=false", "eval.linear=false"]
    out = tmp_path / "cmp"
    with interrupting_after_a_checkpoint(monkeypatch):
        assert main(["compare", "--methods", "simclr", "--out", str(out), *settings]) != 0
    run = out / "simclr" / "seed0"
    assert (run / "checkpoints" / "last.pt").exists() and not (run / "final.json").exists()
    capsys.readouterr()
    assert main(["compare", "--methods", "simclr", "--out", str(out), *settings]) == 0
    assert "resuming" in capsys.readouterr().out

    # The same run uninterrupted, with the config compare builds for it.
    straight = tmp_path / "straight"
    trainer.train(run_config(UserConfig(overrides=tuple(settings)), Entry("simclr", "none"), 0, straight))
    one, two = metrics(straight), metrics(run)
    assert [r["epoch"] for r in two] == [0, 1]
    assert [(r["loss"], r["knn_top1"]) for r in one] == [(r["loss"], r["knn_top1"]) for r in two]
    row = list(csv.DictReader((out / "results.csv").open()))[0]
    assert float(row["knn_top1"]) == one[-1]["knn_top1"]


@needs_fashion_mnist
@needs_wordnet
def test_tensorboard_has_scalars_hparams_and_projector(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    assert main(["train", "--method", "cl-infonce", "--clusters", "wordnet:8", "--out", str(run), *FAST]) == 0
    final = json.loads((run / "final.json").read_text())
    assert {"knn_top1", "linear_top1", "nmi", "ami", "ari"} <= set(final)

    events = EventAccumulator(str(run), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert {"epoch/loss", "epoch/knn_top1", "epoch/linear_top1", "hparam/knn_top1"} <= set(scalars)
    assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")

    config = (run / "projector_config.pbtxt").read_text()
    assert "sprite" in config and "metadata.tsv" in config
    (folder,) = [p.parent for p in run.glob("*/test_features/metadata.tsv")]
    header, *lines = (folder / "metadata.tsv").read_text().splitlines()
    assert header.split("\t") == ["label", "class", "kmeans", "train_cluster"]
    assert len(lines) == 50
    assert (folder / "sprite.png").stat().st_size > 0


@needs_fashion_mnist
def test_eval_command_writes_json_beside_the_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), *FAST]) == 0
    checkpoint = run / "checkpoints" / "last.pt"
    assert main(["eval", "--checkpoint", str(checkpoint), "--knn", "--linear", "--subset", "300",
                 "--test-subset", "100"]) == 0
    results = json.loads((run / "checkpoints" / "eval.json").read_text())
    assert results["train_images"] == 300 and results["test_images"] == 100
    assert 0 < results["knn_top1"] <= 1 and 0 < results["linear_top1"] <= 1
    assert "nmi" not in results  # --clusters not asked for
    assert "linear_top1" in capsys.readouterr().out
    assert main(["eval", "--checkpoint", str(tmp_path / "missing.pt")]) == 2


@needs_fashion_mnist
@needs_wordnet
def test_analyze_tabulates_levels_with_rank_correlations(tmp_path, capsys):
    out = tmp_path / "analysis"
    assert main(["analyze", "--out", str(out), "--synthetic", "merge:2,split:2", *FAST,
                 "eval.cluster_metrics=false", "eval.projector=0"]) == 0
    rows = list(csv.DictReader((out / "analysis.csv").open()))
    specs = [r["clusters"] for r in rows]
    assert specs[0] == "labels" and "wordnet:8" in specs and specs[-2:] == ["merge:2", "split:2"]
    assert "wordnet:10" not in specs  # on Fashion-MNIST wordnet:10 is the labels' partition again
    # Every level is a different partition of the training set (ids compared up to renaming).
    from selfsup_clusters.data import load_dataset
    from selfsup_clusters.recipes import load_config
    from selfsup_clusters.training.run import build_clusters

    cfg = load_config(overrides=[*FAST, "method=cl-infonce"])
    data = load_dataset(cfg.data)

    def partition(spec):
        """The training samples' cluster ids, renamed in order of first appearance."""
        cfg.clusters.spec = spec
        first = {}
        return tuple(first.setdefault(int(i), len(first)) for i in build_clusters(cfg, data).assign(None).ids[0])

    partitions = {spec: partition(spec) for spec in specs}
    assert len(set(partitions.values())) == len(specs), "analyze trained the same partition twice"
    assert partition("wordnet:10") == partitions["labels"]  # the duplicate it had to drop
    split = rows[-1]
    assert float(split["I_Z_T"]) == pytest.approx(float(rows[0]["I_Z_T"]), abs=1e-6)
    assert np.isfinite([float(r["linear_top1"]) for r in rows]).all()
    assert "Spearman rank correlation" in capsys.readouterr().out
    assert (out / "analysis.png").stat().st_size > 1000


@needs_fashion_mnist
def test_augmented_linear_probe(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), *FAST, "eval.linear_augmented_epochs=20", "eval.batch_size=32",
                 "eval.projector=0"]) == 0
    final = json.loads((run / "final.json").read_text())
    assert 0.25 < final["linear_top1"] <= 1  # 10 classes: chance is 0.1
