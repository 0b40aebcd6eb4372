"""`csv:PATH`: a table of image files with a class column, attribute columns and an optional split, file-backed.

One row per image. Column names come from `data.csv` (defaults `path`, `class`, `split`); image paths are relative
to --data-root (default: the table's folder). `split` holds `train` or `test`; without that column the rows get a
seeded 80/20 split. Every other column (or those listed in `data.csv.attribute_columns`) is a discrete attribute,
binary or categorical; a categorical column becomes one binary indicator per value. Columns listed in
`data.csv.tag_columns` hold several tags per image (separated by `data.csv.tag_separator`) and become one indicator
per tag (the `data.csv.max_tags` most frequent). `attributes:K` clusters combinations of the K highest-entropy
indicators (clusters/attributes.py). `data.csv.class_column=null` loads a table without labels (every label -1).
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from selfsup_clusters.core import distributed
from selfsup_clusters.core.errors import UserError
from selfsup_clusters.data.base import ImageDataset, Split
from selfsup_clusters.data.imagefolder import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    class_wnids,
    resolve_path,
    seeded_split,
    shuffled,
)

if TYPE_CHECKING:  # type hints only: the schema sits above data (it imports evaluation's protocols)
    from selfsup_clusters.config import CsvConfig, DataConfig

SPLITS = ("train", "test")


def categorical_indicators(codes: torch.Tensor, values: list[str], column: str) -> tuple[torch.Tensor, list[str]]:
    """(N,) codes into `values` -> an (N, A) 0/1 table and its A names. A column with at most two values is one
    indicator (named by the column where its values are 0/1, else "column=<second value>"); a column with V > 2
    values is V indicators "column=value"."""
    if len(values) > 2:
        return F.one_hot(codes, len(values)).long(), [f"{column}={value}" for value in values]
    name = column if set(values) <= {"0", "1"} else f"{column}={values[-1]}"
    return (codes == 1).long().view(-1, 1), [name]  # one value only: a constant 0 column


def tag_indicators(texts: Sequence[str], column: str, separator: str = " ", max_tags: int = 0
                   ) -> tuple[torch.Tensor, list[str]]:
    """Each sample's tags ("red leather strap", split at `separator`) -> an (N, T) 0/1 table with one indicator
    "column:tag" per tag, for the `max_tags` most frequent tags (0: all); equal counts keep the tags' sorted
    order."""
    tag_sets = [{tag.strip() for tag in text.split(separator or None) if tag.strip()} for text in texts]
    counts = Counter(tag for tags in tag_sets for tag in tags)
    ranked = sorted(counts, key=lambda tag: (-counts[tag], tag))
    kept = ranked[:max_tags] if max_tags > 0 else ranked
    index = {tag: i for i, tag in enumerate(kept)}
    table = torch.zeros(len(texts), len(kept), dtype=torch.int64)
    for row, tags in enumerate(tag_sets):
        for tag in tags & index.keys():
            table[row, index[tag]] = 1
    return table, [f"{column}:{tag}" for tag in kept]


def _read_rows(table: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(table, newline="", encoding="utf-8-sig") as f:  # utf-8-sig: spreadsheets often write a BOM
        reader = csv.DictReader(f)
        rows = list(reader)
        columns = list(reader.fieldnames or [])
    for row_number, row in enumerate(rows, start=2):  # row 1 is the header
        if None in row or None in row.values():  # DictReader's marks of too many / too few fields
            raise UserError(f"{table} row {row_number} does not have the header's {len(columns)} fields")
    return columns, rows


def _require(table: Path, columns: list[str], name: str, option: str) -> None:
    if name not in columns:
        raise UserError(f"{table} has no column {name!r} (its columns: {', '.join(columns)}); "
                        f"name the right one with {option}=COLUMN")


def _codes(values: list[str]) -> tuple[torch.Tensor, list[str]]:
    """Categorical values -> codes 0..V-1 and the V distinct values, in sorted order (numbers sorted as numbers)."""
    def key(value: str) -> tuple:
        try:
            return (0, float(value), value)
        except ValueError:
            return (1, 0.0, value)

    distinct = sorted(set(values), key=key)
    index = {value: i for i, value in enumerate(distinct)}
    return torch.tensor([index[value] for value in values], dtype=torch.int64), distinct


def _attribute_columns(table: Path, columns: list[str], c: CsvConfig) -> list[str]:
    """The attribute columns, after checking that every column `data.csv` names is in the table."""
    _require(table, columns, c.path_column, "data.csv.path_column")
    if c.class_column is not None:
        if c.class_column not in columns:
            raise UserError(f"{table} has no column {c.class_column!r} (its columns: {', '.join(columns)}); name "
                            "the class column with data.csv.class_column=COLUMN, or data.csv.class_column=null "
                            "for a dataset without labels")
    special = {c.path_column, c.class_column, c.split_column, *c.tag_columns}
    attribute_columns = list(c.attribute_columns) if c.attribute_columns is not None else [
        name for name in columns if name not in special]
    for name in attribute_columns:
        _require(table, columns, name, "data.csv.attribute_columns")
    for name in c.tag_columns:
        _require(table, columns, name, "data.csv.tag_columns")
    if c.max_tags < 0:
        raise UserError(f"data.csv.max_tags must be >= 0 (0: every tag), got {c.max_tags}")
    return attribute_columns


def _image_paths(table: Path, rows: list[dict[str, str]], image_root: Path, c: CsvConfig) -> list[str]:
    """Each row's image file (which must exist); a row with a class column must name its class."""
    paths = []
    for row_number, row in enumerate(rows, start=2):
        relative = row[c.path_column].strip()
        file = image_root / relative
        if not relative or not file.is_file():
            raise UserError(f"{table} row {row_number}: image {relative!r} not found under {image_root} "
                            "(paths are relative to --data-root, default the table's folder)")
        if c.class_column is not None and not row[c.class_column].strip():
            raise UserError(f"{table} row {row_number}: empty {c.class_column!r}")
        paths.append(str(file))
    return paths


