"""Decoded cache for file-backed datasets (image folders, CSV tables): each image decoded once to uint8, stored
memory-mapped, then trained from like a dataset held in memory (`InMemoryBatches`: whole batches augmented on the
training device), instead of PIL decoding and augmenting every image of every epoch in worker processes.

The rule (`loader.read_image` with a size): each image is converted to RGB, its short side resized to SIZE and its
centre SIZE x SIZE square kept (`PIL.ImageOps.fit`, bilinear with PIL's antialiasing). A JPEG is first decoded at
the smallest DCT scale (1/2, 1/4, 1/8) that keeps both sides >= SIZE (libjpeg's draft mode: a 500 px photo cached at
64 px decodes about 8x faster). SIZE is `data.cache_size`, by default `data.image_size`.

Layout: one folder per dataset under `data.cache_dir`, named by the images' paths and SIZE, holding `images.u8`
((N, 3, SIZE, SIZE) uint8, the training split then the test split, in dataset order) and `manifest.json`. The
manifest holds the key - a SHA-256 over the format version, SIZE and every image's path, byte size and modification
time - the shape and the CRC-32 of `images.u8`, and is written last (atomically): a build that stopped half-way
leaves no manifest, a changed image changes the key, a truncated or damaged file fails the size or CRC check, and in
every such case the cache is rebuilt before anything trains on it. Processes building the same cache at once
(torchrun's ranks) take turns on a lock file: the later one finds the finished cache and reads it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch.utils.data import DataLoader, Dataset

from selfsup_clusters.core.errors import UserError
from selfsup_clusters.core.files import atomic_write, remove_stale_temporaries, writing_into
from selfsup_clusters.core.progress import progress
from selfsup_clusters.data.base import ImageDataset
from selfsup_clusters.data.loader import ImageReadError, read_batches, read_image

if TYPE_CHECKING:  # type hints only: the schema sits above data (it imports evaluation's protocols)
    from selfsup_clusters.config import DataConfig

FORMAT = 1  # bump when the rule or the layout changes: every cache is then rebuilt
CHUNK = 1 << 24  # bytes read at a time for the CRC
DECODE_BATCH = 64  # images a decoding worker hands over at a time


@dataclass(frozen=True)
class CacheInfo:
    folder: Path
    images: int
    size: int
    bytes: int
    built_seconds: float | None  # None: it was up to date
    unreadable: list = field(default_factory=list)  # [index, message] of each image that could not be decoded


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "selfsup-clusters" / "decoded"


def cache_dataset(data: ImageDataset, cfg: DataConfig) -> tuple[ImageDataset, CacheInfo]:
    """`data` (file-backed) with both splits' images read from the decoded cache, building it when missing or
    stale; the splits keep their paths, which marks them as decoded files (see `loader.InMemoryBatches`)."""
    paths = [*data.train.paths, *(data.test.paths or [])]
    size = cfg.cache_size or cfg.image_size
    root = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else default_cache_dir()
    images, info = load_or_build(paths, size, root, cfg.num_workers, cfg.skip_unreadable)
    n = len(data.train)
    train, test = replace(data.train, images=images[:n]), replace(data.test, images=images[n:])
    if not info.unreadable:
        return replace(data, train=train, test=test), info
    if not cfg.skip_unreadable:  # a cache built with skipping, read by a run that does not skip
        raise ImageReadError(info.unreadable[0][1])
    bad = torch.zeros(len(paths), dtype=torch.bool)
    bad[[index for index, _ in info.unreadable]] = True
    skipped = [paths[index] for index, _ in info.unreadable]
    print(f"skipped {len(skipped)} unreadable image(s) (data.skip_unreadable=true), e.g. {info.unreadable[0][1]}",
          flush=True)
    return replace(data, train=train.select(torch.nonzero(~bad[:n]).squeeze(1)),
                   test=test.select(torch.nonzero(~bad[n:]).squeeze(1)), skipped_files=skipped), info


def load_or_build(paths: list[str], size: int, root: Path, num_workers: int, skip_unreadable: bool = False
                  ) -> tuple[torch.Tensor, CacheInfo]:
    """(N, 3, size, size) uint8, memory-mapped from the cache of `paths` under `root`; an image that cannot be
    decoded stops the build (ImageReadError), or with `skip_unreadable` is listed in CacheInfo.unreadable."""
    paths = [os.path.abspath(path) for path in paths]
    folder = root / f"{len(paths)}x{size}px-{_digest(FORMAT, size, *paths)[:16]}"
    key = _key(paths, size)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = open(folder / ".lock", "a")  # held until the cache is known good
    except OSError as e:
        raise UserError(f"cannot write the decoded cache in {root} ({e.strerror}); set data.cache_dir=DIR to a "
                        "writable folder, or data.cache=false to read the image files every epoch") from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or by the OS if this process dies
        built_seconds = None
        remove_stale_temporaries(folder)  # what a build killed mid-write left (we hold the lock: nobody is writing)
        if not _valid(folder, key, len(paths), size):
            start = time.perf_counter()
            with writing_into(folder, "the decoded cache"):
                _build(folder, key, paths, size, num_workers, skip_unreadable)
            built_seconds = time.perf_counter() - start
    nbytes = len(paths) * 3 * size * size
    images = torch.from_file(str(folder / "images.u8"), shared=False, size=nbytes, dtype=torch.uint8)
    unreadable = json.loads((folder / "manifest.json").read_text()).get("unreadable", [])
    return images.view(len(paths), 3, size, size), CacheInfo(folder, len(paths), size, nbytes, built_seconds,
                                                            unreadable)


def _digest(*parts) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(str(part).encode("utf-8", "surrogateescape"))
        h.update(b"\0")
    return h.hexdigest()


def _key(paths: list[str], size: int) -> str:
    """The images as they are now: a changed, replaced or touched file changes the key."""
    stats = []
    for path in paths:
        try:
            stat = os.stat(path)
        except OSError as e:
            raise UserError(f"cannot read image {path}: {e.strerror}") from None
        stats.append(f"{path}|{stat.st_size}|{stat.st_mtime_ns}")
    return _digest(FORMAT, size, *stats)


def _valid(folder: Path, key: str, n: int, size: int) -> bool:
    """Whether the cache in `folder` is complete, current and undamaged (a full CRC-32 pass over the file)."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
        data, nbytes = folder / "images.u8", n * 3 * size * size
        found = (manifest["format"], manifest["key"], manifest["shape"], manifest["bytes"], data.stat().st_size)
        return found == (FORMAT, key, [n, 3, size, size], nbytes, nbytes) and _crc(data) == manifest["crc32"]
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _crc(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            crc = zlib.crc32(chunk, crc)
    return crc


class _Decode(Dataset):
    def __init__(self, paths: list[str], size: int):
        self.paths, self.size = paths, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str]:
        """The image and "", or (in a worker, where an exception would lose its type) a blank and why not."""
        try:
            return read_image(self.paths[i], self.size), ""
        except ImageReadError as e:
            return torch.zeros(3, self.size, self.size, dtype=torch.uint8), str(e)


