"""Tables: plain aligned text for the terminal (the `clusters`, `bench` and `methods` commands), and the one CSV
writer the reports use (compare, analyze, tune, claims)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np


def write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    """`rows` as CSV with these `columns`, in this order; keys not among them are left out, missing ones empty."""
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


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