def _split_values(table: Path, columns: list[str], rows: list[dict[str, str]], c: CsvConfig) -> list[str] | None:
    """Each row's split (train or test), or None without a split column."""
    if c.split_column not in columns:
        return None
    values = [row[c.split_column].strip().lower() for row in rows]
    bad = next((i for i, value in enumerate(values) if value not in SPLITS), None)
    if bad is not None:
        raise UserError(f"{table} row {bad + 2}: {c.split_column} is {values[bad]!r}; use train or test")
    return values


def _one_row_per_file(table: Path, paths: list[str], splits: list[str] | None) -> list[int]:
    """The rows kept: a row that names a file an earlier row names (by resolved path) is left out, said in one
    line, since each file is one image. Where one of them is a test row the file stays a test image (its first test
    row), so a file on both sides of the split never trains."""
    first: dict[str, int] = {}
    for i, path in enumerate(paths):
        real = os.path.realpath(path)
        earlier = first.setdefault(real, i)
        if earlier != i and splits is not None and splits[i] == "test" and splits[earlier] != "test":
            first[real] = i
    keep = sorted(first.values())
    if len(keep) < len(paths) and distributed.is_main():
        print(f"{table}: {len(paths) - len(keep)} row(s) name an image file an earlier row names (the same file): "
              "left out, each file is one image (a test one where any of its rows says test)", flush=True)
    return keep


def _split(table: Path, splits: list[str] | None, n: int, c: CsvConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Train and test indices of the n rows: from the split column, else a seeded 80/20 split."""
    if splits is None:
        return seeded_split(n)
    train_index = torch.tensor([i for i, value in enumerate(splits) if value == "train"], dtype=torch.int64)
    test_index = torch.tensor([i for i, value in enumerate(splits) if value == "test"], dtype=torch.int64)
    if len(train_index) == 0:
        raise UserError(f"{table}: no row has {c.split_column}=train")
    return train_index, test_index


def load_csv_table(cfg: DataConfig, path: str | None = None) -> ImageDataset:
    table, c = resolve_path(cfg, path, "csv"), cfg.csv
    if not table.is_file():
        raise UserError(f"CSV table {table} not found; --dataset csv:PATH needs a table with columns "
                        f"{c.path_column},{c.class_column or 'CLASS'},[{c.split_column},]ATTRIBUTE...")
    image_root = Path(cfg.root) if cfg.root else table.parent
    columns, rows = _read_rows(table)
    if not rows:
        raise UserError(f"{table} has a header but no rows")
    attribute_columns = _attribute_columns(table, columns, c)
    paths = _image_paths(table, rows, image_root, c)
    splits = _split_values(table, columns, rows, c)
    keep = _one_row_per_file(table, paths, splits)
    rows, paths = [rows[i] for i in keep], [paths[i] for i in keep]
    splits = [splits[i] for i in keep] if splits is not None else None
    if c.class_column is not None:
        labels, class_names = _codes([row[c.class_column].strip() for row in rows])
    else:
        labels, class_names = torch.full((len(rows),), -1, dtype=torch.int64), []
    indicators = [categorical_indicators(*_codes([row[name].strip() for row in rows]), name)
                  for name in attribute_columns]
    indicators += [tag_indicators([row[name] for row in rows], name, c.tag_separator, c.max_tags)
                   for name in c.tag_columns]
    attribute_names = [name for _, names in indicators for name in names]
    attributes = torch.cat([table for table, _ in indicators], dim=1) if attribute_names else None
    everything = Split(None, labels, attributes, paths)

    train_index, test_index = _split(table, splits, len(rows), c)
    return ImageDataset(
        name=f"csv:{table}",
        train=shuffled(everything.select(train_index)),
        test=everything.select(test_index),
        class_names=class_names,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        wnids=class_wnids(cfg, class_names) if class_names else None,
        attribute_names=attribute_names,
    )
