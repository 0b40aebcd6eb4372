"""Runs that explain themselves: the environment in final.json and TensorBoard's text tab, the project's git
commit, and a training log written to a file with one line per epoch instead of progress-bar fragments."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys

import pytest
import torch

from selfsup_clusters.recipes import load_config
from selfsup_clusters.training.trainer import train
from tests.conftest import TINY, needs_fashion_mnist

QUIET = ["eval.linear=false", "eval.cluster_metrics=false", "eval.projector=0"]


@needs_fashion_mnist
def test_final_json_and_tensorboard_record_the_environment(tmp_path):
    import numpy
    import timm
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from selfsup_clusters.training import provenance

    run = tmp_path / "run"
    final = train(load_config(overrides=[*TINY, *QUIET, "epochs=1", f"out={run}"]))
    saved = json.loads((run / "final.json").read_text())
    environment = saved["environment"]
    assert environment == final["environment"]
    packages = environment["packages"]
    assert (packages["torch"], packages["timm"], packages["numpy"]) == (torch.__version__.split("+")[0],
                                                                      timm.__version__, numpy.__version__)
    assert set(packages) & set(provenance.FAISS_DISTRIBUTIONS)  # which FAISS build (or "faiss": null)
    assert environment["threads"] == torch.get_num_threads() and environment["device"] == "cpu"
    assert environment["device_name"] == provenance.cpu_name() and environment["precision"] == "fp32"
    assert environment["git_commit"] == provenance.git_state()[0]
    assert saved["config"]["model"]["backbone"] == "test_resnet" and saved["config"]["data"]["subset"] == 256

    events = EventAccumulator(str(run))
    events.Reload()
    texts = {tag: events.Tensors(tag)[0].tensor_proto.string_val[0].decode() for tag in events.Tags()["tensors"]
             if tag.startswith("run/")}
    assert f"torch {packages['torch']}" in texts["run/environment/text_summary"]
    assert "backbone: test_resnet" in texts["run/config/text_summary"]


def test_git_commit_only_of_a_checkout_that_holds_this_package(tmp_path, monkeypatch):
    from selfsup_clusters.training import provenance

    if shutil.which("git") is None:
        pytest.skip("git is not installed")

    def checkout(root, package_at):
        package = root / package_at / "selfsup_clusters"
        package.mkdir(parents=True)
        (package / "__init__.py").write_text("")
        git = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t"]
        subprocess.run([*git, "init", "-q"], check=True)
        subprocess.run([*git, "add", "-A"], check=True)
        subprocess.run([*git, "commit", "-q", "-m", "x"], check=True)
        head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout
        return package, head.strip()

    package, head = checkout(tmp_path / "project", ".")
    monkeypatch.setattr(provenance, "PACKAGE", package.resolve())
    assert provenance.git_state() == (head, False)
    (package / "__init__.py").write_text("changed = True\n")
    assert provenance.git_state() == (head, True)

    # installed into a venv that happens to lie inside some other repository: no commit to claim
    package, _ = checkout(tmp_path / "other", ".venv/lib/site-packages")
    monkeypatch.setattr(provenance, "PACKAGE", package.resolve())
    assert provenance.git_state() == (None, None)


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bars_show_on_a_terminal_only(monkeypatch):
    from selfsup_clusters.core.progress import progress

    for stream, shown in ((FakeTerminal(), True), (io.StringIO(), False)):
        monkeypatch.setattr(sys, "stderr", stream)
        assert list(progress(range(3), desc="steps")) == [0, 1, 2]
        assert ("steps" in stream.getvalue()) == shown
    monkeypatch.setattr(sys, "stderr", FakeTerminal())
    list(progress(range(3), desc="steps", enabled=False))  # log.progress=false
    assert sys.stderr.getvalue() == ""


@needs_fashion_mnist
def test_a_training_log_written_to_a_file_has_one_line_per_epoch(tmp_path):
    log = tmp_path / "train.log"
    with log.open("w") as f:  # stdout and stderr into one file, as `... > train.log 2>&1` or nohup does
        done = subprocess.run([sys.executable, "-m", "selfsup_clusters", "train", *TINY, *QUIET, "epochs=3",
                               "log.progress=true", "--out", str(tmp_path / "run")],
                              stdout=f, stderr=subprocess.STDOUT, cwd=tmp_path, timeout=600)
    text = log.read_text()
    assert done.returncode == 0, text[-3000:]
    lines = text.splitlines()
    print(f"a 3-epoch run's log: {len(lines)} lines, {len(text)} characters")
    assert "\r" not in text
    assert [line.split()[1] for line in lines if line.startswith("epoch ")] == ["1/3", "2/3", "3/3"]
    assert len(lines) == 4 and lines[-1].startswith("done: ")
