"""Files and folders a command writes: written atomically, into folders checked before any work starts."""

from __future__ import annotations

import fcntl
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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


HOLDER = ".holder"  # the lock file in a held folder: the holder's process id and command line


@contextmanager
def hold_folder(folder: str | Path, option: str = "--out") -> Iterator[Path]:
    """Hold `folder` for this process while the block runs: a second process that asks for it meanwhile gets a
    UserError naming the folder and the holder's process. The hold is an flock, which the OS drops with the
    process, so a folder left by a killed run is free again (and resumable) at once. A folder it had to create
    and nothing else wrote into (a run refused before any work) is removed again."""
    folder = writable_folder(folder, option)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / HOLDER, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise UserError(f"{folder} is in use by {holder}; wait for it to finish, or pick another "
                            f"{option}") from None
        f.truncate(0)
        command = " ".join(sys.argv)
        f.write(f"process {os.getpid()} ({command if len(command) <= 80 else command[:77] + '...'})\n")
        f.flush()
        try:
            yield folder
        finally:
            f.truncate(0)  # released: nobody's name stays on it
            if created and [p.name for p in folder.iterdir()] == [HOLDER]:
                (folder / HOLDER).unlink()
                folder.rmdir()
