"""Seeds until decided: the repeated intervals keep their error rate under the stopping rule (shown by simulation,
against a naive re-checked t-interval that does not), the equivalence verdict, the rule's grammar and its errors,
and the suite adding seeds only where a comparison is undecided."""

from __future__ import annotations

import math

import numpy as np
import pytest

from selfsup_clusters.cli import main
from selfsup_clusters.core.errors import UserError
from selfsup_clusters.evaluation.intervals import DECIDED, Interval, SeedRule, repeated_level, verdict
from selfsup_clusters.studies import suite
from selfsup_clusters.studies.suite import Entry, hold_rule, train_until_decided

ALPHA = 0.05
SIMULATIONS = 2000
# A rate at most ALPHA, measured over SIMULATIONS, lies below this bound with probability 0.9987 (3 standard errors)
BOUND = ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / SIMULATIONS)


class NaiveRule(SeedRule):
    """The same stopping rule, each look read from a fixed-level t-interval as if it were the only look."""

    @property
    def level(self) -> float:
        return self.naive_level

    naive_level = ALPHA


def stopped_verdicts(rule: SeedRule, mean: float, seed: int) -> dict[str, float]:
    """SIMULATIONS comparisons whose per-seed differences are N(mean, 1), each looked at after every seed from
    rule.low on and stopped as the suite stops it (rule.read, rule.wants_more); the share of each final verdict."""
    rng = np.random.default_rng(seed)
    found: dict[str, int] = {}
    for _ in range(SIMULATIONS):
        differences = rng.normal(mean, 1.0, rule.high)
        n = rule.low
        while True:
            _, said = rule.read({i: float(d) for i, d in enumerate(differences[:n])}, dict.fromkeys(range(n), 0.0))
            if not rule.wants_more(n, said):
                break
            n += 1
        found[said] = found.get(said, 0) + 1
    return {said: count / SIMULATIONS for said, count in found.items()}


def test_no_true_difference_is_called_a_difference_more_than_alpha_of_the_time():
    rule = SeedRule(3, 10, margin=0.5)
    sequential = stopped_verdicts(rule, 0.0, seed=1)
    assert sequential.get("agrees", 0) + sequential.get("disagrees", 0) <= BOUND
    naive = stopped_verdicts(NaiveRule(3, 10, margin=0.5), 0.0, seed=1)
    assert naive.get("agrees", 0) + naive.get("disagrees", 0) > BOUND  # re-checking a 95% interval errs more


def test_a_true_difference_of_the_margin_is_called_equivalent_at_most_alpha_of_the_time():
    rule = SeedRule(3, 10, margin=1.0)
    assert stopped_verdicts(rule, 1.0, seed=2).get("equivalent", 0) <= BOUND
    tost = NaiveRule(3, 10, margin=1.0)  # TOST's usual 90% interval, re-checked after every seed
    tost.naive_level = 2 * ALPHA
    assert stopped_verdicts(tost, 1.0, seed=2).get("equivalent", 0) > BOUND


def test_the_calibrated_level_lies_between_bonferroni_and_a_single_look():
    assert ALPHA / 8 < repeated_level(3, 10) < ALPHA
    assert repeated_level(3, 3) == pytest.approx(ALPHA, abs=0.002)  # one look: the plain interval, up to MC error
    assert SeedRule(3, 3, 0.01).level == ALPHA and SeedRule(3, 10, 0.01).level == repeated_level(3, 10)


def test_verdicts_with_a_margin():
    margin = 0.01
    assert verdict(Interval(0.002, -0.004, 0.008, 5), +1, margin) == "equivalent"
    assert verdict(Interval(0.005, 0.002, 0.008, 5), +1, margin) == "equivalent"  # inside the margin comes first
    assert verdict(Interval(0.02, 0.005, 0.035, 5), +1, margin) == "agrees"
    assert verdict(Interval(0.0, -0.012, 0.012, 5), +1, margin) == "inconclusive"
    assert verdict(Interval(0.05, 0.05, 0.05, 2), +1, margin) == "inconclusive"  # no spread: nothing to read
    assert set(DECIDED) == {"agrees", "disagrees", "equivalent"}


