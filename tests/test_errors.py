"""Every bad input stops with one clear message (no traceback) and a non-zero exit status."""

import pytest

from selfsup_clusters.cli import main
from tests.conftest import TINY, needs_fashion_mnist


def run_cli(capsys, *args):
    status = main(["train", *args])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return status, err


def test_unknown_method_lists_the_valid_ones(capsys, tmp_path):
    status, err = run_cli(capsys, "--method", "byol", "--out", str(tmp_path / "r"), *TINY)
    assert status == 2 and "unknown method 'byol'" in err and "simclr" in err


def test_unknown_config_key(capsys):
    status, err = run_cli(capsys, "optim.learning_rate=0.1")
    assert status == 2 and "learning_rate" in err and "unknown key" in err


def test_malformed_override(capsys):
    status, err = run_cli(capsys, "epochs")
    assert status == 2 and "key=value" in err


def test_missing_config_file(capsys, tmp_path):
    status, err = run_cli(capsys, "--config", str(tmp_path / "nope.yaml"))
    assert status == 2 and "not found" in err


@needs_fashion_mnist
def test_unknown_timm_model(capsys, tmp_path):
    tiny = [o for o in TINY if not o.startswith("model.backbone=")]  # the flag alone names the backbone
    status, err = run_cli(capsys, *tiny, "--backbone", "resnet17", "--out", str(tmp_path / "r"))
    assert status == 2 and "unknown timm model 'resnet17'" in err


def test_missing_dataset_says_how_to_install_it(capsys, tmp_path):
    status, err = run_cli(capsys, *TINY, "--data-root", str(tmp_path / "empty"), "--out", str(tmp_path / "r"))
    assert status == 2 and "apt-get install dataset-fashion-mnist" in err and "--download" in err


@needs_fashion_mnist
def test_subset_larger_than_the_data(capsys, tmp_path):
    tiny = [o for o in TINY if not o.startswith("data.subset=")]  # the flag alone sets the subset
    status, err = run_cli(capsys, *tiny, "--subset", "60001", "--out", str(tmp_path / "r"))
    assert status == 2 and "--subset 60001" in err and "60000" in err


@pytest.mark.parametrize("content", [b"not a checkpoint at all", b""])
def test_unreadable_checkpoint(capsys, tmp_path, content):
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "last.pt").write_bytes(content)
    status, err = run_cli(capsys, "--resume", str(tmp_path / "run"))
    assert status == 2 and "cannot read checkpoint" in err


def test_foreign_checkpoint(capsys, tmp_path):
    import torch

    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    torch.save({"state_dict": {}}, tmp_path / "run" / "checkpoints" / "last.pt")
    status, err = run_cli(capsys, "--resume", str(tmp_path / "run"))
    assert status == 2 and "not a selfsup-clusters checkpoint" in err


def test_resume_of_a_missing_run(capsys, tmp_path):
    status, err = run_cli(capsys, "--resume", str(tmp_path / "nothing"))
    assert status == 2 and "no checkpoint" in err


def test_corrupt_idx_file(capsys, tmp_path):
    import gzip

    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        with gzip.open(tmp_path / f"{stem}.gz", "wb") as f:
            f.write(b"\x00\x00\x08\x01\x00\x00\x00\x10abc")  # header promises 16 bytes, holds 3
    status, err = run_cli(capsys, *TINY, "--data-root", str(tmp_path), "--out", str(tmp_path / "r"))
    assert status == 2 and "damaged" in err
