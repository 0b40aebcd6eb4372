"""Atomic checkpoints: write to a temporary file in the same folder, fsync, then rename over the old one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from selfsup_clusters.errors import UserError, first_line

FORMAT = "selfsup-clusters/1"


def save_checkpoint(state: dict, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # a crash leaves either the old or the new file, never half of one
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path) -> dict:
    """Load with weights_only=True (no pickled code runs); a foreign or damaged file is a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}; pass a run folder holding checkpoints/last.pt")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a truncated or non-torch file
        raise UserError(f"cannot read checkpoint {path} ({type(e).__name__}: {first_line(e)}); "
                        "it is damaged or not a checkpoint - start a new run or restore the file") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"{path} is not a selfsup-clusters checkpoint (format {FORMAT!r} expected)")
    return state
