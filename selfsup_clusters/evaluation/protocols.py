"""The evaluation protocol family a verdict is checked against (pure: names and the reading of verdicts; the
scores are evaluate.protocol_scores).

A comparison is decided on one protocol, the linear probe with its L2 penalty chosen per representation on a split
of its own training features (Kornblith et al. 2019), and checked against the others: the same probe at one fixed
penalty for every representation, and weighted kNN at k=20 and k=200. A knob that can favour one representation
is either chosen per representation or varied here. The family is a sensitivity check, not a multiple-comparison
test: the verdict is the deciding protocol's (its error rate is the stated one); the others say whether it holds
when the protocol moves ("robust") or flips with it ("protocol-dependent", naming the protocols that decide
otherwise).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Protocol:
    name: str
    metric: str  # its key in metrics.jsonl, final.json, the CSVs
    label: str  # how tables name it
    knn_k: int = 0  # a kNN protocol's k (0: a linear probe)


DECIDING = "linear"
FAMILY = {p.name: p for p in (
    Protocol("linear", "linear_top1", "linear (L2 per representation)"),
    Protocol("linear_fixed", "linear_fixed_top1", "linear (one L2 for all)"),
    Protocol("knn20", "knn20_top1", "kNN k=20", 20),
    Protocol("knn200", "knn200_top1", "kNN k=200", 200),
)}
ROBUST, DEPENDENT = "robust", "protocol-dependent"


def check_protocols(names: Sequence[str]) -> str | None:
    """None when every name is a protocol other than the deciding one, else the one-line problem."""
    unknown = [name for name in names if name not in FAMILY or name == DECIDING]
    if unknown:
        checkable = ", ".join(name for name in FAMILY if name != DECIDING)
        return (f"eval.protocols names {', '.join(map(repr, unknown))}: the protocols a verdict is checked against "
                f"are {checkable} ('{DECIDING}' always decides)")
    return None


def check_grid(grid: Sequence[float]) -> str | None:
    """None for a penalty grid of at least two distinct positive values, else the one-line problem."""
    if len(set(grid)) < 2 or not all(value > 0 for value in grid):
        return (f"eval.probe_l2={list(grid)}: the probe chooses its L2 penalty from at least two distinct values "
                "above 0, e.g. [1e-5,1e-4,1e-3,1e-2,1e-1]; a fixed penalty is eval.probe_fixed_l2")
    return None


def check_eval(cfg) -> str | None:
    """None for an EvalConfig whose penalty grid, fixed penalty and protocol names are usable, else the first
    problem in one line."""
    if not cfg.probe_fixed_l2 > 0:
        return f"eval.probe_fixed_l2={cfg.probe_fixed_l2}: the penalty must be above 0"
    return check_grid(cfg.probe_l2) or check_protocols(cfg.protocols)


def checked(names: Sequence[str]) -> list[Protocol]:
    """The deciding protocol and the ones it is checked against, in that order."""
    return [FAMILY[DECIDING], *(FAMILY[name] for name in names if name != DECIDING)]


def unscored(final: Mapping, names: Sequence[str]) -> list[str]:
    """The protocols (the deciding one and `names`) a finished run's final.json was scored with the linear probe
    but not under: a run scored before the family, or before the penalty was chosen per representation ("linear"
    without its `linear_l2`). A run without any linear score (no labels, the probe off) needs nothing."""
    if "linear_top1" not in final:
        return []
    return [protocol.name for protocol in checked(names)
            if protocol.metric not in final or (protocol.name == DECIDING and "linear_l2" not in final)]


def robustness(verdicts: Mapping[str, str], words: Mapping[str, str] | None = None) -> str:
    """How a deciding verdict holds across the family: `verdicts` maps protocol names (the deciding one included)
    to their verdicts on the same paired difference. "robust" when no other protocol reaches a decided verdict
    (agrees, disagrees, equivalent) other than the deciding one's; else "protocol-dependent (kNN k=20: disagrees;
    ...)", each verdict in `words` where it has one (compare's "higher"/"lower"). An inconclusive protocol decides
    nothing, so it contradicts nothing; protocols missing from `verdicts` (a run scored before the family
    existed) are left out."""
    from selfsup_clusters.evaluation.intervals import (
        INCONCLUSIVE,  # not at the top: config.py imports this file, scipy-free
    )

    deciding = verdicts[DECIDING]
    words = words or {}
    others = [f"{FAMILY[name].label}: {words.get(said, said)}" for name, said in verdicts.items()
              if name != DECIDING and said != INCONCLUSIVE and said != deciding]
    return f"{DEPENDENT} ({'; '.join(others)})" if others else ROBUST
