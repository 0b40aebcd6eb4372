"""`selfsup-clusters bench`, the precision option and the FAISS GPU fallback: tiny models on synthetic images."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from selfsup_clusters import trainer
from selfsup_clusters.bench import synthetic_dataset
from selfsup_clusters.cli import main
from selfsup_clusters.config import load_config
from tests.conftest import TINY, needs_fashion_mnist

TINY_BENCH = ["--dataset", "synthetic", "--backbone", "test_resnet", "--batch-size", "16", "--steps", "2",
              "--warmup-steps", "1", "--image-size", "16", "--kmeans-n", "400", "--kmeans-ks", "4,8",
              "--knn-train", "300", "--knn-test", "100", "model.proj_hidden_dim=64", "model.proj_dim=32"]


def test_bench_writes_consistent_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", *TINY_BENCH, "--precision", "fp32", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert "images/s" in capsys.readouterr().out

    peak = report["peak"]
    assert peak["dtype"] == "float32"
    assert peak["peak_gflops"] == max(peak["matmul_gflops"], peak["conv_gflops"]) > 0
    assert [r["method"] for r in report["methods"]] == ["simclr", "cl-infonce"]
    for row in report["methods"]:
        assert row["precision"] == "fp32"
        # both views counted
        assert row["images_per_s"] == pytest.approx(2 * 16 / (row["step_ms"] / 1000), rel=1e-6)
        assert 0 <= row["data_share"] <= 1
        assert row["gflop_per_step"] > 0
        assert row["achieved_gflops"] == pytest.approx(row["gflop_per_step"] / (row["step_ms"] / 1000), rel=1e-6)
        assert 0 < row["mfu"] < 1
    assert report["methods"][1]["clusters"] == "labels"
    assert [r["K"] for r in report["kmeans"]["rows"]] == [4, 8]
    assert all(r["seconds"] > 0 and r["share_of_epoch"] > 0 for r in report["kmeans"]["rows"])
    assert report["kmeans"]["epoch_seconds"] == pytest.approx(400 / 16 * report["methods"][0]["step_ms"] / 1000)
    knn = report["knn"]
    assert (knn["n_train"], knn["n_test"]) == (300, 100)
    assert knn["knn_seconds"] > 0 and knn["extract_seconds_estimate"] > 0


@needs_fashion_mnist
def test_bench_too_few_images_is_one_line_error(tmp_path, capsys):
    assert main(["bench", "--dataset", "fashion-mnist", "--steps", "1000", "--method", "simclr",
                 "--backbone", "test_resnet", "--out", str(tmp_path / "b.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--steps" in err


def test_precision_auto_follows_the_hardware():
    cpu = torch.device("cpu")
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert trainer.resolve_precision("auto", cpu) == ("bf16" if native else "fp32")
    assert trainer.resolve_precision("fp32", cpu) == "fp32"
    assert trainer.resolve_precision("bf16", cpu) == "bf16"


@pytest.mark.parametrize("method, clusters", [("simclr", "none"), ("cl-infonce", "labels"), ("moco", "none"),
                                              ("supervised", "none")])
def test_bf16_training_step_on_cpu_keeps_the_loss_in_float32(tmp_path, method, clusters):
    cfg = load_config(overrides=[*TINY, "precision=bf16", f"method={method}", f"clusters.spec={clusters}",
                                 f"out={tmp_path}"])
    run = trainer.setup(cfg, data=synthetic_dataset(64, 10, channels=1, size=16))
    assert run.precision == "bf16"
    if trainer.clustering_due(run, 0):
        run.method.set_clusters(run.cluster_source.assign(None))
    views, index, labels = next(run.batches.train(run.data.train, torch.arange(64), 32, torch.Generator()))
    with trainer.autocast(run):
        out = run.method.training_step(views, index, labels)
    assert out["loss"].dtype == torch.float32 and torch.isfinite(out["loss"])
    out["loss"].backward()
    grads = [p.grad for p in run.method.backbone.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@needs_fashion_mnist
def test_final_json_reports_the_resolved_precision(tiny_overrides, tmp_path):
    final = trainer.train(load_config(overrides=[*tiny_overrides, "epochs=1", "precision=bf16"]))
    assert final["precision"] == "bf16"
    assert json.loads((tmp_path / "run" / "final.json").read_text())["precision"] == "bf16"


def test_invalid_precision_is_one_line_error(capsys):
    assert main(["train", "precision=fp16"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "precision='fp16'" in err and "bf16" in err


def test_kmeans_without_faiss_gpu_falls_back_to_cpu_with_one_line(monkeypatch, caplog):
    import faiss

    from selfsup_clusters.clusters import KMeansOptions, run_kmeans
    from selfsup_clusters.clusters import kmeans as kmeans_module

    kmeans_module._warn_cpu_fallback.cache_clear()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 0)
    features = torch.randn(200, 8)
    with caplog.at_level(logging.WARNING, logger=kmeans_module.__name__):
        for _ in range(2):
            assignments = run_kmeans(features, [4], KMeansOptions(niter=2), warn=False)
    assert assignments.ids[0].shape == (200,)
    fallback = [r for r in caplog.records if "no GPU support" in r.getMessage()]
    assert len(fallback) == 1


def test_supervised_checks_labels_once_before_training(tmp_path):
    from selfsup_clusters.errors import UserError

    data = synthetic_dataset(64, 10, channels=1, size=16)
    data.train.labels[5] = -1
    cfg = load_config(overrides=[*TINY, "method=supervised", f"out={tmp_path}"])
    with pytest.raises(UserError, match="needs a label for every training image"):
        trainer.setup(cfg, data=data)
