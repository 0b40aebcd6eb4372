"""Shared fixtures: tiny, fast, offline runs on the first few hundred Fashion-MNIST images."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

from selfsup_clusters.clusters.wordnet import DEFAULT_WORDNET_DIR
from selfsup_clusters.data.fashion_mnist import DEBIAN_ROOT

# Tests that need Debian's data skip without it, with a reason starting with MISSING_DATA. Where the data must be
# there (CI installs it: CI=true, or SELFSUP_REQUIRE_DATA=1), such a skip fails the run instead (see the hooks below).
MISSING_DATA = "Debian's data is missing:"
REQUIRE_DATA = os.environ.get("SELFSUP_REQUIRE_DATA") == "1" or os.environ.get("CI", "").lower() == "true"

HAS_FASHION_MNIST = Path(DEBIAN_ROOT, "train-images-idx3-ubyte.gz").is_file()
HAS_WORDNET = Path(DEFAULT_WORDNET_DIR, "data.noun").is_file()
FASHION_MNIST_MISSING = f"{MISSING_DATA} dataset-fashion-mnist is not installed (run the README's set-up)"
WORDNET_MISSING = (f"{MISSING_DATA} wordnet-base is not installed ({DEFAULT_WORDNET_DIR}/data.noun; "
                   "run the README's set-up)")
needs_fashion_mnist = pytest.mark.skipif(not HAS_FASHION_MNIST, reason=FASHION_MNIST_MISSING)
needs_wordnet = pytest.mark.skipif(not HAS_WORDNET, reason=WORDNET_MISSING)

# Skip reasons that mean "Debian's data is not installed" (tests/test_clusters.py words its WordNet skip its own way).
DATA_SKIP_REASONS = (MISSING_DATA, "WordNet 3.0 not installed", "dataset-fashion-mnist is not installed")
_data_skips: list[str] = []


def pytest_runtest_logreport(report):
    if report.skipped and isinstance(report.longrepr, tuple):
        reason = str(report.longrepr[2])
        if any(marker in reason for marker in DATA_SKIP_REASONS):
            _data_skips.append(report.nodeid)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A test that stops on the trainer's "WordNet is not installed" error without saying it needs WordNet is
    reported as skipped for missing data (and so fails the run where the data is required), not as an error."""
    outcome = yield
    report = outcome.get_result()
    if not HAS_WORDNET and call.excinfo is not None and "wordnet-base" in str(call.excinfo.value):
        report.outcome = "skipped"
        report.longrepr = (str(item.path), item.location[1] or 0, f"Skipped: {WORDNET_MISSING}")


def pytest_sessionfinish(session, exitstatus):
    if REQUIRE_DATA and _data_skips:
        more = " ..." if len(_data_skips) > 5 else ""
        print(f"\n{len(_data_skips)} tests skipped for missing Debian data, which this run requires "
              f"(CI=true or SELFSUP_REQUIRE_DATA=1): {', '.join(_data_skips[:5])}{more}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# A few hundred images, a tiny timm ResNet, no progress bars: a 2-epoch run takes a few seconds. device=cpu: tests
# compare runs exactly, which CUDA's nondeterministic kernels would not reproduce. precision=fp32: the same
# arithmetic on every CPU kind (configs/fashion_mnist.yaml's `auto` is bf16 where the CPU computes it natively).
TINY = [
    "device=cpu",
    "precision=fp32",
    "model.backbone=test_resnet",
    "model.proj_hidden_dim=64",
    "model.proj_dim=32",
    "data.subset=256",
    "data.test_subset=200",
    "batch_size=64",
    "epochs=2",
    "eval.knn_k=20",
    "log.progress=false",
    "log.every_steps=1",
]


def every_method(extras: dict[str, list[str]], spec: str = "kmeans:8", slow_but: tuple[str, ...] | None = None):
    """pytest params of every registered method, for a test of a property all methods must have: `method=NAME`
    plus `extras[NAME]` where the test sizes that method (small queues, its clusters), else its defaults with
    `clusters.spec=SPEC` when it needs clusters. A method added to the registry gets the test without editing it.
    `slow_but`: only these run by default; the others are marked slow (`-m slow`)."""
    from selfsup_clusters.methods.registry import METHODS

    unknown = set(extras) - set(METHODS)
    assert not unknown, f"settings for methods the registry does not hold: {unknown}"
    params = []
    for name, kind in METHODS.items():
        default = [f"clusters.spec={spec}"] if kind.needs_cluster_spec else []
        marks = [pytest.mark.slow] if slow_but is not None and name not in slow_but else []
        params.append(pytest.param(name, [f"method={name}", *extras.get(name, default)], id=name, marks=marks))
    return params


@pytest.fixture
def tiny_overrides(tmp_path):
    return [*TINY, f"out={tmp_path / 'run'}"]


def metrics(run_dir):
    """The run's metrics.jsonl as a list of dicts."""
    import json

    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@contextlib.contextmanager
def interrupting_after_a_checkpoint(monkeypatch):
    """Within the block, training stops (as by Ctrl-C) right after it writes a checkpoint."""
    from selfsup_clusters.training import trainer

    real_save = trainer.save_checkpoint

    def save_then_interrupt(state, path):
        real_save(state, path)
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(trainer, "save_checkpoint", save_then_interrupt)
        yield


def interrupted_run(overrides, monkeypatch):
    """Train with `overrides`, interrupted (as by Ctrl-C) right after the first epoch's checkpoint."""
    from selfsup_clusters.core.errors import UserError
    from selfsup_clusters.recipes import load_config
    from selfsup_clusters.training import trainer

    with interrupting_after_a_checkpoint(monkeypatch), pytest.raises(UserError, match="--resume"):
        trainer.train(load_config(overrides=overrides))
