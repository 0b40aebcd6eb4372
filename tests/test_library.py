"""selfsup-clusters as a library: the README's Python snippet runs, the public API, the package metadata (ranges,
one FAISS, configs as package data), a non-editable install that trains from another folder, and DDP's buffer
argument on old and new PyTorch."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

import selfsup_clusters
from tests.conftest import TINY, needs_fashion_mnist, needs_wordnet

ROOT = Path(__file__).resolve().parent.parent


def readme_snippet() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Use it from Python"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@needs_fashion_mnist
@needs_wordnet
def test_the_readmes_python_snippet_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(readme_snippet(), "README.md", "exec"), {})
    final = json.loads((tmp_path / "runs" / "from-python" / "final.json").read_text())
    assert final["config"]["method"] == "cl-infonce" and final["config"]["clusters"]["spec"] == "wordnet:8"
    assert 0 <= final["knn_top1"] <= 1 and 0 <= final["linear_top1"] <= 1


def test_every_public_name_resolves_and_the_package_is_typed():
    for name in selfsup_clusters.__all__:
        assert getattr(selfsup_clusters, name) is not None and name in dir(selfsup_clusters)
    assert set(selfsup_clusters.__all__) == {"__version__", *selfsup_clusters._EXPORTS}
    assert (Path(selfsup_clusters.__file__).parent / "py.typed").is_file()
    with pytest.raises(AttributeError):
        selfsup_clusters.no_such_name  # noqa: B018


def pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def pins(path: Path) -> dict[str, Version]:
    lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    return {name.lower(): Version(version) for name, _, version in (line.partition("==") for line in lines if line)}


def test_pyproject_declares_ranges_whose_ends_ci_tests_and_one_faiss_per_extra():
    project = pyproject()["project"]
    requirements = {Requirement(r).name: Requirement(r) for r in project["dependencies"]}
    exact, oldest = pins(ROOT / "constraints.txt"), pins(ROOT / "constraints-oldest.txt")
    for name in ("torch", "torchvision"):
        specifier = requirements[name].specifier
        assert not any(s.operator == "==" for s in specifier), f"{name} is pinned in pyproject.toml: {specifier}"
        lower = next(Version(s.version) for s in specifier if s.operator == ">=")
        assert oldest[name] == lower, f"constraints-oldest.txt must test {name}'s lower bound {lower}"
        assert exact[name] in specifier and oldest[name] in specifier
    for name, version in exact.items():  # every exact version lies in the declared range
        if name in requirements:
            assert version in requirements[name].specifier, (name, version)
    assert not any(name.startswith("faiss") for name in requirements), "FAISS must be an extra, never a dependency"
    extras = project["optional-dependencies"]
    for extra, wanted in (("cpu", "faiss-cpu"), ("gpu", "faiss-gpu-cu12")):
        assert [Requirement(r).name for r in extras[extra] if r.startswith("faiss")] == [wanted]
    assert not any(r.startswith("faiss") for r in extras["test"])
    assert set(pyproject()["tool"]["setuptools"]["package-data"]["selfsup_clusters"]) >= {"configs/*.yaml",
                                                                                           "py.typed"}


def test_ddp_gets_the_buffer_argument_this_pytorch_has(monkeypatch):
    from torch import nn

    from selfsup_clusters.core import distributed

    class OldDistributedDataParallel:  # PyTorch 2.11's signature: no forward_sync_buffers yet
        def __init__(self, module, device_ids=None, output_device=None, dim=0, broadcast_buffers=True):
            pass

    new = distributed.no_buffer_sync()
    assert new == {"forward_sync_buffers": False} or Version(__import__("torch").__version__.split("+")[0]) < \
        Version("2.13")
    monkeypatch.setattr(nn.parallel, "DistributedDataParallel", OldDistributedDataParallel)
    assert distributed.no_buffer_sync() == {"broadcast_buffers": False}


@needs_fashion_mnist
def test_a_non_editable_install_trains_from_another_folder(tmp_path):
    source, target, elsewhere = tmp_path / "source", tmp_path / "site", tmp_path / "elsewhere"
    # a copy, so the build leaves no build/ folder in the checkout
    shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".*", "__pycache__", "*.egg-info", "runs", "bench_out", "build", "tests", "docs", "tools"))
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                              "--no-build-isolation", "--target", str(target), str(source)],
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    assert (target / "selfsup_clusters" / "configs" / "fashion_mnist.yaml").is_file()
    assert (target / "selfsup_clusters" / "py.typed").is_file()

    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "selfsup_clusters", *args], capture_output=True, text=True,
                              cwd=elsewhere, env=env, timeout=600)

    where = subprocess.run([sys.executable, "-c", "import selfsup_clusters; print(selfsup_clusters.__file__)"],
                           capture_output=True, text=True, cwd=elsewhere, env=env)
    assert where.stdout.startswith(str(target)), where.stdout + where.stderr  # the installed copy, not the checkout
    done = cli("train", *TINY, "epochs=1", "eval.linear=false", "eval.projector=0", "--out", "run")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert json.loads((elsewhere / "run" / "final.json").read_text())["config"]["data"]["name"] == "fashion-mnist"
    resumed = cli("train", "--resume", "run")  # finds its defaults too: stops only because the run is finished
    assert resumed.returncode == 2 and "already finished its 1 epochs" in resumed.stderr, resumed.stderr


def test_without_faiss_a_run_that_needs_it_stops_before_training(tmp_path, monkeypatch, capsys):
    import importlib.util

    from selfsup_clusters.cli import main

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "faiss" else
                        real_find_spec(name, *a))
    run = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(run)]) == 2  # the final cluster metrics need k-means
    err = capsys.readouterr().err
    assert "eval.cluster_metrics" in err and "pip install faiss-cpu" in err and err.count("\n") == 1, err
    assert not run.exists()
    assert main(["train", *TINY, "--method", "cl-infonce", "--clusters", "kmeans:8", "eval.cluster_metrics=false",
                 "--out", str(run)]) == 2
    assert "k-means clusters need FAISS" in capsys.readouterr().err
