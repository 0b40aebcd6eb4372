"""Tables: plain aligned text for the terminal (the `clusters`, `bench` and `methods` commands), and the one CSV
writer and the one Markdown table writer the reports use (compare, analyze, tune, claims)."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from selfsup_clusters.evaluation.intervals import Interval


def flatten(row: dict) -> dict:
    """`row` with each Interval value written out as three keys: KEY (its mean), KEY_low and KEY_high; other values
    unchanged, in the same order."""
    flat: dict = {}
    for key, value in row.items():
        if isinstance(value, Interval):
            flat.update({key: value.mean, f"{key}_low": value.low, f"{key}_high": value.high})
        else:
            flat[key] = value
    return flat


def write_csv(path: Path, columns: Sequence[str] | None, rows: list[dict]) -> None:
    """`rows` as CSV with these `columns`, in this order; keys not among them are left out, missing ones empty. An
    Interval value fills three columns (`flatten`); `columns` None: every key of the rows, in order of first
    appearance."""
    flat = [flatten(row) for row in rows]
    if columns is None:
        columns = list(dict.fromkeys(key for row in flat for key in row))
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(flat)


def markdown_table(columns: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A Markdown table: the header of `columns`, then one line per row, each cell as str() writes it (an Interval
    in its one format, Interval.__format__; format a number before, as it should read), a "|" inside a cell
    escaped ("H(Z|T)" would split it). Raises ValueError for a row whose number of cells is not the number of
    columns."""
    def line(cells: Sequence[object]) -> str:
        return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"

    lines = [line(columns), "|" + "---|" * len(columns)]
    for row in rows:
        if len(row) != len(columns):
            raise ValueError(f"markdown_table: a row of {len(row)} cells under {len(columns)} columns: "
                             f"{[str(cell) for cell in row]}")
        lines.append(line(row))
    return "\n".join(lines)


def format_table(rows: list[dict]) -> str:
    """Plain aligned text table: columns in order of first appearance, numbers
    right-aligned (floats with 3 decimals), text left-aligned."""
    if not rows:
        return ""
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    cells = [[_format_cell(row.get(column, "")) for column in columns] for row in rows]
    numeric = [all(_is_number(row.get(column)) for row in rows if column in row) for column in columns]
    widths = [max(len(column), *(len(line[i]) for line in cells)) for i, column in enumerate(columns)]

    def render(values: list[str]) -> str:
        return "  ".join(
            value.rjust(width) if is_number else value.ljust(width)
            for value, width, is_number in zip(values, widths, numeric, strict=True)
        ).rstrip()

    lines = [render(columns), render(["-" * width for width in widths])]
    return "\n".join(lines + [render(line) for line in cells])


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _format_cell(value: object) -> str:
    if isinstance(value, (float, np.floating)):
        return f"{value:.3f}"
    return str(value)
