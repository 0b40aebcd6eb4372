"""The method registry is the one list of methods: each method's options are its own typed dataclass (checked,
recorded alone), and the `--method` help, the `methods` table and every method table in the docs come from it."""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from pathlib import Path

import pytest

from selfsup_clusters.cli import build_parser
from selfsup_clusters.config import to_dict
from selfsup_clusters.core.errors import UserError
from selfsup_clusters.methods.base import NoOptions
from selfsup_clusters.methods.registry import METHODS, method_options, methods_markdown, methods_table, option_names
from selfsup_clusters.recipes import load_config
from tools import method_docs

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_declares_what_the_base_class_asks(name):
    kind = METHODS[name]
    assert kind.name == name and kind.learns_from and kind.reference
    assert is_dataclass(kind.Options) and issubclass(kind.Options, NoOptions)
    assert kind.Options().check() is None  # its defaults are usable
    assert not any(key.startswith("method_args.") for key in kind.recipe), "defaults of options live in Options"
    assert not (kind.needs_cluster_spec and kind.makes_clusters)


@pytest.mark.parametrize("name", list(METHODS))
def test_a_config_records_the_chosen_methods_options_only(name):
    cfg = load_config(overrides=[f"method={name}", "method_args.queue_size=64", "method_args.key_queue=8"])
    assert isinstance(cfg.method_args, METHODS[name].Options)
    assert list(to_dict(cfg)["method_args"]) == option_names(METHODS[name])  # another method's key is left to it


def test_an_unknown_option_names_the_method_its_options_and_the_nearest_name():
    with pytest.raises(UserError) as error:
        load_config(overrides=["method=moco", "method_args.queue_sise=8"])
    message = str(error.value)
    assert "method_args.queue_sise: method 'moco' has no such option; did you mean method_args.queue_size?" in message
    assert "(its options: temperature, base_temperature, momentum, queue_size, symmetric, shuffle_bn_splits)" in message
    with pytest.raises(UserError, match="method 'ce' has no such option.*its options: none"):
        method_options("ce", {"nonsense": 1})
    with pytest.raises(UserError, match="method_args.queue_size must be >= 1"):
        method_options("moco", {"queue_size": 0})
    with pytest.raises(UserError, match="method_args"):
        method_options("moco", {"queue_size": "many"})


def test_the_defaults_and_recipes_are_the_ones_each_method_trained_with_before():
    defaults = {name: dict(zip(option_names(kind), (getattr(kind.Options(), f.name) for f in fields(kind.Options)),
                               strict=True)) for name, kind in METHODS.items()}
    assert defaults["simclr"] == {"temperature": 0.5, "base_temperature": None}
    assert defaults["cl-infonce"] == {"temperature": 0.1, "base_temperature": None, "key_queue": 0}
    assert defaults["moco"] == {"temperature": 0.2, "base_temperature": None, "momentum": 0.99, "queue_size": 4096,
                                "symmetric": False, "shuffle_bn_splits": 4}
    assert defaults["pcl"] == {**defaults["moco"], "proto_negatives": 16384}
    assert defaults["ce"] == defaults["supervised"] == {}


def test_the_method_help_and_every_method_table_in_the_docs_come_from_the_registry():
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    method_help = next(action.help for action in train._actions if "--method" in action.option_strings)
    assert method_help.startswith(", ".join(METHODS))
    assert method_docs.rewrite(ROOT) == [], "the method tables in the docs are stale: python tools/method_docs.py"
    assert methods_markdown(options=False) in (ROOT / "README.md").read_text()
    assert methods_markdown() in (ROOT / "docs/training.md").read_text()
    assert f"$ selfsup-clusters methods\n{methods_table()}\n```" in (ROOT / "docs/recipes.md").read_text()


def test_the_docs_tool_rewrites_a_stale_table_in_place(tmp_path):
    for doc in method_docs.DOCS:
        (tmp_path / doc).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / doc).write_text((ROOT / doc).read_text())
    readme = tmp_path / "README.md"
    readme.write_text(readme.read_text().replace(f"| `{next(iter(METHODS))}` |", "| `old-name` |"))
    assert method_docs.rewrite(tmp_path, write=True) == ["README.md"]
    assert readme.read_text() == (ROOT / "README.md").read_text() and method_docs.rewrite(tmp_path) == []


def test_help_opens_with_text_for_users():
    assert build_parser().description.startswith("Self-supervised representation learning")
    assert "This file" not in build_parser().format_help()
