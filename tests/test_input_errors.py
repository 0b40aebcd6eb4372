"""Bad input that must end in one error line, not a traceback or a silently different run: a --config file that is
not YAML or not a mapping, and a command-line flag that contradicts a key=value."""

from __future__ import annotations

import pytest

from selfsup_clusters.cli import main
from selfsup_clusters.config import Config, read_config
from selfsup_clusters.core.errors import UserError
from tests.conftest import TINY, needs_fashion_mnist, needs_wordnet


@pytest.mark.parametrize("text, message", [
    ("epochs: [1, 2\n", ", line 2, column 1: not valid YAML: expected ',' or ']', but got '<stream end>' (while "
                        "parsing a flow sequence that starts at line 1, column 9)"),
    ("epochs: 1\n  batch_size: 3\n", ", line 2, column 13: not valid YAML: mapping values are not allowed here"),
    ("epochs: 1\nepochs: 2\n", ", line 2, column 1: not valid YAML: found duplicate key epochs"),
    ("# a list\n- a\n- b\n", ", line 2: the top level is a list, not a mapping; a config file holds key: value lines"),
    ("42\n", ", line 1: the top level is a single value ('42'), not a mapping"),
    ("epochs: 1\neval:\n  at: {a: 1}\n", ", line 3: eval.at is a mapping here, but it must be a list"),
    ("data: [1, 2]\n", ", line 1: data is a list here, but it must be a mapping"),
])
def test_a_config_file_that_is_not_a_yaml_mapping_is_one_error_naming_file_and_line(tmp_path, capsys, text, message):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    with pytest.raises(UserError) as error:
        read_config(config)
    assert str(error.value).startswith(f"{config}{message}"), error.value
    assert main(["train", "--config", str(config), "--print-config"]) == 2
    err = capsys.readouterr().err
    assert err == f"selfsup-clusters: error: {error.value}\n", err


def test_a_config_file_that_is_not_utf8_names_the_line(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_bytes(b"epochs: 1\nout: \xff\n")
    with pytest.raises(UserError, match=r"bad\.yaml, line 2: byte 0xff is not UTF-8 text"):
        read_config(config)


def test_an_empty_config_file_is_the_defaults(tmp_path):
    config = tmp_path / "empty.yaml"
    config.write_text("# nothing set\n")
    assert read_config(config) == Config()


@pytest.mark.parametrize("argv, message", [
    (["--epochs", "2", "epochs=1"], "--epochs 2 conflicts with epochs=1"),
    (["data.name=cifar10", "--dataset", "fashion-mnist"], "--dataset fashion-mnist conflicts with data.name=cifar10"),
    (["--download", "data.download=false"], "--download conflicts with data.download=false"),
])
def test_a_flag_that_contradicts_a_key_value_is_one_error_naming_both(tmp_path, capsys, argv, message):
    assert main(["train", *argv, "--out", str(tmp_path / "run"), "--print-config"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert not (tmp_path / "run").exists()


def test_a_flag_that_agrees_with_a_key_value_is_fine(tmp_path, capsys):
    assert main(["train", "--epochs", "2", "epochs=2", "--download", "data.download=true", "--out",
                 str(tmp_path / "run"), "--print-config"]) == 0
    assert "epochs: 2" in capsys.readouterr().out


@needs_fashion_mnist
@needs_wordnet
def test_a_wordnet_level_deeper_than_every_class_stops_before_training(tmp_path, capsys):
    assert main(["train", *TINY, "--clusters", "wordnet:99", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err == ("selfsup-clusters: error: wordnet:99 is deeper than every class: the deepest class ('T-shirt/top') "
                   "is at depth 10, so wordnet:10 is the deepest useful level; use wordnet:1..10\n"), err
