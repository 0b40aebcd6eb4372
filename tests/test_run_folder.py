"""A run holds its folder: a second run into it is refused while the first finishes intact, a folder whose
holder was killed is free again and resumes, a finished run is refused before any data loads, and the commands
that train many runs hold their --out too."""

from __future__ import annotations

import subprocess
import sys

import pytest

from selfsup_clusters.cli import main
from selfsup_clusters.core.errors import UserError
from selfsup_clusters.core.files import hold_folder
from selfsup_clusters.recipes import load_config
from selfsup_clusters.training import run as run_module
from selfsup_clusters.training import trainer
from tests.conftest import TINY, interrupted_run, metrics, needs_fashion_mnist

QUIET = ["eval.linear=false", "eval.cluster_metrics=false", "eval.projector=0", "log.tensorboard=false"]


def test_a_held_folder_refuses_a_second_holder_and_names_the_first(tmp_path):
    with hold_folder(tmp_path / "run"):
        with pytest.raises(UserError, match=r"run is in use by process \d+ .*pick another --out"):
            with hold_folder(tmp_path / "run"):
                pass
    with hold_folder(tmp_path / "run"):  # released: free again
        pass


@needs_fashion_mnist
def test_a_second_run_into_a_running_runs_folder_is_refused_and_the_first_finishes_intact(tmp_path, monkeypatch,
                                                                                          capsys):
    out = tmp_path / "run"
    args = ["train", "--epochs", "2", "--out", str(out), *TINY, *QUIET]
    second = []
    real_epoch = trainer.train_epoch

    def epoch_with_a_second_launch(run, epoch, logger, *rest):
        if not second:  # a double launch, while the first run trains its first epoch (once: not from itself)
            second.append("launched")
            second.append(main(args))
        return real_epoch(run, epoch, logger, *rest)

    monkeypatch.setattr(trainer, "train_epoch", epoch_with_a_second_launch)
    assert main(args) == 0
    assert second == ["launched", 2]
    assert f"{out} is in use by process" in capsys.readouterr().err
    assert [row["epoch"] for row in metrics(out)] == [0, 1]  # one run's epochs, not two runs' mixed
    assert (out / "final.json").is_file()


@needs_fashion_mnist
def test_a_run_whose_holder_was_killed_resumes(tmp_path, monkeypatch):
    out = tmp_path / "run"
    interrupted_run([*TINY, *QUIET, "epochs=2", f"out={out}"], monkeypatch)  # a checkpoint after epoch 1
    kill = ("import os, signal, sys; from selfsup_clusters.core.files import hold_folder; "
            "held = hold_folder(sys.argv[1]); held.__enter__(); os.kill(os.getpid(), signal.SIGKILL)")
    killed = subprocess.run([sys.executable, "-c", kill, str(out)], capture_output=True)
    assert killed.returncode == -9
    assert "process" in (out / ".holder").read_text()  # the dead holder's name is still written there
    monkeypatch.undo()
    final = trainer.resume(out)
    assert final["epochs"] == 2 and [row["epoch"] for row in metrics(out)] == [0, 1]


@needs_fashion_mnist
def test_a_finished_run_is_refused_before_any_data_loads(tmp_path, monkeypatch):
    out = tmp_path / "run"
    trainer.train(load_config(overrides=[*TINY, *QUIET, "epochs=1", f"out={out}"]))
    monkeypatch.setattr(run_module, "build_parts", lambda *a, **k: pytest.fail("data loaded for a finished run"))
    with pytest.raises(UserError, match="already finished its 1 epochs"):
        trainer.resume(out)


@pytest.mark.parametrize("command", [
    ["compare", "--methods", "simclr"],
    ["tune", "--method", "simclr", "--grid", "optim.lr=0.1,0.2"],
    ["claims", "--budget", "smoke"],
    ["analyze"],
])
def test_the_suites_hold_their_out_folder(tmp_path, capsys, command):
    out = tmp_path / "suite"
    with hold_folder(out):
        assert main([*command, "--out", str(out)]) == 2
    assert f"{out} is in use by process" in capsys.readouterr().err
