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

from selfsup_clusters.core.errors import UserError, first_line


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """Call `write` on a temporary file in `path`'s folder, fsync, then rename it over `path`: a crash leaves
    either the old file or the new one, never half of one. A write that fails (a full disk, a file-size limit) is a
    WriteFailed naming the folder, with the partial file removed and the old `path` untouched."""
    path = Path(path)
    with writing_into(path.parent, path.name):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX, dir=path.parent)
        target = _RecordingFile(os.fdopen(fd, "wb"))
        try:
            with target.file as f:
                try:
                    write(target)  # type: ignore[arg-type]
                except Exception:
                    # torch.save reports a failed write as RuntimeError("unexpected pos ..."): the OSError is the cause
                    if target.error is not None:
                        raise target.error from None
                    raise
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would hide the file from the user's group
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


TEMPORARY_SUFFIX = ".tmp"  # atomic_write's temporary files: .NAME.RANDOM.tmp beside NAME


class WriteFailed(UserError):
    """A file that could not be written (no space left, a file-size limit, no permission): one line naming the
    folder and the operating system's error."""


@contextmanager
def writing_into(folder: str | Path, what: str = "") -> Iterator[None]:
    """Within the block, an OSError (ENOSPC, EFBIG, EACCES, ...) becomes a WriteFailed naming `folder` and `what`
    was being written, instead of a traceback."""
    try:
        yield
    except OSError as e:
        name = f" {what}" if what else ""
        raise WriteFailed(f"cannot write{name} in {folder}: {e.strerror or first_line(e)}; make room there (or "
                          "write elsewhere) and run again - files written before are kept") from None


class _RecordingFile:
    """A binary file that remembers the OSError its `write` raised, for writers (torch.save) that replace it."""

    def __init__(self, file: BinaryIO) -> None:
        self.file, self.error = file, None

    def write(self, data) -> int:
        try:
            return self.file.write(data)
        except OSError as e:
            self.error = e
            raise

    def __getattr__(self, name: str):
        return getattr(self.file, name)


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Remove the temporary files that a process killed while writing (SIGKILL, power loss) left in `folder` or
    below it by atomic_write (.NAME.RANDOM.tmp); only for a folder this process holds, where nobody else is
    writing. The files removed."""
    folder = Path(folder)
    stale = [p for p in folder.rglob(f".*{TEMPORARY_SUFFIX}") if p.is_file()] if folder.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


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
    with writing_into(folder, HOLDER):  # a full disk or a read-only folder: one line, before any work
        folder.mkdir(parents=True, exist_ok=True)
        lock_file = open(folder / HOLDER, "a+")  # closed by the with below
    with lock_file as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise UserError(f"{folder} is in use by {holder}; wait for it to finish, or pick another "
                            f"{option}") from None
        command = " ".join(sys.argv)
        with writing_into(folder, HOLDER):
            f.truncate(0)
            f.write(f"process {os.getpid()} ({command if len(command) <= 80 else command[:77] + '...'})\n")
            f.flush()
        try:
            yield folder
        finally:
            f.truncate(0)  # released: nobody's name stays on it
            if created and [p.name for p in folder.iterdir()] == [HOLDER]:
                (folder / HOLDER).unlink()
                folder.rmdir()
