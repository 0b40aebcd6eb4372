"""`selfsup-clusters bench`, the precision option and the FAISS GPU fallback: tiny models on synthetic images."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from selfsup_clusters.cli import main
from selfsup_clusters.recipes import load_config
from selfsup_clusters.studies.bench import parse_variants, synthetic_dataset
from selfsup_clusters.training import run as run_module
from selfsup_clusters.training import trainer
from tests.conftest import TINY, needs_fashion_mnist

TINY_BENCH = ["--dataset", "synthetic", "--backbone", "test_resnet", "--batch-size", "16", "--steps", "2",
              "--warmup-steps", "1", "--image-size", "16", "--kmeans-n", "400", "--kmeans-ks", "4,8",
              "--knn-train", "300", "--knn-test", "100", "model.proj_hidden_dim=64", "model.proj_dim=32"]


def test_bench_writes_consistent_json(tmp_path, capsys, monkeypatch):
    import time

    from selfsup_clusters.studies import bench

    # Time each training epoch the bench runs with this test's own clock: per method a warm-up epoch (1 step),
    # then the timed one (2 steps).
    epochs = []
    real_epoch = bench.train_epoch

    def timed_epoch(run, epoch, logger):
        start = time.perf_counter()
        record = real_epoch(run, epoch, logger)
        epochs.append((run.steps_per_epoch, time.perf_counter() - start))
        return record

    monkeypatch.setattr(bench, "train_epoch", timed_epoch)
    out = tmp_path / "bench.json"
    start = time.perf_counter()
    assert main(["bench", *TINY_BENCH, "--precision", "fp32", "--out", str(out)]) == 0
    wall = time.perf_counter() - start
    report = json.loads(out.read_text())
    assert [steps for steps, _ in epochs] == [1, 2, 1, 2]
    for row, (steps, seconds) in zip(report["methods"], epochs[1::2], strict=True):
        # The reported step time is the timed epoch's, as measured from outside (less only the epoch's own
        # bookkeeping), so the throughput is neither inflated nor deflated.
        assert 0.8 * seconds <= steps * row["step_ms"] / 1000 <= seconds
    # Against the clock of this test, not the bench's own: the timed steps of both methods and the k-means fit in
    # the command's wall time (a throughput inflated by a miscounted step or time would not).
    timed = sum(2 * row["step_ms"] / 1000 for row in report["methods"])  # --steps 2 each
    assert 0 < timed < wall
    assert sum(r["seconds"] for r in report["kmeans"]["rows"]) + report["knn"]["knn_seconds"] < wall
    for row in report["methods"]:
        assert row["images_per_s"] > 2 * 2 * 16 / wall  # 2 steps of 16 images x 2 views took less than `wall`
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


def test_precision_auto_follows_the_hardware(monkeypatch):
    cpu = torch.device("cpu")
    for avx512_bf16, amx, expected in [(False, False, "fp32"), (True, False, "bf16"), (False, True, "bf16")]:
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v)
        assert run_module.resolve_precision("auto", cpu) == expected
        assert run_module.resolve_precision("fp32", cpu) == "fp32"
        assert run_module.resolve_precision("bf16", cpu) == "bf16"
    for native, expected in [(True, "bf16"), (False, "fp32")]:
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, v=native, **k: v)
        assert run_module.resolve_precision("auto", torch.device("cuda")) == expected


@pytest.mark.parametrize("method, clusters", [("simclr", "none"), ("cl-infonce", "labels"), ("moco", "none"),
                                              ("supervised", "none")])
def test_bf16_training_step_on_cpu_keeps_the_loss_in_float32(tmp_path, method, clusters):
    cfg = load_config(overrides=[*TINY, "precision=bf16", f"method={method}", f"clusters.spec={clusters}",
                                 f"out={tmp_path}"])
    run = run_module.setup(cfg, data=synthetic_dataset(64, 10, channels=1, size=16))
    assert run.precision == "bf16"
    if trainer.clustering_due(run, 0):
        run.method.set_clusters(run.cluster_source.assign(None))
    views, index, labels = next(run.batches.train(run.data.train, torch.arange(64), 32, torch.Generator()))
    with run_module.autocast(run):
        out = run.method.training_step(views, index, labels)
    assert out["loss"].dtype == torch.float32 and torch.isfinite(out["loss"])
    out["loss"].backward()
    grads = [p.grad for p in run.method.backbone.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@needs_fashion_mnist
def test_final_json_reports_the_resolved_precision(tiny_overrides, tmp_path, monkeypatch):
    # precision=auto on a CPU that (as far as the run can tell) computes bf16 natively: the run resolves it, trains
    # under bf16 autocast and reports what it used, not what was asked for.
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    enabled = []
    real_autocast = run_module.autocast
    monkeypatch.setattr(trainer, "autocast", lambda run: enabled.append(run.precision) or real_autocast(run))
    final = trainer.train(load_config(overrides=[*tiny_overrides, "epochs=1", "precision=auto", "eval.linear=false",
                                                 "eval.cluster_metrics=false"]))
    assert final["precision"] == "bf16" and final["config"]["precision"] == "auto"
    assert enabled and set(enabled) == {"bf16"}
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
    from selfsup_clusters.core.errors import UserError

    data = synthetic_dataset(64, 10, channels=1, size=16)
    data.train.labels[5] = -1
    cfg = load_config(overrides=[*TINY, "method=supervised", f"out={tmp_path}"])
    with pytest.raises(UserError, match="needs a label for every training image"):
        run_module.setup(cfg, data=data)


@pytest.mark.parametrize("flags, mhz, family, fp32, bf16", [
    ({"avx2", "avx512f", "avx512_bf16"}, 2600.0, 26, 332.8, 665.6),  # Zen 5: two full-width AVX-512 FMA pipes
    ({"avx2", "avx512f", "avx512_bf16"}, 2600.0, 25, 166.4, 332.8),  # Zen 4: AVX-512 on a 256-bit datapath
    ({"avx2", "fma"}, 2445.408, 25, 156.5, None),  # Zen 3: AVX2 only, bf16 emulated
])
def test_physical_peak_counts_pipes_lanes_and_clock(monkeypatch, flags, mhz, family, fp32, bf16):
    from selfsup_clusters.studies import bench

    monkeypatch.setattr(bench, "cpu_flags", lambda: (flags, mhz, family))
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    cpu = torch.device("cpu")
    assert bench.physical_peak(cpu, torch.float32)["gflops"] == pytest.approx(fp32, abs=0.1)
    peak = bench.physical_peak(cpu, torch.bfloat16)
    assert peak is None if bf16 is None else peak["gflops"] == pytest.approx(bf16, abs=0.1)
    assert bench.physical_peak(torch.device("cuda"), torch.float32) is None


@pytest.mark.slow  # inductor compiles C++ for the step: about a minute on 2 cores
def test_compiled_and_eager_backbones_give_the_same_loss():
    from selfsup_clusters.methods.registry import build_method

    views = [torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    index = torch.arange(8)
    losses = []
    for compiled in (False, True):
        cfg = load_config(overrides=["device=cpu", "model.backbone=test_resnet", "model.proj_hidden_dim=64",
                                     "model.proj_dim=32", "method=simclr"])
        torch.manual_seed(0)
        method = build_method(cfg, 1)
        if compiled:
            method.backbone.compile()  # as run.setup does for model.compile=true
        losses.append(method.training_step(views, index, index)["loss"])
        losses[-1].backward()
    assert losses[1].item() == pytest.approx(losses[0].item(), rel=1e-4)


def test_benchmark_variants_keep_bracketed_values_whole():
    """--variant NAME=k=v,k=[a,b]: the commas inside brackets belong to one value (augment.crop_scale)."""
    assert parse_variants(["base=", "crop=augment.crop_scale=[0.3,1.0],method_args.temperature=0.2"]) == {
        "base": [], "crop": ["augment.crop_scale=[0.3,1.0]", "method_args.temperature=0.2"]}


@pytest.mark.parametrize("size, stride, padding, fast", [(1, 1, 1, True), (2, 2, 1, True), (3, 1, 0, True),
                                                         (2, 1, 1, True), (5, 1, 1, False)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_point_output_conv_gives_nn_conv2d_outputs_and_gradients(monkeypatch, size, stride, padding, fast,
                                                                  channels_last):
    """model.point_conv_matmul: an output of at most 4 pixels goes through the window matmuls (backbones.WindowConv),
    anything larger through nn.Conv2d; the output and every gradient (input, weight, bias) equal nn.Conv2d's, and
    the weight's gradient keeps the weight's memory layout (the optimizer step slows down on mixed layouts)."""
    import copy

    from selfsup_clusters.methods import backbones

    calls, apply = [], backbones.WindowConv.apply
    monkeypatch.setattr(backbones.WindowConv, "apply", lambda *a: calls.append(1) or apply(*a))
    torch.manual_seed(0)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    reference = torch.nn.Conv2d(8, 6, 3, stride=stride, padding=padding).double().to(memory_format=layout)
    point = backbones.use_point_convolutions(copy.deepcopy(reference))
    x = torch.randn(4, 8, size, size, dtype=torch.float64).contiguous(memory_format=layout)
    outputs, grads = [], []
    for conv in (reference, point):
        xi = x.clone().requires_grad_()
        out = conv(xi)
        out.mul(torch.arange(out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
        outputs.append(out)
        grads.append([xi.grad, conv.weight.grad, conv.bias.grad])
    assert outputs[0].shape == outputs[1].shape
    assert torch.allclose(outputs[0], outputs[1], atol=1e-12)
    for a, b in zip(*grads, strict=True):
        assert torch.allclose(a, b, atol=1e-12)
    assert point.weight.grad.stride() == point.weight.stride()
    assert bool(calls) == fast
    calls.clear()
    with torch.no_grad():  # feature extraction takes the same path (oneDNN was slower there too)
        assert torch.allclose(point(x), outputs[0], atol=1e-12)
    assert bool(calls) == fast


def test_point_output_conv_under_bf16_autocast_is_nn_conv2d_in_bf16():
    """Under autocast the window matmuls run in bf16, as oneDNN's convolution does: the same output to bf16's
    precision, a bf16 output, float32 gradients for float32 weights."""
    import copy

    from selfsup_clusters.methods import backbones

    torch.manual_seed(0)
    reference = torch.nn.Conv2d(64, 32, 3, stride=2, padding=1).to(memory_format=torch.channels_last)
    point = backbones.use_point_convolutions(copy.deepcopy(reference))
    x = torch.randn(16, 64, 2, 2).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected, found = reference(x), point(x)
    assert found.dtype == expected.dtype == torch.bfloat16
    assert torch.allclose(found.float(), expected.float(), atol=0.05, rtol=0.02)
    found.float().sum().backward()
    assert point.weight.grad.dtype == torch.float32


def test_point_conv_matmul_swaps_only_plain_convolutions():
    from selfsup_clusters.config import ModelConfig
    from selfsup_clusters.methods.backbones import PointOutputConv2d, create_backbone

    on = create_backbone(ModelConfig(backbone="resnet10t"), 1)
    off = create_backbone(ModelConfig(backbone="resnet10t", point_conv_matmul=False), 1)
    assert any(isinstance(m, PointOutputConv2d) for m in on.modules())
    assert not any(isinstance(m, PointOutputConv2d) for m in off.modules())
    assert on.state_dict().keys() == off.state_dict().keys()  # checkpoints and exports stay interchangeable