@pytest.mark.parametrize("text, rule", [("3", (3, 3)), (" 3..10 ", (3, 10)), ("4..4", (4, 4))])
def test_the_seed_rule_grammar(text, rule):
    parsed = SeedRule.parse(text, 0.01)
    assert (parsed.low, parsed.high) == rule and parsed.sequential == (rule[0] < rule[1])


@pytest.mark.parametrize("text, margin, message", [
    ("5..3", 0.01, "the maximum 3 is below the minimum 5"),
    ("1..5", 0.01, "starts from at least 2 seeds"),
    ("three", 0.01, "give a number"),
    ("0", 0.01, "at least 1 seed"),
    ("3..10", 0.0, "margin must be above 0"),
])
def test_bad_seed_rules_are_one_clear_error(text, margin, message):
    with pytest.raises(ValueError, match=message):
        SeedRule.parse(text, margin)


def test_the_command_line_refuses_bad_rules_before_training(tmp_path, capsys, monkeypatch):
    from selfsup_clusters.training import trainer

    monkeypatch.setattr(trainer, "train", lambda *a, **k: pytest.fail("trained"))
    for argv, message in ((["--seeds", "5..3"], "maximum 3 is below the minimum 5"),
                          (["--seeds", "3..5", "claims.margin=-0.01"], "margin"),
                          (["--seeds", "3..5", "--methods", "simclr"], None)):
        if message is None:  # tune and analyze take a fixed number of seeds
            status = main(["tune", "--method", "simclr", "--grid", "optim.lr=0.1", "--seeds", "3..5",
                           "--out", str(tmp_path / "t")])
            message = "tune trains a fixed number of seeds"
        else:
            status = main(["compare", *argv, "--out", str(tmp_path / "c")])
        err = capsys.readouterr().err
        assert status == 2 and message in err and len(err.strip().splitlines()) == 1


def test_a_folder_keeps_its_seed_rule(tmp_path):
    hold_rule(tmp_path, SeedRule(3, 8, 0.01))
    hold_rule(tmp_path, SeedRule(3, 8, 0.01))  # the same rule continues
    for other in (SeedRule(3, 10, 0.01), SeedRule(3, 8, 0.02), SeedRule(3, 3, 0.01)):
        with pytest.raises(UserError, match="continue it with --seeds 3..8 claims.margin=0.01"):
            hold_rule(tmp_path, other)
    hold_rule(tmp_path / "fixed", SeedRule(3, 3, 0.01))
    assert not (tmp_path / "fixed").exists()  # a fixed number of seeds records nothing


def test_only_undecided_comparisons_get_more_seeds(tmp_path, monkeypatch):
    """far - base differs clearly from 3 seeds on; near - base has no true difference and a spread of 1 point, so
    it stays undecided to the cap; a decided entry trains no further seed."""
    rng = np.random.default_rng(0)
    noise = {seed: float(v) for seed, v in enumerate(rng.normal(0, 0.01, 20))}
    levels = {"base": 0.80, "far": 0.85, "near": 0.80}
    trained = []

    def fake_run(user, entry, seed, out, tag):
        trained.append((entry.method, seed))
        shift = noise[seed] if entry.method != "base" else 0.0
        return {"linear_top1": levels[entry.method] + shift + 0.001 * (entry.method == "far") * seed}

    monkeypatch.setattr(suite, "run_one", fake_run)
    base, far, near = Entry("base"), Entry("far"), Entry("near")
    rule = SeedRule(3, 6, 0.001)
    results, failures = train_until_decided(None, [base, far, near], [(far, base), (near, base)], rule, 0, tmp_path)
    seeds = {r.entry.method: sorted(r.finals) for r in results}
    assert not failures
    assert seeds["far"] == [0, 1, 2] and seeds["near"] == seeds["base"] == list(range(6))
    assert len(trained) == len(set(trained))  # nothing trained twice
