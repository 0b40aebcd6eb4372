"""The command line: key=value overrides anywhere among a sub-command's options, --print-config, an --out that is a
file, and a configuration error under torchrun (each process exits with status 2 instead of aborting)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from selfsup_clusters.cli import main, parse_args
from tests.conftest import TINY


@pytest.mark.parametrize("argv, option, value", [
    (["train", "a.b=1", "--out", "D", "c.d=2", "--epochs", "3"], "epochs", 3),
    (["eval", "a.b=1", "--checkpoint", "C", "c.d=2", "--knn"], "checkpoint", "C"),
    (["compare", "a.b=1", "--out", "O", "c.d=2", "--methods", "simclr"], "methods", "simclr"),
    (["analyze", "a.b=1", "--out", "O", "c.d=2", "--seeds", "2"], "seeds", "2"),
    (["tune", "a.b=1", "--method", "moco", "c.d=2", "--out", "O", "--grid", "optim.lr=0.1,0.2"], "method", "moco"),
    (["claims", "a.b=1", "--out", "O", "c.d=2", "--budget", "smoke"], "budget", "smoke"),
    (["clusters", "a.b=1", "--dataset", "cifar10", "c.d=2"], "dataset", "cifar10"),
    (["bench", "a.b=1", "--steps", "2", "c.d=2"], "steps", 2),
    (["embed", "a.b=1", "--checkpoint", "C", "c.d=2", "--out", "F.npz"], "out", "F.npz"),
])
def test_overrides_anywhere_among_the_options_of_every_sub_command(argv, option, value):
    args = parse_args(argv)
    assert args.overrides == ["a.b=1", "c.d=2"] and getattr(args, option) == value


def test_the_issues_command_line_resolves_every_override(capsys, tmp_path):
    assert main(["train", "eval.every=0", "--out", str(tmp_path / "run"), "optim.lr=0.1", "--print-config"]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"^  every: 0$", printed, re.M) and re.search(r"^  lr: 0.1$", printed, re.M)
    assert f"out: {tmp_path / 'run'}" in printed
    assert not (tmp_path / "run").exists()  # printed, not trained


def test_an_unknown_option_is_still_an_error(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["train", "eval.every=0", "--bogus", "optim.lr=0.1"])
    assert stop.value.code == 2 and "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_print_config_of_a_saved_run(capsys, tmp_path):
    from selfsup_clusters.config import to_dict
    from selfsup_clusters.recipes import load_config
    from selfsup_clusters.training.checkpoint import save_checkpoint

    save_checkpoint({"config": to_dict(load_config(overrides=["method=moco", "epochs=7"]))},
                    tmp_path / "run" / "checkpoints" / "last.pt")
    assert main(["train", "--resume", str(tmp_path / "run"), "--print-config"]) == 0
    printed = capsys.readouterr().out
    assert "method: moco" in printed and "epochs: 7" in printed


@pytest.mark.parametrize("argv, message", [
    (["train", *TINY, "--out", "{file}"], "--out {file} is a file, not a folder"),
    (["train", *TINY, "--out", "{file}/run"], "--out {file}/run cannot be created: {file} is a file"),
    (["compare", "--out", "{file}"], "--out {file} is a file, not a folder"),
])
def test_out_that_is_a_file_is_one_error_line(capsys, tmp_path, argv, message):
    file = tmp_path / "a_file"
    file.write_text("")
    assert main([a.format(file=file) for a in argv]) == 2
    err = capsys.readouterr().err
    assert message.format(file=file) in err and err.count("\n") == 1 and "Traceback" not in err, err


# torchrun's worker: the CLI, then a check that the process group is gone. Left standing, NCCL's watchdog thread
# aborts the process at exit ("terminate called without an active exception", SIGABRT) instead of letting it exit
# with the CLI's status; gloo on the CPU does not abort, so the check looks at the group itself.
WORKER = """
import sys
import torch.distributed as dist
from selfsup_clusters.cli import main
status = main(sys.argv[1:])
if dist.is_initialized():
    print("the process group was left standing", flush=True)
    sys.exit(99)
sys.exit(status)
"""


def test_a_configuration_error_under_torchrun_exits_with_status_2_from_every_process(tmp_path):
    import torch

    if not (torch.distributed.is_available() and torch.distributed.is_gloo_available()):
        pytest.skip("this PyTorch build has no gloo backend")
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    # The error comes from the run's set-up, after the processes joined their process group.
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(worker),
               "train", *TINY, "--method", "byol", "--out", str(tmp_path / "run")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    output = done.stdout + done.stderr
    assert output.count("selfsup-clusters: error: unknown method 'byol'") == 2, output[-3000:]
    assert "left standing" not in output and "terminate called" not in output, output[-3000:]
    # torchrun's report: the first process to fail exited with status 2; the other one did too, or torchrun had
    # already stopped it (SIGTERM, -15) on seeing the first fail. Never SIGABRT (-6).
    root_cause = re.search(r"Root Cause.*?exitcode\s*:\s*(-?\d+)", output, re.S)
    assert root_cause and root_cause.group(1) == "2", output[-3000:]
    assert set(re.findall(r"exitcode\s*:\s*(-?\d+)", output)) <= {"2", "-15"}, output[-3000:]
