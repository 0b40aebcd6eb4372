"""Atomic checkpoints: write to a temporary file in the same folder, fsync, then rename over the old one."""

from __future__ import annotations

from pathlib import Path

import torch

from selfsup_clusters.core.errors import UserError, first_line
from selfsup_clusters.core.files import atomic_write

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


# Settings that shape a method's weights: a checkpoint loads into a model built with the same ones only.
SHAPING_KEYS = ("method", "model.backbone", "model.stem", "model.proj_hidden_dim", "model.proj_dim", "clusters.spec",
                "data.image_size")


def mismatch(checkpoint: dict, config: dict, channels: int, classes: int) -> str | None:
    """Why `checkpoint`'s weights would not fit a model built from `config` for images of `channels` channels and
    `classes` classes - the real difference (channels, classes, backbone, method, image size, ...) - or None when
    nothing differs (a load that fails then means the file is damaged)."""
    data = checkpoint.get("data") or {}
    if data.get("channels") not in (None, channels):
        return (f"it was trained on {data['channels']}-channel images and this data has {channels} channels; use a "
                f"dataset with {data['channels']}-channel images, like the one it was trained on")
    saved_classes = len(data.get("class_names") or []) or None
    if saved_classes not in (None, classes):  # a classifier's (or a labels clustering's) head
        return (f"its classifier has {saved_classes} classes and this data has {classes}; evaluate it on data with "
                "its own classes")
    saved = checkpoint.get("config") or {}
    for key in SHAPING_KEYS:
        before, now = _get(saved, key), _get(config, key)
        if before != now:
            return f"it was trained with {key}={before} and is being loaded with {key}={now}; drop that override"
    return None


def _get(config: dict, dotted: str):
    for part in dotted.split("."):
        config = config.get(part) if isinstance(config, dict) else None
    return config
