"""Faults planted for real - a NaN loss, a file-size limit, a checkpoint of another run, truncated and undecodable
data files, degenerate clusters - each ending in one line (exit status 2, or DIVERGED) and losing nothing."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup_clusters.cli import main
from selfsup_clusters.clusters import ClusterError, build_cluster_source, refuse_uninformative
from selfsup_clusters.config import CONFIG_DIR, DataConfig
from selfsup_clusters.core.errors import DIVERGED, UserError
from selfsup_clusters.data import load_dataset
from selfsup_clusters.data.base import AuxiliaryInfo
from selfsup_clusters.recipes import load_config
from selfsup_clusters.training import trainer
from selfsup_clusters.training.checkpoint import load_checkpoint
from tests.conftest import TINY, interrupted_run, metrics, needs_fashion_mnist, needs_wordnet
from tests.test_datasets import fake_table, fake_tree, png


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    return err


# --- 1. divergence ---------------------------------------------------------------------------------------------


@needs_fashion_mnist
def test_an_absurd_learning_rate_stops_the_run_as_diverged(tmp_path, capsys):
    out = tmp_path / "run"
    status = main(["train", *TINY, "optim.lr=1e30", "--out", str(out)])
    err = one_line_error(capsys)
    assert status == DIVERGED and "diverged in epoch 1/2" in err and "optim.lr" in err and "precision=fp32" in err
    record = json.loads((out / "diverged.json").read_text())
    assert set(record) >= {"method", "epoch", "step", "loss", "seed"} and record["method"] == "simclr"
    assert not np.isfinite(record["loss"])
    assert not (out / "final.json").exists() and not (out / "checkpoints" / "last.pt").exists()


@needs_fashion_mnist
@pytest.mark.parametrize("every_steps", [0, 1])  # the epoch's loss sum alone, or the logged steps
def test_a_nan_in_the_second_epoch_keeps_the_first_epochs_checkpoint(tmp_path, monkeypatch, every_steps):
    real_step = trainer.train_step

    def nan_from_epoch_two(run, views, index, labels):
        out, samples = real_step(run, views, index, labels)
        if run.scheduler.last_epoch > run.steps_per_epoch:  # a real NaN through the weights from here on
            with torch.no_grad():
                next(run.method.parameters()).fill_(float("nan"))
        return out, samples

    monkeypatch.setattr(trainer, "train_step", nan_from_epoch_two)
    out = tmp_path / "run"
    with pytest.raises(UserError, match=r"diverged in epoch 2/2.*the last good checkpoint .*last.pt is kept"):
        trainer.train(load_config(overrides=[*TINY, f"log.every_steps={every_steps}", f"out={out}"]))
    checkpoint = load_checkpoint(out / "checkpoints" / "last.pt")
    assert checkpoint["epoch"] == 0 and all(torch.isfinite(v).all() for v in checkpoint["model"].values()
                                            if v.is_floating_point())
    assert [m["epoch"] for m in metrics(out)] == [0]  # no NaN epoch logged
    assert json.loads((out / "diverged.json").read_text())["epoch"] == 2


# --- 2. a full disk ----------------------------------------------------------------------------------------------


def run_limited(code: str, limit: int, cwd) -> subprocess.CompletedProcess:
    """`code` in a child process whose files may grow to `limit` bytes (RLIMIT_FSIZE; Python ignores SIGXFSZ, so a
    write past it fails with EFBIG, as a full disk fails with ENOSPC)."""
    prelude = f"import resource\nresource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))\n"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


@needs_fashion_mnist
def test_a_checkpoint_write_past_the_disk_limit_is_one_line_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    out = tmp_path / "run"
    interrupted_run([*TINY, "log.tensorboard=false", f"out={out}"], monkeypatch)
    last = out / "checkpoints" / "last.pt"
    size = last.stat().st_size
    (out / "checkpoints" / ".last.pt.k1ll3d.tmp").write_bytes(b"\0" * 1000)  # what a SIGKILL mid-write leaves
    child = run_limited(f"import sys\nfrom selfsup_clusters.cli import main\nsys.exit(main(['train', '--resume', "
                        f"{str(out)!r}]))", size // 2, tmp_path)
    assert child.returncode == 2, child.stderr[-3000:]
    err = child.stderr.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in child.stderr, child.stderr[-3000:]
    assert f"in {out / 'checkpoints'}" in err[0] and "File too large" in err[0]
    assert load_checkpoint(last)["epoch"] == 0  # the previous checkpoint, whole
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["last.pt"]  # stale and partial files gone


def test_tensorboard_and_cache_writes_past_the_limit_name_their_folder(tmp_path):
    child = run_limited(f"""
        from pathlib import Path
        from selfsup_clusters.core.errors import UserError
        from selfsup_clusters.training.logger import RunLogger
        try:
            logger = RunLogger(Path({str(tmp_path / 'run')!r}))
            for step in range(100000):
                logger.scalars({{"loss": 1.0, "lr": 0.1}}, step)
            logger.close()
        except UserError as e:
            print("USER", e)
        """, 20000, tmp_path)
    assert child.returncode == 0 and child.stdout.startswith("USER cannot write the run's logs in "), child.stderr
    assert "File too large" in child.stdout
    paths = [png(tmp_path / "img" / f"{i}.png", (64, 64)) for i in range(4)]
    child = run_limited(f"""
        from pathlib import Path
        from selfsup_clusters.data.cache import load_or_build
        from selfsup_clusters.core.errors import UserError
        try:
            load_or_build({paths!r}, 64, Path({str(tmp_path / 'cache')!r}), 0)
        except UserError as e:
            print("USER", e)
        """, 20000, tmp_path)
    assert "\nUSER cannot write the decoded cache in " in child.stdout, child.stderr
    assert not list((tmp_path / "cache").glob("*/.images.*.tmp"))


# --- 3. run identity ---------------------------------------------------------------------------------------------


@needs_fashion_mnist
def test_resume_refuses_a_checkpoint_of_another_run_and_keeps_an_unreadable_config(tmp_path, monkeypatch, capsys):
    mine, other = tmp_path / "mine", tmp_path / "other"
    interrupted_run([*TINY, "log.tensorboard=false", f"out={mine}"], monkeypatch)
    interrupted_run([*TINY, "log.tensorboard=false", "seed=1", f"out={other}"], monkeypatch)
    run_id = load_checkpoint(mine / "checkpoints" / "last.pt")["run_id"]
    assert (mine / "config.yaml").read_text().startswith(f"# run_id: {run_id} ")
    own = mine / "checkpoints" / "own.pt"
    shutil.copy(mine / "checkpoints" / "last.pt", own)
    shutil.copy(other / "checkpoints" / "last.pt", mine / "checkpoints" / "last.pt")
    capsys.readouterr()
    assert main(["train", "--resume", str(mine)]) == 2
    err = one_line_error(capsys)
    other_id = load_checkpoint(other / "checkpoints" / "last.pt")["run_id"]
    assert "from another run" in err and run_id in err and other_id in err and "seed 1" in err
    os.replace(own, mine / "checkpoints" / "last.pt")
    (mine / "config.yaml").write_text("method: [simclr\n")  # a user's edit that is not YAML
    assert main(["train", "--resume", str(mine)]) == 0
    kept = list(mine.glob("config.yaml.*.bak"))
    assert len(kept) == 1 and kept[0].read_text() == "method: [simclr\n" and kept[0].name in capsys.readouterr().out
    final = json.loads((mine / "final.json").read_text())
    assert final["run_id"] == run_id == load_checkpoint(mine / "checkpoints" / "last.pt")["run_id"]


# --- 4. damaged data files ---------------------------------------------------------------------------------------


def idx_gz(path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_a_truncated_fashion_mnist_file_is_one_line_naming_it(tmp_path):
    for split, n in (("train", 20), ("t10k", 10)):
        idx_gz(tmp_path / f"{split}-images-idx3-ubyte.gz", np.zeros((n, 28, 28)))
        idx_gz(tmp_path / f"{split}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    assert len(load_dataset(DataConfig(root=str(tmp_path))).train) == 20
    images = tmp_path / "train-images-idx3-ubyte.gz"
    images.write_bytes(images.read_bytes()[:-20])  # an interrupted download
    with pytest.raises(UserError, match=f"cannot read {images} .*truncated or damaged .*--download"):
        load_dataset(DataConfig(root=str(tmp_path)))


def test_a_truncated_or_malformed_wordnet_is_one_line_naming_it(tmp_path):
    classes = ["t-shirt/top", "trouser"]
    noun = tmp_path / "data.noun"
    noun.write_bytes(b"  1 This software and database ...\n" * 10)  # the licence header, then nothing: cut short
    with pytest.raises(ClusterError, match=f"{noun} ends at byte 350, before synset 03595614: .*truncated"):
        build_cluster_source("wordnet:2", AuxiliaryInfo(torch.arange(2), classes), wordnet_dir=str(tmp_path))
    malformed = tmp_path / "malformed"  # another folder: WordNet files are read once per path
    malformed.mkdir()
    (malformed / "data.noun").write_bytes(b"00001740 03 n 01 entity 0 000 | root\n"
                                          b"00001741 03 n 01 thing 0 xx @ 00001740 n 0000 | x\n")
    with pytest.raises(ClusterError, match="the line of synset 00001741 is malformed"):
        build_cluster_source("wordnet:1", AuxiliaryInfo(torch.arange(2), ["a", "b"], wnids=["n00001740", "n00001741"]),
                             wordnet_dir=str(malformed))


def test_an_undecodable_image_stops_the_cache_or_is_skipped_and_counted(tmp_path, monkeypatch, capsys):
    fake_tree(tmp_path / "tree" / "train", ["a", "b"], 6)
    fake_tree(tmp_path / "tree" / "val", ["a", "b"], 2)
    bomb = png(tmp_path / "tree" / "train" / "a" / "zz_bomb.png", (64, 64))
    (tmp_path / "tree" / "train" / "b" / "zz_cut.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 30)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64 x 64 is past twice this: PIL refuses it as a bomb
    settings = dict(name=f"imagefolder:{tmp_path / 'tree'}", num_workers=2, cache_dir=str(tmp_path / "cache"),
                    image_size=32)
    with pytest.raises(UserError, match=f"cannot read image .*{tmp_path}.*skip_unreadable=true") as error:
        load_dataset(DataConfig(**settings))
    assert "\n" not in str(error.value)
    data = load_dataset(DataConfig(**settings, skip_unreadable=True))
    assert sorted(os.path.basename(p) for p in data.skipped_files) == ["zz_bomb.png", "zz_cut.png"]
    assert len(data.train) == 12 and bomb not in data.train.paths
    assert "skipped 2 unreadable image(s)" in capsys.readouterr().out
    overrides = [*TINY, "data.subset=null", "data.test_subset=null", "batch_size=4", "epochs=1", "eval.linear=false",
                 "eval.cluster_metrics=false", *(f"data.{k}={v}" for k, v in settings.items()),
                 "data.skip_unreadable=true", f"out={tmp_path / 'run'}"]
    assert trainer.train(load_config(overrides=overrides))["unreadable_skipped"] == 2


# --- 5. degenerate cluster sources -------------------------------------------------------------------------------


@needs_wordnet
@needs_fashion_mnist
def test_a_wordnet_level_with_one_cluster_is_refused_before_training(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--method", "cl-infonce", "--clusters", "wordnet:5", "--out", str(out)]) == 2
    assert "'wordnet:5' puts every labelled sample (256) in one cluster" in one_line_error(capsys)
    assert not (out / "checkpoints").exists()


def test_attribute_columns_without_entropy_and_kmeans_1_are_refused_naming_them(tmp_path):
    fake_table(tmp_path)
    data = load_dataset(DataConfig(name=f"csv:{tmp_path / 'table.csv'}", cache=False))
    for spec in ("attributes:3", "kmeans:5+instance"):
        refuse_uninformative(build_cluster_source(spec, data.auxiliary), data.auxiliary)  # informative: passes
    constant = r"'attributes:5' .* one value for every sample \(constant=x\).*attributes:1\.\.4"
    with pytest.raises(ClusterError, match=constant):
        refuse_uninformative(build_cluster_source("attributes:5", data.auxiliary), data.auxiliary)
    with pytest.raises(ClusterError, match="K=1 puts every sample in one cluster"):
        refuse_uninformative(build_cluster_source("kmeans:1,5", data.auxiliary), data.auxiliary)
    same = AuxiliaryInfo(torch.zeros(8, dtype=torch.int64), ["only"])
    with pytest.raises(ClusterError, match="'labels' puts every labelled sample"):
        refuse_uninformative(build_cluster_source("labels", same), same)


# --- 6. the real cause of a mismatch -----------------------------------------------------------------------------


@needs_fashion_mnist
def test_eval_of_a_one_channel_checkpoint_on_rgb_images_says_channels(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    interrupted_run([*TINY, "log.tensorboard=false", f"out={out}"], monkeypatch)
    fake_tree(tmp_path / "rgb", ["a", "b"], 5)
    capsys.readouterr()
    status = main(["eval", "--checkpoint", str(out / "checkpoints" / "last.pt"), "--knn",
                   f"data.name=imagefolder:{tmp_path / 'rgb'}", "data.subset=null", "data.test_subset=null",
                   f"data.cache_dir={tmp_path / 'cache'}", "data.num_workers=0"])
    err = one_line_error(capsys)
    assert status == 2 and "1-channel images and this data has 3 channels" in err and "damaged" not in err


# --- 7. every option checked on every path -----------------------------------------------------------------------


def test_a_method_typo_is_refused_with_print_config_and_a_budget_typo_with_config(tmp_path, capsys):
    assert main(["train", "--method", "simclrr", "--print-config"]) == 2
    assert "unknown method 'simclrr'" in one_line_error(capsys)
    assert main(["train", "--clusters", "wordnet", "--print-config"]) == 2
    assert "wordnet" in one_line_error(capsys)
    assert main(["claims", "--budget", "cpuu", "--config", str(CONFIG_DIR / "claims_smoke.yaml"),
                 "--out", str(tmp_path / "claims")]) == 2
    assert "unknown budget 'cpuu'" in one_line_error(capsys)
    assert not (tmp_path / "claims").exists()
