"""Shared fixtures: tiny, fast, offline runs on the first few hundred Fashion-MNIST images."""

from __future__ import annotations

from pathlib import Path

import pytest

from selfsup_clusters.data.fashion_mnist import DEBIAN_ROOT

HAS_FASHION_MNIST = Path(DEBIAN_ROOT, "train-images-idx3-ubyte.gz").is_file()
needs_fashion_mnist = pytest.mark.skipif(
    not HAS_FASHION_MNIST, reason="Debian's dataset-fashion-mnist is not installed (run the README's set-up)"
)

# A few hundred images, a tiny timm ResNet, no progress bars: a 2-epoch run takes a few seconds.
TINY = [
    "model.backbone=test_resnet",
    "model.proj_hidden_dim=64",
    "model.proj_dim=32",
    "data.subset=256",
    "data.test_subset=200",
    "batch_size=64",
    "epochs=2",
    "eval.knn_k=20",
    "log.progress=false",
    "log.every_steps=1",
]


@pytest.fixture
def tiny_overrides(tmp_path):
    return [*TINY, f"out={tmp_path / 'run'}"]


def metrics(run_dir):
    """The run's metrics.jsonl as a list of dicts."""
    import json

    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def interrupted_run(overrides, monkeypatch):
    """Train with `overrides`, interrupted (as by Ctrl-C) right after the first epoch's checkpoint."""
    from selfsup_clusters import trainer
    from selfsup_clusters.config import load_config
    from selfsup_clusters.errors import UserError

    real_save = trainer.save_checkpoint

    def save_then_interrupt(state, path):
        real_save(state, path)
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(trainer, "save_checkpoint", save_then_interrupt)
        with pytest.raises(UserError, match="--resume"):
            trainer.train(load_config(overrides=overrides))
