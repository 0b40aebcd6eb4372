"""Atomic checkpoints: write to a temporary file in the same folder, fsync, then rename over the old one."""

from __future__ import annotations

from pathlib import Path

import torch

from selfsup_clusters.errors import UserError, first_line
from selfsup_clusters.files import atomic_write

FORMAT = "selfsup-clusters/1"


def save_checkpoint(state: dict, path: str | Path) -> None:
    atomic_write(path, lambda f: torch.save({"format": FORMAT, **state}, f))


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
