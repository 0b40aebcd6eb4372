"""Rewrite the method tables of the docs from the registry, so that adding a method is its file, one registry line
and its test: the README's and docs/training.md's tables (methods_markdown) and the `selfsup-clusters methods`
output docs/recipes.md shows (methods_table). tests/test_registry.py fails while one is stale.

    .venv/bin/python tools/method_docs.py          # rewrite them in place; prints what changed
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from anywhere: the checkout's package, not an installed one
    sys.path.insert(0, str(REPO))

from selfsup_clusters.methods.registry import methods_markdown, methods_table  # noqa: E402

TABLE = re.compile(r"^\| method \(`--method`\) \|.*?(?=\n\n|\Z)", re.M | re.S)  # a table ends at a blank line
OUTPUT = re.compile(r"(?<=^\$ selfsup-clusters methods\n).*?(?=\n```)", re.M | re.S)
DOCS = {"README.md": (TABLE, lambda: methods_markdown(options=False)),
        "docs/training.md": (TABLE, methods_markdown),
        "docs/recipes.md": (OUTPUT, methods_table)}


def rewrite(root: Path, write: bool = False) -> list[str]:
    """The docs under `root` whose method table differs from the registry's (rewritten in place with `write`)."""
    stale = []
    for doc, (pattern, render) in DOCS.items():
        path = root / doc
        text = path.read_text()
        if not pattern.search(text):
            raise SystemExit(f"{doc}: no method table found (it starts with '| method (`--method`) |')")
        new = pattern.sub(lambda _, render=render: render(), text, count=1)
        if new != text:
            stale.append(doc)
            if write:
                path.write_text(new)
    return stale


if __name__ == "__main__":
    changed = rewrite(REPO, write=True)
    print("rewrote " + ", ".join(changed) if changed else "the method tables are current")
