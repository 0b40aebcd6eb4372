"""The GPU checks `tools/device_check.sh` runs first on a GPU machine (`pytest -m cuda`): a training epoch of every
method with its data held on the device under bf16 autocast, resume, k-means on features that live on the device,
export from a device run, and an image folder's decoded cache trained from device memory.

Skipped without a CUDA GPU. SELFSUP_TEST_DEVICE=cpu runs them on the CPU at the precision it computes natively (what
`SMOKE=1 bash tools/device_check.sh` does, to check them where no GPU is lent). Fashion-MNIST comes from
SELFSUP_DATA_ROOT when set (the device bundle's copy), else from Debian's package.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from selfsup_clusters.clusters import run_kmeans
from selfsup_clusters.data.fashion_mnist import DEBIAN_ROOT
from selfsup_clusters.data.loader import InMemoryBatches
from selfsup_clusters.methods.registry import METHODS
from selfsup_clusters.recipes import load_config
from selfsup_clusters.training.export import export_backbone, load_backbone
from selfsup_clusters.training.logger import NullLogger
from selfsup_clusters.training.run import load_trained, setup
from selfsup_clusters.training.trainer import clustering_due, train, train_epoch, update_clusters
from tests.conftest import FASHION_MNIST_MISSING, TINY
from tests.test_cache import straight_and_resumed

DEVICE = os.environ.get("SELFSUP_TEST_DEVICE", "cuda")
ON_GPU = DEVICE.startswith("cuda")
DATA_ROOT = os.environ.get("SELFSUP_DATA_ROOT") or DEBIAN_ROOT
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(ON_GPU and not torch.cuda.is_available(), reason="no CUDA GPU (tools/device_check.sh)"),
]
needs_data = pytest.mark.skipif(not Path(DATA_ROOT, "train-images-idx3-ubyte.gz").is_file(),
                                reason=FASHION_MNIST_MISSING)
# bf16 where the device computes it; on a CPU `auto` (fp32 where bf16 would be emulated, 10x slower).
ON_DEVICE = [f"device={DEVICE}", f"precision={'bf16' if ON_GPU else 'auto'}", f"data.root={DATA_ROOT}",
             "log.tensorboard=false", "eval.projector=0"]
CLUSTERS = {"pcl": "kmeans:8,16"}  # every other method that uses clusters gets the labels


def overrides(tmp_path: Path, *extra: str) -> list[str]:
    return [*TINY, *ON_DEVICE, f"out={tmp_path / 'run'}", *extra]


@needs_data
@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_trains_an_epoch_with_its_data_on_the_device(tmp_path, method):
    spec = CLUSTERS.get(method, "labels") if METHODS[method].needs_cluster_spec else "none"
    run = setup(load_config(overrides=overrides(tmp_path, f"method={method}", f"clusters.spec={spec}")))
    assert run.data.train.images.device.type == run.device.type == torch.device(DEVICE).type
    if ON_GPU:
        assert run.precision == "bf16"
    if clustering_due(run, 0):
        update_clusters(run, 0, NullLogger())
    record = train_epoch(run, 0, NullLogger())
    assert math.isfinite(record["loss"]) and record["images_per_s"] > 0
    assert run.memory.seen.any() and run.memory.features.device.type == run.device.type


@needs_data
def test_resume_on_the_device_continues_like_an_uninterrupted_run(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    straight, resumed = straight_and_resumed([*TINY, *ON_DEVICE, "eval.linear=false"], tmp_path, monkeypatch)
    for a, b in zip(straight, resumed, strict=True):  # GPU kernels may differ in the last bits: close, not equal
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-3) and b["lr"] == a["lr"]
        assert abs(a["knn_top1"] - b["knn_top1"]) <= 0.02


def test_kmeans_clusters_features_that_live_on_the_device():
    generator = torch.Generator().manual_seed(0)
    centres = F.normalize(torch.randn(4, 32, generator=generator), dim=1) * 10
    truth = torch.arange(400) % 4
    features = (centres[truth] + torch.randn(400, 32, generator=generator)).to(DEVICE)
    result = run_kmeans(features, [4, 8])
    ids = result.ids[0]
    assert ids.shape == (400,) and result.centroids[1].shape == (8, 32)
    for cluster in range(4):  # each true cluster is one k-means cluster, and each k-means cluster one true one
        assert len(set(ids[truth == cluster].tolist())) == 1
    assert len(set(ids.tolist())) == 4


@needs_data
def test_export_of_a_device_run_gives_the_trained_features_on_the_cpu(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # compare float32 with float32
    final = train(load_config(overrides=overrides(tmp_path, "epochs=1", "eval.linear=false")))
    checkpoint = Path(final["out_dir"]) / "checkpoints" / "last.pt"
    export_backbone(checkpoint, tmp_path / "export")
    trained = load_trained(checkpoint)
    images = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        on_device = trained.method.features(images.to(trained.device)).float().cpu()
        exported = load_backbone(tmp_path / "export")(images)
    assert trained.device.type == torch.device(DEVICE).type
    assert torch.allclose(exported, on_device, atol=1e-4, rtol=1e-3)


def test_a_cached_image_folder_trains_from_device_memory(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("n03595614", "n04489008"):
        (tmp_path / "folder" / name).mkdir(parents=True)
        for i in range(20):
            image = Image.fromarray(rng.integers(0, 256, (40, 36, 3), dtype=np.uint8))
            image.save(tmp_path / "folder" / name / f"{i}.png")
    cfg = load_config(overrides=overrides(tmp_path, f"data.name=imagefolder:{tmp_path / 'folder'}", "data.subset=null",
                                          "data.test_subset=null", "batch_size=8", "data.image_size=32",
                                          f"data.cache_dir={tmp_path / 'cache'}", "data.num_workers=0"))
    run = setup(cfg)
    assert isinstance(run.batches, InMemoryBatches) and run.batches.decoded_files
    assert run.data.train.images.device.type == torch.device(DEVICE).type
    assert math.isfinite(train_epoch(run, 0, NullLogger())["loss"])
