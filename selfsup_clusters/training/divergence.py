"""A run that diverges stops: a non-finite loss (or weights) ends it with Diverged before a checkpoint could keep
it, so its last good checkpoint stays, and RUN_DIR/diverged.json says where it stopped (compare and claims show the
run as diverged, not as a number). Checked where the loss reaches the host anyway - at the `log.every_steps` steps
and with the epoch's (or a step checkpoint's) loss sum - so a healthy step waits for nothing new (PyTorch Lightning's
EarlyStopping(check_finite=True) likewise stops on a non-finite value it reads anyway)."""

from __future__ import annotations

import json
import math

import torch

from selfsup_clusters.core import distributed
from selfsup_clusters.core.errors import DIVERGED_FILE, Diverged
from selfsup_clusters.core.files import atomic_write
from selfsup_clusters.training.run import Run


def check_finite(run: Run, epoch: int, step: int, loss: float) -> None:
    """Diverged when the loss (the mean of the steps so far) or a weight is not finite: what a checkpoint is about
    to keep must be finite, so the last good one stays."""
    if not math.isfinite(loss):
        raise diverged(run, epoch, step, loss)
    finite = torch.stack([p.detach().isfinite().all() for p in run.method.parameters()]).all()
    if not bool(finite):
        raise diverged(run, epoch, step, loss, "the weights turned non-finite")


def diverged(run: Run, epoch: int, step: int, loss: float, what: str = "") -> Diverged:
    """The Diverged to raise at `step` (1-based, in 0-based `epoch`), after RUN_DIR/diverged.json (epoch and step
    counted from 1) says where: compare and claims read it to show the run as diverged."""
    cfg = run.cfg
    record = {"method": cfg.method, "epoch": epoch + 1, "step": step, "loss": loss, "seed": cfg.seed,
              "run_id": run.run_id}
    last = run.out_dir / "checkpoints" / "last.pt"
    if distributed.is_main():
        atomic_write(run.out_dir / DIVERGED_FILE, lambda f: f.write((json.dumps(record) + "\n").encode()))
    kept = f"the last good checkpoint {last} is kept" if last.is_file() else "no checkpoint was written before it"
    precision = "precision=fp32" if run.precision != "fp32" else "precision=fp32 (which it had)"
    return Diverged(f"{cfg.method} diverged in epoch {epoch + 1}/{cfg.epochs} (found at step {step}/"
                    f"{run.steps_per_epoch}): loss {loss}{f' ({what})' if what else ''}; {kept} - train again with a "
                    f"lower optim.lr (it had {cfg.optim.lr}) or {precision}")
