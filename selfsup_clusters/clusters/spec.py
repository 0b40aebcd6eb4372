"""The one grammar of cluster specs: `--clusters SPEC`, `clusters.spec`, compare's `--clusters-for`, analyze's
`--also`. Parsing, naming and the help string live here and nowhere else.

    SPEC := none | PART ['@' WEIGHT] ('+' PART ['@' WEIGHT])*
    PART := labels | instance | superclass | wordnet:LEVEL | attributes:K | kmeans:K[,K2,...] | merge:K | split:M

`instance` makes every sample its own cluster (SimCLR's positives): as a part of a composite
("kmeans:250@0.5+instance@0.5") it keeps each sample's own views among its positives while k-means clusters are
still noisy.

A spec with several parts ("wordnet:7+wordnet:9", "attributes:4@0.5+kmeans:500") trains on all of them at once:
Cl-InfoNCE's loss is the weighted mean of its per-part losses, ce has one head per clustering, pcl takes k-means
parts only. Weights are relative (default 1 each); a k-means part with several K shares its weight among them.
A K may repeat within a k-means part ("kmeans:300,300,300", DeepCluster-v2's three heads): each run of it is its
own clustering (its own k-means seed).
A list of specs is comma-separated; an item that starts with a digit continues the k-means part before it
("wordnet:7,kmeans:25,50" is two specs).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .assignments import ClusterError

# kind -> its argument (None: takes none; "K+": one or more positive integers)
KINDS: dict[str, str | None] = {
    "none": None,
    "labels": None,
    "instance": None,
    "superclass": None,
    "wordnet": "LEVEL",
    "attributes": "K",
    "kmeans": "K+",
    "merge": "K",
    "split": "M",
}
SPEC_HELP = ("none, labels, instance, superclass, wordnet:LEVEL, attributes:K, kmeans:K[,K2,...], merge:K, split:M; "
             "several at once joined by '+', each with an optional '@WEIGHT' (wordnet:7@0.5+kmeans:500)")
_INTEGER = re.compile(r"^\s*\d+\s*$")


@dataclass(frozen=True)
class ClusterPart:
    """One cluster source of a spec: its kind, numbers and (relative) weight in the loss."""

    kind: str
    numbers: tuple[int, ...] = ()
    weight: float = 1.0

    def __str__(self) -> str:
        text = self.kind if not self.numbers else f"{self.kind}:{','.join(map(str, self.numbers))}"
        return text if self.weight == 1 else f"{text}@{self.weight:g}"

    @property
    def number(self) -> int:
        return self.numbers[0]

    @property
    def dynamic(self) -> bool:
        """Computed from features (k-means) rather than fixed before training."""
        return self.kind == "kmeans"

    @property
    def name(self) -> str:
        """A folder- and tag-safe name: "wordnet8", "kmeans25-50", "labels", "wordnet7@0.5"."""
        text = self.kind + "-".join(map(str, self.numbers))
        return text if self.weight == 1 else f"{text}@{self.weight:g}"

    def clustering_names(self) -> list[str]:
        """One name per clustering the part produces (k-means: one per K, a repeated K numbered from its second
        time on, as DeepCluster-v2's 3 x 3000: kmeans3000, kmeans3000_2, kmeans3000_3); weights are not part of it."""
        if not self.dynamic:
            return [self.kind + "-".join(map(str, self.numbers))]
        return [f"kmeans{k}" + (f"_{n}" if (n := self.numbers[:i + 1].count(k)) > 1 else "")
                for i, k in enumerate(self.numbers)]


@dataclass(frozen=True)
class ClusterSpec:
    """A parsed spec: one part, several joined by '+', or none (no parts)."""

    parts: tuple[ClusterPart, ...] = ()

    def __str__(self) -> str:
        """The canonical text: `parse_spec(str(spec)) == spec`."""
        return "+".join(map(str, self.parts)) or "none"

    @property
    def name(self) -> str:
        return "+".join(part.name for part in self.parts) or "none"

    @property
    def dynamic(self) -> bool:
        """Some part is re-clustered from features (k-means) during training."""
        return any(part.dynamic for part in self.parts)

    @property
    def fixed(self) -> bool:
        """Some part is known before training (computed once)."""
        return any(not part.dynamic for part in self.parts)

    def clustering_names(self) -> list[str]:
        return [name for part in self.parts for name in part.clustering_names()]

    def clustering_dynamic(self) -> list[bool]:
        return [part.dynamic for part in self.parts for _ in part.clustering_names()]

    def clustering_weights(self) -> list[float]:
        """Each clustering's weight in a loss averaged over clusterings: its part's weight, shared among a k-means
        part's K."""
        return [part.weight / len(part.clustering_names()) for part in self.parts for _ in part.clustering_names()]


def parse_spec(text: str | ClusterSpec) -> ClusterSpec:
    """"wordnet:7@0.5+kmeans:25,50" -> ClusterSpec((wordnet 7 weight 0.5, kmeans (25, 50))); any malformed spec is
    one ClusterError naming the grammar."""
    if isinstance(text, ClusterSpec):
        return text
    pieces = str(text).strip().lower().split("+")
    if pieces == ["none"]:
        return ClusterSpec()
    spec = ClusterSpec(tuple(_parse_part(piece, text) for piece in pieces))
    names = spec.clustering_names()
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ClusterError(f"clusters spec {text!r} gives {twice[0]} twice; name each clustering once "
                           "(weights: PART@WEIGHT)")
    return spec


def _parse_part(piece: str, text: str) -> ClusterPart:
    if not piece.strip():
        raise ClusterError(f"clusters spec {text!r} has an empty part; join parts as PART+PART, "
                           "e.g. wordnet:7+kmeans:500")
    body, at, weight_text = piece.strip().partition("@")
    kind, colon, argument = body.strip().partition(":")
    if kind == "none" and text.strip().lower() != "none":
        raise ClusterError(f"clusters spec {text!r}: 'none' cannot be combined with other parts")
    if kind not in KINDS:
        raise ClusterError(f"unknown clusters spec {body.strip()!r} in {text!r}; use one of: {SPEC_HELP}")
    weight = 1.0
    if at:
        try:
            weight = float(weight_text)
        except ValueError:
            weight = -1.0
        if not (math.isfinite(weight) and weight > 0):
            raise ClusterError(f"clusters spec {text!r}: the weight after '@' must be a positive number "
                               f"(got {weight_text.strip()!r}), e.g. wordnet:7@0.5")
    takes = KINDS[kind]
    if takes is None:
        if colon:
            raise ClusterError(f"clusters spec {text!r}: '{kind}' takes no argument; use one of: {SPEC_HELP}")
        return ClusterPart(kind, (), weight)
    numbers = argument.split(",") if takes.endswith("+") else [argument]
    if not all(_INTEGER.match(number) and int(number) >= 1 for number in numbers):
        expected = "positive integers separated by commas" if takes.endswith("+") else "one positive integer"
        raise ClusterError(f"malformed clusters spec {text!r}: expected {expected} after '{kind}:'; "
                           f"use one of: {SPEC_HELP}")
    return ClusterPart(kind, tuple(int(number) for number in numbers), weight)


def split_spec_list(text: str | None) -> list[str]:
    """"wordnet:7,kmeans:25,50,merge:2" -> ["wordnet:7", "kmeans:25,50", "merge:2"]: an item that starts with a
    digit continues the spec before it ("kmeans:25,50+wordnet:7" stays one). Items may carry a prefix (compare's
    "METHOD=SPEC"); they are not parsed here."""
    items: list[str] = []
    for part in (text or "").split(","):
        part = part.strip()
        if part[:1].isdigit() and items:
            items[-1] += "," + part
        elif part:
            items.append(part)
    return items
