"""Files and folders a command writes: written atomically, into folders checked before any work starts."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from selfsup_clusters.errors import UserError


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """Call `write` on a temporary file in `path`'s folder, fsync, then rename it over `path`: a crash leaves
    either the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would hide the file from the user's group
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def writable_folder(path: str | Path, option: str = "--out") -> Path:
    """`path` as a folder to write into (created later, by whoever writes): a file standing at it or at one of
    its parents is a UserError naming the option, instead of mkdir's traceback."""
    path = Path(path)
    for place in (path, *path.parents):
        if place.exists():
            if not place.is_dir():
                problem = "is a file, not a folder" if place == path else f"cannot be created: {place} is a file"
                raise UserError(f"{option} {path} {problem}; pick a folder for {option}")
            break
    return path
