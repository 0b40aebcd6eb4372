"""Progress bars only where someone watches them: on a terminal, from rank 0, with log.progress on.

Written to a file (CI, nohup, `> train.log`) a bar's carriage-return updates would pile up in the log, so there
the bars print nothing and the log gets the trainer's one line per epoch (and compare's one per run) instead.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

from tqdm import tqdm


def progress(iterable: Iterable | None = None, *, desc: str, total: int | None = None, enabled: bool = True,
             unit: str = "it") -> tqdm:
    """`tqdm(iterable)` that disappears when done, shown only when `enabled`, on rank 0 and when stderr is a
    terminal."""
    from selfsup_clusters.core import distributed

    shown = enabled and distributed.is_main() and is_terminal(sys.stderr)
    return tqdm(iterable, desc=desc, total=total, unit=unit, leave=False, dynamic_ncols=True, disable=not shown)


def is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
