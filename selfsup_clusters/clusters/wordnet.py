"""WordNet 3.0 noun hierarchy, read straight from `data.noun` (wndb(5) format).

Why not NLTK: Debian's wordnet-base lacks the `lexnames` file NLTK opens, and
the format is simple. A data.noun line is

    offset lex_filenum ss_type w_cnt [word lex_id]*w_cnt p_cnt
    [pointer_symbol offset pos source/target]*p_cnt | gloss

with w_cnt in hex and p_cnt in decimal. The offset is the line's byte offset
in the file, so a synset is read by slicing the file at its offset: only the
synsets a dataset needs are ever parsed. A file holding only some of the lines
(`WordNet.subset`: the synsets a dataset's classes reach, a few KB instead of
15 MB, which the device bundle carries) is read by each line's leading offset
instead. Hypernyms are `@` pointers, instance hypernyms `@i`; both are followed.

Depth and ancestors (the rule a table of results should quote):
a synset's path is its shortest hypernym path from the root `entity`
(00001740, depth 1) down to the synset; when several shortest paths exist,
the one whose sequence of offsets, read from the root, is lexicographically
smallest wins. The ancestor at depth L is the L-th synset on that path; a
class shallower than L keeps its own synset. Every prefix of a chosen path is
the chosen path of its last synset, so the levels are nested: each cluster
at depth L + 1 lies inside one cluster at depth L.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from selfsup_clusters.data.base import WNID_PATTERN

from .assignments import ClusterError

DEFAULT_WORDNET_DIR = "/usr/share/wordnet"
ENTITY = 1740  # 00001740 'entity', the root of every noun path
HYPERNYM_POINTERS = ("@", "@i")
DAMAGED = ("the file is truncated or damaged - reinstall it (sudo apt-get install --reinstall wordnet-base) or point "
           "clusters.wordnet_dir at a good copy")

# Fashion-MNIST class -> WordNet 3.0 noun synset offset, checked against
# Debian's data.noun (lemmas in the comments). The shortest paths give
# 1 cluster at depth 5 (artifact), 2 at depth 6 (covering, instrumentality),
# 3 at depth 7 (clothing, footwear, container), 5 at depth 8 (garment,
# woman's_clothing, shoe, boot, bag), 9 at depth 9 (T-shirt and shirt still
# share 'shirt') and the ten classes at depth 10.
# 'boot' is used for "Ankle boot": WordNet has no ankle-boot sense, and its
# boot hyponyms (buskin, cowboy_boot, riding_boot, ...) are narrower than the
# class. 'bag' is the container sense (02773037), which covers the handbags,
# totes and backpacks in the class.
FASHION_MNIST_SYNSETS: dict[str, int] = {
    "t-shirt/top": 3595614,  # jersey, T-shirt, tee_shirt (-> shirt)
    "trouser": 4489008,  # trouser, pant
    "pullover": 4021028,  # pullover, slipover (-> sweater)
    "dress": 3236735,  # dress, frock
    "coat": 3057021,  # coat (-> overgarment)
    "sandal": 4133789,  # sandal (-> shoe)
    "shirt": 4197391,  # shirt
    "sneaker": 3472535,  # gym_shoe, sneaker, tennis_shoe (-> shoe)
    "bag": 2773037,  # bag (-> container)
    "ankle boot": 2872752,  # boot (-> footwear)
}


@dataclass(frozen=True)
class Synset:
    offset: int
    lemmas: tuple[str, ...]
    hypernyms: tuple[int, ...]


class WordNet:
    """Lazy reader of one data.noun file; synsets and paths are memoised."""

    def __init__(self, data: bytes, path: str = "data.noun") -> None:
        self._data = data
        self._path = path
        self._synsets: dict[int, Synset] = {}
        self._paths: dict[int, tuple[int, ...]] = {}
        self._starts: dict[int, int] | None = None  # line starts by leading offset, built for a subset file
        self._visiting: set[int] = set()  # synsets whose path is being found (a loop in a damaged file shows here)

    def synset(self, offset: int) -> Synset:
        if offset not in self._synsets:
            self._synsets[offset] = self._parse(offset)
        return self._synsets[offset]

    def lemmas(self, offset: int) -> list[str]:
        return list(self.synset(offset).lemmas)

    def hypernym_path(self, offset: int) -> list[int]:
        """Offsets from the root down to `offset` (see the module docstring for the rule)."""
        return list(self._best_path(offset))

    def depth(self, offset: int) -> int:
        return len(self._best_path(offset))

    def ancestor_at_depth(self, offset: int, level: int) -> int:
        """Ancestor at depth `level` (entity = 1); a shallower synset is its own ancestor."""
        if level < 1:
            raise ClusterError(f"WordNet level must be >= 1 (entity is depth 1), got {level}")
        path = self._best_path(offset)
        return path[min(level, len(path)) - 1]

    def _best_path(self, offset: int) -> tuple[int, ...]:
        # Optimal substructure: the best path through hypernym h is best(h) + offset,
        # so comparing (length, offsets) over the hypernyms' best paths suffices.
        if offset not in self._paths:
            if offset in self._visiting:  # a hypernym loop: no real WordNet has one
                raise ClusterError(f"{self._path}: synset {offset:08d} is its own hypernym's ancestor: {DAMAGED}")
            self._visiting.add(offset)
            try:
                hypernyms = self.synset(offset).hypernyms
                best = min((self._best_path(h) for h in hypernyms), key=lambda path: (len(path), path), default=())
                self._paths[offset] = (*best, offset)
            finally:
                self._visiting.discard(offset)
        return self._paths[offset]

    def subset(self, offsets: Iterable[int]) -> bytes:
        """The lines of `offsets` and of every synset their hypernym pointers reach, in offset order: a data.noun
        holding only them, which this reader accepts and which gives these synsets the same paths."""
        reached, pending = set(), list(offsets)
        while pending:
            offset = pending.pop()
            if offset not in reached:
                reached.add(offset)
                pending.extend(self.synset(offset).hypernyms)
        return b"".join(self._line(offset) + b"\n" for offset in sorted(reached))

    def _start(self, offset: int) -> int:
        """Where synset `offset`'s line starts: at byte `offset` in a whole data.noun; in a subset file, wherever the
        line led by that offset stands (-1: nowhere)."""
        data = self._data
        if 0 <= offset and (offset == 0 or data[offset - 1 : offset] == b"\n") and \
                data[offset : offset + 9] == b"%08d " % offset:
            return offset
        if self._starts is None:
            self._starts = {int(m.group(1)): m.start() for m in re.finditer(rb"^(\d{8}) ", data, re.MULTILINE)}
        return self._starts.get(offset, -1)

    def _line(self, offset: int) -> bytes:
        start = self._start(offset)
        if start < 0:
            return b""
        end = self._data.find(b"\n", start)
        return self._data[start : end if end >= 0 else len(self._data)]

    def _parse(self, offset: int) -> Synset:
        line = self._line(offset).decode("utf-8", "replace")
        fields = line.split(" | ", 1)[0].split()
        if offset < 0 or len(fields) < 5 or fields[0] != f"{offset:08d}" or fields[2] not in ("n", "s"):
            # A whole data.noun opens with its licence's indented lines; a subset file (self.subset) with a synset
            if offset >= len(self._data) and self._data.startswith(b"  "):  # a whole one that stops short of it
                raise ClusterError(f"{self._path} ends at byte {len(self._data)}, before synset {offset:08d}: "
                                   f"{DAMAGED}")
            raise ClusterError(
                f"no noun synset at offset {offset:08d} in {self._path}; is the wnid right and the file WordNet 3.0 "
                "(or a subset of it holding this synset)?"
            )
        try:
            word_count = int(fields[3], 16)
            lemmas = tuple(fields[4 + 2 * i] for i in range(word_count))
            position = 4 + 2 * word_count
            pointer_count = int(fields[position])
            pointers = [fields[position + 1 + 4 * i : position + 5 + 4 * i] for i in range(pointer_count)]
            hypernyms = tuple(int(target) for symbol, target, *_ in pointers if symbol in HYPERNYM_POINTERS)
        except (ValueError, IndexError):  # counts that are not numbers, or promise more fields than the line has
            raise ClusterError(f"{self._path}: the line of synset {offset:08d} is malformed: {DAMAGED}") from None
        return Synset(offset=offset, lemmas=lemmas, hypernyms=hypernyms)


def load_wordnet(wordnet_dir: str = DEFAULT_WORDNET_DIR) -> WordNet:
    """The WordNet in `wordnet_dir`/data.noun, read once per path."""
    return _load(str(Path(wordnet_dir).expanduser().resolve()))


@lru_cache(maxsize=4)
def _load(wordnet_dir: str) -> WordNet:
    path = Path(wordnet_dir) / "data.noun"
    if not path.is_file():
        raise ClusterError(
            f"WordNet 3.0 not found ({path} is missing): install it with "
            "`sudo apt-get install wordnet-base`, or pass wordnet_dir=<folder holding data.noun>"
        )
    return WordNet(path.read_bytes(), str(path))


def synset_for_wnid(wnid: str) -> int:
    """ImageNet wnid ('n' + 8-digit offset, e.g. 'n02084071') -> synset offset."""
    match = WNID_PATTERN.match(wnid.strip())
    if not match:
        raise ClusterError(f"{wnid!r} is not a WordNet noun id; expected 'n' and 8 digits, like 'n02084071'")
    return int(match.group(1))


def class_synsets(class_names: Sequence[str], wnids: Sequence[str] | None = None) -> list[int]:
    """Synset offset per class: from `wnids` when given, else from class names
    that are wnids themselves (ImageNet folders) or Fashion-MNIST names."""
    if wnids is not None:
        if len(wnids) != len(class_names):
            raise ClusterError(
                f"got {len(wnids)} wnids for {len(class_names)} classes; give one wnid per class"
            )
        return [synset_for_wnid(wnid) for wnid in wnids]
    offsets, unmapped = [], []
    for name in class_names:
        if WNID_PATTERN.match(name.strip()):
            offsets.append(synset_for_wnid(name))
        elif name.strip().lower() in FASHION_MNIST_SYNSETS:
            offsets.append(FASHION_MNIST_SYNSETS[name.strip().lower()])
        else:
            unmapped.append(name)
    if unmapped:
        raise ClusterError(
            f"wordnet clusters need a WordNet synset per class, but {len(unmapped)} class names have none "
            f"(e.g. {unmapped[:3]}); give the dataset wnids (like 'n02084071') "
            "or choose another clusters spec"
        )
    return offsets


def wordnet_levels(synsets: Sequence[int], wordnet: WordNet) -> list[int]:
    """Levels 1..D, D the depth of the deepest class: below D nothing changes."""
    return list(range(1, max(wordnet.depth(offset) for offset in synsets) + 1))


def check_level(level: int, synsets: Sequence[int], class_names: Sequence[str], wordnet: WordNet) -> str | None:
    """`wordnet:level` against the classes' depths: a ClusterError when it is deeper than every class (it would be
    the deepest level again, the classes' own synsets, under another name); when only some classes are shallower,
    the warning that says so (they are their own cluster at this level); None when every class reaches it."""
    depths = [wordnet.depth(offset) for offset in synsets]
    if not depths or level < 1:
        return None
    deepest = max(depths)
    if level > deepest:
        name = class_names[depths.index(deepest)]
        raise ClusterError(
            f"wordnet:{level} is deeper than every class: the deepest class ({name!r}) is at depth {deepest}, so "
            f"wordnet:{deepest} is the deepest useful level; use wordnet:1..{deepest}"
        )
    shallower = [(name, depth) for name, depth in zip(class_names, depths, strict=True) if depth < level]
    if not shallower:
        return None
    examples = ", ".join(f"{name!r} at {depth}" for name, depth in shallower[:3])
    return (f"wordnet:{level}: {len(shallower)} of {len(depths)} classes are shallower than depth {level} (e.g. "
            f"{examples}) and keep their own synset as their cluster")
