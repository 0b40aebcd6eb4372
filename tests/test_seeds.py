"""One rule for derived seeds (selfsup_clusters/core/seeds.py), giving the numbers every earlier run used."""

from __future__ import annotations

from pathlib import Path

import selfsup_clusters
from selfsup_clusters.core.seeds import derived_seed

PACKAGE = Path(selfsup_clusters.__file__).resolve().parent


def test_derived_seed_is_the_numbers_runs_always_used():
    assert derived_seed(3, 5) == 3 * 1_000_003 + 5  # an epoch's generator (trainer.epoch_generator)
    assert derived_seed(3, 7919, 2) == 3 * 1_000_003 + 7919 + 2  # the evaluation's epochs (run_eval)
    assert derived_seed(0, 4) == 4 and derived_seed(7) == 7 * 1_000_003


def test_no_module_derives_a_seed_its_own_way():
    own_ways = [str(path.relative_to(PACKAGE)) for path in sorted(PACKAGE.rglob("*.py"))
                if path.name != "seeds.py" and ("1_000_003" in path.read_text() or "1000003" in path.read_text())]
    assert own_ways == []
