"""End-to-end: a tiny 2-epoch run writes every output, lowers the loss, and resumes exactly."""

import json

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from selfsup_clusters.cli import main
from selfsup_clusters.recipes import load_config
from selfsup_clusters.training.trainer import train
from tests.conftest import TINY, interrupted_run, metrics, needs_fashion_mnist

pytestmark = needs_fashion_mnist


def test_two_epochs_lower_the_loss_and_write_every_output(tiny_overrides, tmp_path):
    final = train(load_config(overrides=[*tiny_overrides, "epochs=3"]))
    run = tmp_path / "run"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1, 2]
    for r in records:
        assert {"epoch", "loss", "knn_top1", "images_per_s", "lr", "epoch_time_s"} <= r.keys()
    assert records[-1]["loss"] < records[0]["loss"]
    assert 0.0 <= final["knn_top1"] <= 1.0 and final["knn_k"] == 20
    assert json.loads((run / "final.json").read_text())["config"]["method"] == "simclr"
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] == 2 and state["memory"]["seen"].all()
    events = EventAccumulator(str(run))
    events.Reload()
    assert {"epoch/loss", "epoch/knn_top1", "epoch/images_per_s", "step/lr"} <= set(events.Tags()["scalars"])


def test_resume_gives_the_same_metrics_as_an_uninterrupted_run(tmp_path, monkeypatch):
    train(load_config(overrides=[*TINY, f"out={tmp_path / 'straight'}"]))
    resumed = tmp_path / "resumed"
    interrupted_run([*TINY, f"out={resumed}"], monkeypatch)
    assert len(metrics(resumed)) == 1  # epoch 0 logged and saved
    assert main(["train", "--resume", str(resumed)]) == 0

    straight, again = metrics(tmp_path / "straight"), metrics(resumed)
    assert [r["epoch"] for r in again] == [0, 1]
    for a, b in zip(straight, again, strict=True):
        assert a["loss"] == b["loss"] and a["knn_top1"] == b["knn_top1"] and a["lr"] == b["lr"]


@pytest.mark.parametrize("backbone", ["test_resnet", "resnet10t"])
def test_small_stem_keeps_the_resolution(backbone):
    from selfsup_clusters.config import ModelConfig
    from selfsup_clusters.methods.backbones import create_backbone

    small = create_backbone(ModelConfig(backbone=backbone, stem="small"), in_chans=3)
    assert small.conv1.stride == (1, 1) and isinstance(small.maxpool, torch.nn.Identity)
    assert small(torch.zeros(2, 3, 32, 32)).shape == (2, small.num_features)


def test_resuming_a_finished_run_refuses_and_keeps_its_tensorboard_log(tmp_path):
    out = tmp_path / "run"
    train(load_config(overrides=[*TINY, "eval.linear=false", "eval.projector=0", f"out={out}"]))

    def epoch_losses() -> int:
        events = EventAccumulator(str(out), size_guidance={"scalars": 0})
        events.Reload()
        return len(events.Scalars("epoch/loss"))

    assert epoch_losses() == 2
    assert main(["train", "--resume", str(out)]) == 2  # "already finished its 2 epochs"
    assert epoch_losses() == 2  # a logger opened for the refused resume would have purged the last epoch's events


@pytest.mark.parametrize("overrides, images", [(["data.subset=10", "batch_size=32"], 10),
                                               (["data.subset=40", "data.val_fraction=0.8", "batch_size=32"], 8)])
def test_a_batch_larger_than_the_training_images_is_fitted_and_recorded(tmp_path, capsys, overrides, images):
    import yaml

    out = tmp_path / "run"
    assert main(["train", *TINY, "epochs=1", *overrides, f"out={out}"]) == 0
    said = capsys.readouterr().out
    assert f"batch_size=32 is more than the {images} training images" in said
    assert f"training with batch_size={images}" in said
    assert yaml.safe_load((out / "config.yaml").read_text())["batch_size"] == images
    assert metrics(out)[0]["samples_seen"] == images  # one step of the fitted batch


def test_too_few_training_images_for_a_batch_is_one_clear_error(tmp_path, capsys):
    assert main(["train", *TINY, "data.subset=3", "data.val_fraction=0.6", f"out={tmp_path / 'r'}"]) == 2
    err = capsys.readouterr().err
    assert "only 1 training images" in err and len(err.strip().splitlines()) == 1
