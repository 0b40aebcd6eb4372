"""`imagefolder:PATH`: a class-per-folder tree of image files (ImageNet-100 style), file-backed.

PATH holds `train/` and `val/` (or `test/`) class trees, or is one class tree that gets a seeded 80/20 split.
Folder names that are wnids (`n01558993`) give `--clusters wordnet:LEVEL` directly; other names are mapped by
`data.wnid_map`, a CSV with columns `class,wnid`.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, has_file_allowed_extension

from selfsup_clusters.core import distributed
from selfsup_clusters.core.errors import UserError
from selfsup_clusters.data.base import WNID_PATTERN, ImageDataset, Split

if TYPE_CHECKING:  # type hints only: the schema sits above data (it imports evaluation's protocols)
    from selfsup_clusters.config import DataConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SPLIT_SEED = 0  # the 80/20 split must not move with the training seed: every run is scored on the same test set
TEST_FRACTION = 0.2


def resolve_path(cfg: DataConfig, path: str | None, kind: str) -> Path:
    """PATH of `kind:PATH` (relative to --data-root when that is given and PATH is not found as is), or --data-root."""
    if not path and not cfg.root:
        raise UserError(f"{kind} needs a location: --dataset {kind}:PATH, or --dataset {kind} --data-root PATH")
    if not path:
        return Path(cfg.root)
    if not Path(path).exists() and cfg.root and (Path(cfg.root) / path).exists():
        return Path(cfg.root) / path
    return Path(path)


def seeded_split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions of the train and test samples of a fixed, seeded 80/20 split of n samples."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED))
    n_test = max(1, round(n * TEST_FRACTION)) if n >= 2 else 0
    return order[n_test:], order[:n_test]


def shuffled(split: Split) -> Split:
    """A fixed shuffle of a file-backed split, so that `--subset N` (the first N) mixes the classes of a sorted tree."""
    return split.select(torch.randperm(len(split), generator=torch.Generator().manual_seed(SPLIT_SEED)))


def class_wnids(cfg: DataConfig, class_names: list[str]) -> list[str] | None:
    """WordNet ids per class from `data.wnid_map`; None without one (class names that are wnids work as they are)."""
    if cfg.wnid_map is None:
        return None
    path = Path(cfg.wnid_map)
    if not path.is_file():
        raise UserError(f"data.wnid_map={cfg.wnid_map}: no such file; give a CSV with columns class,wnid")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not {"class", "wnid"} <= set(reader.fieldnames or []):
            raise UserError(f"{path} needs the columns class,wnid (header row), found {reader.fieldnames}")
        mapping = {}
        for row_number, row in enumerate(reader, start=2):
            wnid = (row["wnid"] or "").strip()
            if not WNID_PATTERN.match(wnid):
                raise UserError(f"{path} row {row_number}: {wnid!r} is not a wnid like n01558993")
            mapping[(row["class"] or "").strip()] = wnid
    missing = [name for name in class_names if name not in mapping]
    if missing:
        raise UserError(f"{path} has no wnid for {len(missing)} classes (e.g. {missing[:3]}); add a row per class")
    return [mapping[name] for name in class_names]


def _identity(folder: str | Path) -> tuple[int, int]:
    status = os.stat(folder)
    return status.st_dev, status.st_ino


def image_files(folder: Path, class_to_idx: dict[str, int]) -> list[tuple[str, int]]:
    """(path, class) of every image file under each class folder, symbolic links followed once: a folder reached
    again (a link back up the tree - a cycle - or to a folder already read) is skipped, and a file reached again
    (the same file through another link or class, by its resolved path) is one image, its first class's; each said
    in one line. Skipping, not refusing: links are a normal way to build a class tree from shared folders."""
    folders_read, files_read, samples, again, repeated = {_identity(folder)}, set(), [], [], 0
    for name in sorted(class_to_idx):
        if not (folder / name).is_dir():
            raise UserError(f"{folder}: class folder {name} not found")
        for root, subfolders, names in os.walk(folder / name, followlinks=True):
            identity = _identity(root)
            if identity in folders_read:
                again.append(root)
                subfolders.clear()
                continue
            folders_read.add(identity)
            subfolders.sort()
            for file in sorted(names):
                path = os.path.join(root, file)
                if not has_file_allowed_extension(file, IMG_EXTENSIONS):
                    continue
                real = os.path.realpath(path)
                if real in files_read:
                    repeated += 1
                    continue
                files_read.add(real)
                samples.append((path, class_to_idx[name]))
    if again and distributed.is_main():
        print(f"{folder}: skipped {len(again)} folder(s) reached a second time through a symbolic link (a cycle or a "
              f"link to a folder already read, e.g. {again[0]} -> {os.path.realpath(again[0])}); each is read once",
              flush=True)
    if repeated and distributed.is_main():
        print(f"{folder}: {repeated} image file(s) reached a second time (the same file through a link) count once",
              flush=True)
    return samples


def _tree(folder: Path, class_to_idx: dict[str, int]) -> Split:
    samples = image_files(folder, class_to_idx)
    if not samples:
        raise UserError(f"{folder}: no image files ({', '.join(IMG_EXTENSIONS)}) in its class folders")
    return Split(None, torch.tensor([label for _, label in samples], dtype=torch.int64),
                 paths=[path for path, _ in samples])


def without_files_of(train: Split, test: Split, folder: Path) -> Split:
    """The training split without the files the test split holds too (by resolved path): a test image must never
    train; said in one line."""
    held = {os.path.realpath(path) for path in test.paths}
    keep = [i for i, path in enumerate(train.paths) if os.path.realpath(path) not in held]
    if len(keep) < len(train) and distributed.is_main():
        print(f"{folder}: {len(train) - len(keep)} training image file(s) are also test images (the same file): "
              "left out of training", flush=True)
    return train.select(torch.tensor(keep, dtype=torch.int64)) if len(keep) < len(train) else train


def load_image_folder(cfg: DataConfig, path: str | None = None) -> ImageDataset:
    root = resolve_path(cfg, path, "imagefolder")
    if not root.is_dir():
        raise UserError(f"image folder {root} not found: it must hold one folder of images per class "
                        "(or train/ and val/ folders of those)")
    train_folder = root / "train" if (root / "train").is_dir() else root
    test_folder = next((root / name for name in ("val", "test") if train_folder != root and (root / name).is_dir()),
                       None)
    try:
        class_names, class_to_idx = find_classes(str(train_folder))
    except FileNotFoundError as e:
        raise UserError(f"{train_folder}: {e}; it must hold one folder of images per class") from None
    train = _tree(train_folder, class_to_idx)
    if test_folder is not None:
        extra = sorted(set(find_classes(str(test_folder))[0]) - set(class_names))
        if extra:
            raise UserError(f"{test_folder} has classes that {train_folder} lacks (e.g. {extra[:3]})")
        test = _tree(test_folder, {name: i for name, i in class_to_idx.items() if (test_folder / name).is_dir()})
        train = without_files_of(train, test, root)
    else:
        train_index, test_index = seeded_split(len(train))
        train, test = train.select(train_index), train.select(test_index)
    return ImageDataset(
        name=f"imagefolder:{root}",
        train=shuffled(train),
        test=test,
        class_names=class_names,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        wnids=class_wnids(cfg, class_names),
    )
