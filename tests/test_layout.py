"""The repository's layout: top-level `configs/` and `baselines/` are links into the package, which installs as
`selfsup_clusters` alone (no top-level `baselines` package), and the CSV loader's functions stay short."""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

from setuptools import find_packages

from tests.test_structure import long_functions

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "selfsup_clusters"


def test_top_level_baselines_and_configs_are_relative_links_into_the_package():
    for name, target in (("baselines", "methods/baselines"), ("configs", "configs")):
        link = ROOT / name
        assert link.is_symlink() and os.readlink(link) == f"selfsup_clusters/{target}", name  # relative: any checkout
    assert (ROOT / "baselines" / "moco.py").resolve() == (PACKAGE / "methods" / "baselines" / "moco.py").resolve()
    assert sorted(p.name for p in (ROOT / "baselines").glob("*.py")) == \
        sorted(p.name for p in (PACKAGE / "methods" / "baselines").glob("*.py"))


def test_package_discovery_installs_the_package_only():
    text = (ROOT / "pyproject.toml").read_text()
    found = re.search(r"^\[tool\.setuptools\.packages\.find\]\s*\ninclude\s*=\s*(\[[^\]]*\])", text, re.M)
    assert found, "pyproject.toml names the packages to install under [tool.setuptools.packages.find]"
    packages = find_packages(where=str(ROOT), include=ast.literal_eval(found.group(1)))
    assert "selfsup_clusters.methods.baselines" in packages  # discovery sees the package (through the link as well)
    assert all(p == "selfsup_clusters" or p.startswith("selfsup_clusters.") for p in packages), packages


def test_no_function_in_the_data_loaders_is_over_60_lines():
    assert long_functions(PACKAGE / "data") == []
