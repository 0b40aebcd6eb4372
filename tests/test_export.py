"""Taking a trained backbone out: checkpoints kept every N epochs, `export` (loaded by timm alone in a fresh
process, with the trainer's features), `load_backbone` for the small stem, `embed`, and their bad inputs."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from selfsup_clusters.cli import main
from selfsup_clusters.data import load_dataset
from selfsup_clusters.recipes import load_config
from selfsup_clusters.training.run import load_trained
from selfsup_clusters.training.trainer import train
from tests.conftest import TINY, every_method, needs_fashion_mnist

pytestmark = needs_fashion_mnist
QUIET = ["eval.linear=false", "eval.cluster_metrics=false", "eval.projector=0"]  # no evaluation beyond kNN


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A tiny 2-epoch SimCLR run that keeps a checkpoint after every epoch."""
    run = tmp_path_factory.mktemp("export") / "run"
    train(load_config(overrides=[*TINY, *QUIET, "log.save_every=1", f"out={run}"]))
    return run


def trainer_features(checkpoint, split: str = "test", n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """The first n centre views of a split and their backbone features as the trainer's evaluation computes them."""
    run = load_trained(checkpoint)
    images = run.data.test if split == "test" else run.data.train
    x = next(iter(run.batches.eval(images.first(n), n)))
    with torch.no_grad():
        return x, run.method.features(x)


def test_an_evaluated_checkpoint_keeps_the_training_memory_format(trained_run):
    """channels_last (the default, +16% measured) applies when a checkpoint is evaluated, not only in training."""
    run = load_trained(trained_run / "checkpoints" / "last.pt")
    assert run.cfg.model.channels_last
    conv = next(m for m in run.method.backbone.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1
                and m.kernel_size != (1, 1))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not conv.weight.is_contiguous()


def test_save_every_keeps_numbered_checkpoints_beside_last(trained_run):
    folder = trained_run / "checkpoints"
    assert sorted(p.name for p in folder.glob("*.pt")) == ["epoch0001.pt", "epoch0002.pt", "last.pt"]
    first, second, last = (torch.load(folder / name, weights_only=True)
                           for name in ("epoch0001.pt", "epoch0002.pt", "last.pt"))
    assert (first["epoch"], second["epoch"], last["epoch"]) == (0, 1, 1)
    assert all(torch.equal(second["model"][k], last["model"][k]) for k in last["model"])
    assert not all(torch.equal(first["model"][k], last["model"][k]) for k in last["model"])
    assert not list(folder.glob(".*.tmp"))  # written atomically: no temporary file left behind


def test_exported_backbone_loads_in_timm_in_a_fresh_process_with_equal_features(trained_run, tmp_path, capsys):
    checkpoint = trained_run / "checkpoints" / "last.pt"
    out = tmp_path / "exported"
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(out)]) == 0
    assert "timm.create_model('test_resnet'" in capsys.readouterr().out
    info = json.loads((out / "config.json").read_text())["selfsup_clusters"]
    assert {k: info[k] for k in ("timm_name", "in_chans", "stem", "image_size", "method", "clusters", "epoch")} == {
        "timm_name": "test_resnet", "in_chans": 1, "stem": "timm", "image_size": 28, "method": "simclr",
        "clusters": "none", "epoch": 2}
    assert info["mean"] == pytest.approx([0.286], abs=1e-3) and info["std"] == pytest.approx([0.353], abs=1e-3)

    x, expected = trainer_features(checkpoint)
    torch.save(x, tmp_path / "x.pt")
    fresh = f"""
import timm, torch
exact = timm.create_model("test_resnet", pretrained=False, num_classes=0, in_chans=1,
                          checkpoint_path={str(out / "model.safetensors")!r}).eval()
hub_style = timm.create_model("local-dir:{out}", pretrained=True).eval()
x = torch.load({str(tmp_path / "x.pt")!r})
with torch.no_grad():
    torch.save({{"exact": exact(x), "hub_style": hub_style(x)}}, {str(tmp_path / "y.pt")!r})
"""
    done = subprocess.run([sys.executable, "-c", fresh], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = torch.load(tmp_path / "y.pt")
    difference = (loaded["exact"] - expected).abs().max().item()
    print(f"timm in a fresh process vs the trainer's features: max |difference| {difference:.1e} over "
          f"{tuple(expected.shape)}")
    assert expected.shape == (64, 96) and difference < 1e-5
    assert (loaded["hub_style"] - expected).abs().max().item() < 1e-5


@pytest.mark.parametrize("method, settings", every_method({"moco": ["method=moco", "method_args.queue_size=128"],
                                                           "pcl": ["method=pcl", "clusters.spec=kmeans:8",
                                                                   "method_args.queue_size=128"],
                                                           "swav": ["method=swav", "method_args.num_prototypes=16"]},
                                                          slow_but=("cl-infonce",)))
def test_every_method_exports_a_backbone_with_the_trainers_features(tmp_path, method, settings):
    from selfsup_clusters import export_backbone, load_backbone

    checkpoint = tmp_path / "run" / "checkpoints" / "last.pt"
    train(load_config(overrides=[*TINY, *QUIET, "epochs=1", *settings, f"out={tmp_path / 'run'}"]))
    assert export_backbone(checkpoint, tmp_path / "exported")["selfsup_clusters"]["method"] == method
    x, expected = trainer_features(checkpoint, n=16)
    with torch.no_grad():
        assert (load_backbone(tmp_path / "exported")(x) - expected).abs().max().item() < 1e-5


def test_load_backbone_takes_the_small_stem_timm_has_not(tmp_path):
    from selfsup_clusters import export_backbone, load_backbone

    checkpoint = tmp_path / "run" / "checkpoints" / "last.pt"
    train(load_config(overrides=[*TINY, *QUIET, "epochs=1", "model.stem=small", f"out={tmp_path / 'run'}"]))
    config = export_backbone(checkpoint, tmp_path / "exported")
    assert config["selfsup_clusters"]["stem"] == "small" and "load_backbone" in config["selfsup_clusters"]["load"]
    x, expected = trainer_features(checkpoint, n=16)
    with torch.no_grad():
        assert (load_backbone(tmp_path / "exported")(x) - expected).abs().max().item() < 1e-5


def test_embed_writes_the_trainers_features_with_labels_and_indices(trained_run, tmp_path, capsys):
    checkpoint = trained_run / "checkpoints" / "last.pt"
    out = tmp_path / "test.npz"
    assert main(["embed", "--checkpoint", str(checkpoint), "--split", "test", "--subset", "64",
                 "--out", str(out), "data.num_workers=0"]) == 0
    assert "64 x 96 features of fashion-mnist test" in capsys.readouterr().out
    saved = np.load(out)
    x, expected = trainer_features(checkpoint)
    assert np.abs(saved["features"] - expected.numpy()).max() < 1e-5
    run = load_trained(checkpoint, ["data.test_subset=null"])
    assert np.array_equal(saved["labels"], run.data.test.labels[:64].numpy())
    assert np.array_equal(saved["indices"], np.arange(64)) and saved["class_names"][0] == run.data.class_names[0]

    plain = tmp_path / "train.npy"  # the training split, whole (the run itself trained on its first 256 images)
    assert main(["embed", "--checkpoint", str(trained_run / "checkpoints" / "epoch0001.pt"), "--subset", "300",
                 "--batch-size", "128", "--out", str(plain)]) == 0
    assert np.load(plain).shape == (300, 96)


@pytest.mark.parametrize("command, message", [
    (["export", "--checkpoint", "{tmp}/nope.pt", "--out", "{tmp}/x"], "no checkpoint at"),
    (["export", "--checkpoint", "{ckpt}", "--out", "{tmp}/a_file"], "is a file, not a folder"),
    (["embed", "--checkpoint", "{ckpt}", "--out", "{tmp}/features.txt"], "must end in .npy"),
    (["embed", "--checkpoint", "{ckpt}", "--out", "{tmp}/a_folder.npy"], "is a folder"),
    (["embed", "--checkpoint", "{ckpt}", "--split", "valid", "--out", "{tmp}/f.npy"], "--split 'valid'"),
    (["embed", "--checkpoint", "{ckpt}", "--subset", "0", "--out", "{tmp}/f.npy"], "--subset 0"),
    (["embed", "--checkpoint", "{ckpt}", "--dataset", "mnist", "--out", "{tmp}/f.npy"], "unknown dataset 'mnist'"),
    (["embed", "--checkpoint", "{ckpt}", "--dataset", "cifar10", "--data-root", "{tmp}", "--out", "{tmp}/f.npy"],
     "takes 1-channel images but cifar10 has 3"),
    (["embed", "--checkpoint", "{ckpt}", "--out", "{tmp}/f.npy", "data.bogus=1"], "unknown key"),
])
def test_bad_export_and_embed_input_is_one_line(trained_run, tmp_path, capsys, command, message):
    from tests.test_datasets import fake_cifar10

    fake_cifar10(tmp_path)
    (tmp_path / "a_file").write_text("")
    (tmp_path / "a_folder.npy").mkdir()
    argv = [a.format(tmp=tmp_path, ckpt=trained_run / "checkpoints" / "last.pt") for a in command]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err, err


def test_load_backbone_of_a_folder_that_is_no_export(tmp_path):
    from selfsup_clusters import UserError, load_backbone

    with pytest.raises(UserError, match="not a backbone written by `selfsup-clusters export`"):
        load_backbone(tmp_path)


def test_embed_splits_follow_the_runs_validation_split(trained_run, tmp_path, capsys):
    """With data.val_fraction, --split train leaves the validation images out and --split val is them; without
    one, --split val is an error. A fraction of 0.999 leaves 6 training images a class: 60 to embed."""
    checkpoint = str(trained_run / "checkpoints" / "last.pt")
    out = tmp_path / "train.npz"
    assert main(["embed", "--checkpoint", checkpoint, "--out", str(out), "data.val_fraction=0.999",
                 "data.num_workers=0"]) == 0
    held = load_dataset(load_config(overrides=["data.val_fraction=0.999"]).data)
    assert np.array_equal(np.load(out)["labels"], held.train.labels.numpy()) and len(held.train) == 60
    assert main(["embed", "--checkpoint", checkpoint, "--split", "test", "--subset", "8", "--out", str(out),
                 "data.val_fraction=0.999"]) == 0
    assert np.array_equal(np.load(out)["labels"], load_dataset(load_config().data).test.labels[:8].numpy())
    capsys.readouterr()
    assert main(["embed", "--checkpoint", checkpoint, "--split", "val", "--out", str(out)]) == 2
    assert "held out no validation split" in capsys.readouterr().err
