"""The one rule for seeds derived from the run's seed: each epoch's shuffling and augmentation, the evaluation's
augmentations, a method's re-initialisations. Distinct parts give distinct streams, and a run with the same seed
gets the same numbers every time."""

from __future__ import annotations

SEED_STRIDE = 1_000_003  # seed * stride + part differs for every (seed, part) with 0 <= part < stride


def derived_seed(seed: int, *parts: int) -> int:
    """seed * 1_000_003 + the sum of `parts`: derived_seed(seed, epoch) for epoch's generator, derived_seed(seed,
    7919, epoch) for the evaluation's. The numbers are those every earlier run used; do not change them."""
    return seed * SEED_STRIDE + sum(parts)
