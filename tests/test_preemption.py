"""Runs that survive preemption: SIGTERM or SIGINT, sent to a real training process, saves the run at the next
step boundary and exits with "stopped, resumable" (stopping.STOPPED); `train --resume` continues mid-epoch and ends
equal to a run that was never stopped."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
import torch

from selfsup_clusters.cli import main
from selfsup_clusters.methods.registry import METHODS
from selfsup_clusters.training.checkpoint import load_checkpoint
from selfsup_clusters.training.stopping import STOPPED
from tests.conftest import TINY, every_method, needs_fashion_mnist

# 128 steps an epoch (about 1.3 s here): a signal sent 0.4 s after epoch 1 ends lands among epoch 2's steps. k-means
# runs before epochs 1 and 3 (0-based 0 and 2), so the resumed run re-clusters from the restored memory bank.
LONG_EPOCHS = [*TINY, "data.subset=1024", "batch_size=8", "epochs=3", "log.every_steps=0", "log.tensorboard=false",
               "eval.every=0", "eval.cluster_metrics=false", "eval.projector=0", "clusters.warmup=0",
               "clusters.every=2"]
TRAIN = [sys.executable, "-m", "selfsup_clusters", "train"]
# Every registered method (conftest.every_method): cl-infonce by default, the others with -m slow.
EVERY_METHOD = every_method({"moco": ["method=moco", "method_args.queue_size=256"],
                             "pcl": ["method=pcl", "clusters.spec=kmeans:8", "method_args.queue_size=256"],
                             "swav": ["method=swav", "method_args.num_prototypes=16"]},
                            slow_but=("cl-infonce",))
TIMING = ("epoch_time_s", "images_per_s", "data_time_frac", "train_time_s", "eval_time_s", "environment", "out_dir",
          "config", "clusters", "run_id")


def stopped_run(out, signals: list[int], settings: list[str]) -> subprocess.CompletedProcess:
    """Train into `out`, sending `signals` (one after the other) 0.4 s after epoch 1 has ended."""
    process = subprocess.Popen([*TRAIN, *LONG_EPOCHS, *settings, f"out={out}"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    lines = []
    for line in process.stdout:
        lines.append(line)
        if line.startswith("epoch 1/3"):
            time.sleep(0.4)
            for sig in signals:
                process.send_signal(sig)
            break
    stdout, stderr = process.communicate(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, "".join(lines) + stdout, stderr)


def comparable(path):
    """final.json, or metrics.jsonl's records, without what depends on the clock or the folder."""
    text = path.read_text()
    records = [json.loads(text)] if path.suffix == ".json" else [json.loads(line) for line in text.splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in records]


@needs_fashion_mnist
@pytest.mark.parametrize("signals", [[signal.SIGTERM, signal.SIGTERM],
                                     pytest.param([signal.SIGINT], marks=pytest.mark.slow)],
                         ids=["sigterm-twice", "sigint"])
@pytest.mark.parametrize("method, settings", EVERY_METHOD)
def test_a_signal_saves_the_step_and_resume_ends_equal_to_an_unstopped_run(tmp_path, signals, method, settings):
    stopped = stopped_run(tmp_path / "stopped", signals, settings)
    assert stopped.returncode == STOPPED, stopped.stderr
    assert f"continue with: selfsup-clusters train --resume {tmp_path / 'stopped'}" in stopped.stderr
    assert "Traceback" not in stopped.stderr
    checkpoint = load_checkpoint(tmp_path / "stopped" / "checkpoints" / "last.pt")
    assert checkpoint["epoch"] == 1 and 0 < checkpoint["progress"]["step"] < 128  # in epoch 2's steps
    assert (checkpoint["assignments"] is not None) == METHODS[method].needs_cluster_spec
    assert [r["epoch"] for r in comparable(tmp_path / "stopped" / "metrics.jsonl")] == [0]

    assert main(["train", "--resume", str(tmp_path / "stopped")]) == 0
    assert main([*TRAIN[3:], *LONG_EPOCHS, *settings, f"out={tmp_path / 'whole'}"]) == 0

    for name in ("final.json", "metrics.jsonl"):
        assert comparable(tmp_path / "stopped" / name) == comparable(tmp_path / "whole" / name)
    ends = [load_checkpoint(tmp_path / run / "checkpoints" / "last.pt") for run in ("stopped", "whole")]
    assert all(torch.equal(a, b) for a, b in zip(ends[0]["model"].values(), ends[1]["model"].values(), strict=True))
    assert torch.equal(ends[0]["memory"]["features"], ends[1]["memory"]["features"])
