"""The one grammar of cluster specs: `--clusters SPEC`, `clusters.spec`, compare's `--clusters-for`, analyze's
`--synthetic`. Parsing, naming and the help string live here and nowhere else.

    SPEC := none | labels | superclass | wordnet:LEVEL | attributes:K | kmeans:K[,K2,...] | merge:K | split:M

A list of specs is comma-separated; a bare number continues the k-means spec before it
("wordnet:7,kmeans:25,50" is two specs).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .assignments import ClusterError

# kind -> its argument (None: takes none; "K+": one or more positive integers)
KINDS: dict[str, str | None] = {
    "none": None,
    "labels": None,
    "superclass": None,
    "wordnet": "LEVEL",
    "attributes": "K",
    "kmeans": "K+",
    "merge": "K",
    "split": "M",
}
SPEC_HELP = "none, labels, superclass, wordnet:LEVEL, attributes:K, kmeans:K[,K2,...], merge:K, split:M"
_INTEGER = re.compile(r"^\s*\d+\s*$")


@dataclass(frozen=True)
class ClusterSpec:
    kind: str
    numbers: tuple[int, ...] = ()

    def __str__(self) -> str:
        """The canonical text: `parse_spec(str(spec)) == spec`."""
        return self.kind if not self.numbers else f"{self.kind}:{','.join(map(str, self.numbers))}"

    @property
    def number(self) -> int:
        return self.numbers[0]

    @property
    def dynamic(self) -> bool:
        """Computed from features (k-means) rather than fixed before training."""
        return self.kind == "kmeans"

    @property
    def name(self) -> str:
        """A folder- and tag-safe name: "wordnet8", "kmeans25-50", "labels"."""
        return self.kind + "-".join(map(str, self.numbers))

    def clustering_names(self) -> list[str]:
        """One name per clustering the spec produces (k-means: one per K)."""
        return [f"kmeans{k}" for k in self.numbers] if self.dynamic else [self.name]


def parse_spec(text: str) -> ClusterSpec:
    """"kmeans:25,50" -> ClusterSpec("kmeans", (25, 50)); any malformed spec is one ClusterError naming the grammar."""
    kind, colon, argument = str(text).strip().lower().partition(":")
    if kind not in KINDS:
        raise ClusterError(f"unknown clusters spec {text!r}; use one of: {SPEC_HELP}")
    takes = KINDS[kind]
    if takes is None:
        if colon:
            raise ClusterError(f"clusters spec {text!r}: '{kind}' takes no argument; use one of: {SPEC_HELP}")
        return ClusterSpec(kind)
    parts = argument.split(",") if takes.endswith("+") else [argument]
    if not all(_INTEGER.match(part) and int(part) >= 1 for part in parts):
        expected = "positive integers separated by commas" if takes.endswith("+") else "one positive integer"
        raise ClusterError(f"malformed clusters spec {text!r}: expected {expected} after '{kind}:'; "
                           f"use one of: {SPEC_HELP}")
    return ClusterSpec(kind, tuple(int(part) for part in parts))


def split_spec_list(text: str | None) -> list[str]:
    """"wordnet:7,kmeans:25,50,merge:2" -> ["wordnet:7", "kmeans:25,50", "merge:2"]: a part that is a bare number
    continues the spec before it. Items may carry a prefix (compare's "METHOD=SPEC"); they are not parsed here."""
    items: list[str] = []
    for part in (text or "").split(","):
        part = part.strip()
        if _INTEGER.match(part) and items:
            items[-1] += "," + part
        elif part:
            items.append(part)
    return items