def _build(folder: Path, key: str, paths: list[str], size: int, num_workers: int, skip_unreadable: bool) -> None:
    """Decode every image in DataLoader workers into a temporary file, then move it into place and write the
    manifest last. An unreadable image stops the build, or with `skip_unreadable` gets a blank slot that the
    manifest lists (the dataset then leaves it out)."""
    (folder / "manifest.json").unlink(missing_ok=True)  # from here on the old cache is invalid, whatever happens
    nbytes = len(paths) * 3 * size * size
    free = shutil.disk_usage(folder).free
    if free < nbytes:
        raise UserError(f"the decoded cache of {len(paths)} images at {size} px needs {nbytes / 1e9:.2f} GB in "
                        f"{folder.parent}, which has {free / 1e9:.2f} GB free; set data.cache_dir=DIR elsewhere, a "
                        "smaller data.cache_size, or data.cache=false")
    print(f"decoding {len(paths)} images once to {size}x{size} into {folder} ({nbytes / 1e6:.1f} MB; "
          "data.cache=false reads the files every epoch instead)", flush=True)
    workers = min(num_workers, len(os.sched_getaffinity(0)))  # decoding is CPU-bound: no more than the cores
    loader = DataLoader(_Decode(paths, size), batch_size=DECODE_BATCH, num_workers=workers)
    fd, tmp = tempfile.mkstemp(prefix=".images.", suffix=".tmp", dir=folder)
    crc, unreadable = 0, []
    try:
        with os.fdopen(fd, "wb") as f:
            for number, (batch, problems) in enumerate(progress(read_batches(loader), desc="decoding images",
                                                                total=len(loader), unit="batch")):
                unreadable += [[number * DECODE_BATCH + i, problem] for i, problem in enumerate(problems) if problem]
                if unreadable and not skip_unreadable:
                    raise ImageReadError(unreadable[0][1])
                chunk = batch.numpy().tobytes()
                crc = zlib.crc32(chunk, crc)
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, folder / "images.u8")
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    manifest = {"format": FORMAT, "key": key, "shape": [len(paths), 3, size, size], "bytes": nbytes, "crc32": crc,
                "unreadable": unreadable,
                "rule": "RGB, short side resized to SIZE, centre crop (PIL ImageOps.fit, bilinear; JPEG draft)"}
    atomic_write(folder / "manifest.json", lambda f: f.write(json.dumps(manifest, indent=1).encode()))
