"""Property-based tests of the grammars a user types: the cluster spec, dotted key=value overrides, --seeds and
eval.at lists. Any string either parses or raises the project's one-line UserError - never another exception.
Derandomized (the same examples on every run, so CI is reproducible): 300 examples per string grammar, 120 where each
example loads a config. What it found, now fixed in config.merge_overrides: a value that is not YAML ("epochs=["),
an interpolation that does not fit its key ("seed=${epochs}[[") and an item of a list set alone ("eval.at.0=") each
ended in a traceback."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from selfsup_clusters.clusters.spec import ClusterSpec, parse_spec, split_spec_list
from selfsup_clusters.commands import seed_rule
from selfsup_clusters.core.errors import UserError
from selfsup_clusters.recipes import load_config

FUZZ = settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
CONFIG_FUZZ = settings(FUZZ, max_examples=120)  # each example loads a config (~20 ms)

# The grammars' own characters, so that most examples get past the first check, beside any text at all.
SPEC_WORDS = st.sampled_from(["none", "labels", "instance", "superclass", "wordnet", "attributes", "kmeans", "merge",
                              "split", ":", "+", "@", ",", "0", "1", "7", "25", "0.5", "-1", "1e9", "nan", "inf",
                              " ", "\t", "\n", "é", "٣", ""])
GRAMMAR_TEXT = st.lists(SPEC_WORDS, max_size=8).map("".join)
ANY_TEXT = st.text(max_size=40)
OVERRIDE_KEYS = st.sampled_from(["epochs", "batch_size", "seed", "method", "optim.lr", "eval.at", "clusters.spec",
                                 "data.subset", "augment.crop_scale", "model", "optim", "nosuch.key", "eval.at.0",
                                 "", " ", "epochs.x", "data..name", "claims.synthetic", "precision"])
VALUE_WORDS = st.sampled_from(["1", "0", "-3", "2.5", "1e400", "nan", "null", "~", "true", "[", "]", "[1,2]", "{",
                               "}", "a: 1", ",", "'", '"', "${", "${epochs}", "simclr", "\\", "=", ":", " ", "é",
                               "\x00", "[[1]]", "{a: 1}", "- 1", "&a", "*a", "!!python/object"])
VALUES = st.lists(VALUE_WORDS, max_size=5).map("".join) | ANY_TEXT


def parses_or_user_error(parse, text) -> None:
    try:
        parse(text)
    except UserError as e:
        message = str(e)
        assert message.strip() and "\n" not in message.strip(), repr(message)


@FUZZ
@given(GRAMMAR_TEXT | ANY_TEXT)
def test_any_cluster_spec_parses_or_is_one_user_error(text):
    parses_or_user_error(parse_spec, text)
    try:
        spec = parse_spec(text)
    except UserError:
        return
    assert parse_spec(str(spec)) == spec and isinstance(spec, ClusterSpec)  # the canonical text round-trips
    for item in split_spec_list(text):
        parses_or_user_error(parse_spec, item)


@CONFIG_FUZZ
@given(OVERRIDE_KEYS, VALUES)
def test_any_dotted_override_loads_or_is_one_user_error(key, value):
    parses_or_user_error(lambda item: load_config(overrides=[item]), f"{key}={value}")


@CONFIG_FUZZ
@given(ANY_TEXT)
def test_any_override_text_loads_or_is_one_user_error(item):
    parses_or_user_error(lambda text: load_config(overrides=[text]), item)


@CONFIG_FUZZ
@given(st.lists(st.sampled_from(["1", "2", "3", "0", "-1", "99", "1.5", "x", "null", "[", "]", ",", " ", "'1'"]),
                max_size=8).map("".join))
def test_any_eval_at_list_loads_or_is_one_user_error(items):
    parses_or_user_error(lambda text: load_config(overrides=["epochs=3", f"eval.at=[{text}]"]), items)


@FUZZ
@given(st.lists(st.sampled_from(["1", "3", "10", "0", "..", ".", " ", "-", "x", "٣", "99999999999999999999"]),
                max_size=6).map("".join) | ANY_TEXT, st.sampled_from([0.01, 0.0, -1.0]))
def test_any_seeds_text_parses_or_is_one_user_error(text, margin):
    parses_or_user_error(lambda t: seed_rule(t, margin), text)
