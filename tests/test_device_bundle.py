"""The device bundle (tools/device_bundle.py) and the device script (tools/device_check.sh): the size check, the
WordNet subset and its reader, the gathering itself offline, and `SMOKE=1` of the script end to end (slow)."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from selfsup_clusters.clusters.assignments import ClusterError
from selfsup_clusters.clusters.wordnet import FASHION_MNIST_SYNSETS, WordNet, load_wordnet
from selfsup_clusters.core.errors import UserError
from tests.conftest import needs_fashion_mnist, needs_wordnet
from tools import device_bundle

REPO = Path(__file__).resolve().parent.parent
MIB = 1 << 20


def test_the_size_check_refuses_a_bundle_over_the_limit(tmp_path):
    (tmp_path / "wheels").mkdir()
    (tmp_path / "wheels" / "big.whl").write_bytes(b"\0" * (3 * MIB - 2000))
    (tmp_path / "small.txt").write_bytes(b"\0" * 1000)  # with the tree, 1000 bytes under 4 MiB
    line = device_bundle.check_size(tmp_path, tree_bytes=MIB, limit_mib=5, spare=0.1)
    assert line.startswith("bundle 3.0 MiB + working tree 1.0 MiB = 4.0 MiB of 4.5 MiB allowed")
    with pytest.raises(UserError, match=r"4\.0 MiB of 3\.6 MiB allowed .* too large; .* \(largest: wheels/big.whl"):
        device_bundle.check_size(tmp_path, tree_bytes=MIB, limit_mib=4, spare=0.1)  # fits 4 MiB, not with 10% spare


def test_pins_come_from_the_constraints_and_a_missing_one_is_named(tmp_path):
    assert set(device_bundle.pins(REPO / "constraints.txt")) == {"faiss-cpu", "omegaconf"}
    (tmp_path / "c.txt").write_text("# comment\nfaiss-cpu==1.2.3  # why\n")
    with pytest.raises(UserError, match="pins no version of omegaconf"):
        device_bundle.pins(tmp_path / "c.txt")
    assert device_bundle.wheel_name("faiss-cpu", "1.2.3") == "faiss_cpu-1.2.3-"


@needs_wordnet
def test_a_wordnet_subset_gives_every_class_the_paths_of_the_whole_file():
    whole = load_wordnet()
    subset = whole.subset(FASHION_MNIST_SYNSETS.values())
    assert len(subset) < 50_000 and subset.count(b"\n") < 100  # of 15 MB and 82,000 synsets
    reader = WordNet(subset, "subset/data.noun")
    for offset in FASHION_MNIST_SYNSETS.values():
        assert reader.hypernym_path(offset) == whole.hypernym_path(offset)
        assert reader.lemmas(offset) == whole.lemmas(offset)
        for level in range(1, 12):
            assert reader.ancestor_at_depth(offset, level) == whole.ancestor_at_depth(offset, level)
    with pytest.raises(ClusterError, match="no noun synset at offset 02084071 in subset/data.noun"):
        reader.synset(2084071)  # dog: not reached by any Fashion-MNIST class


def fake_fashion_mnist(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for pair in device_bundle.FILES.values():
        for stem in pair:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(stem.encode()))
    return folder


@needs_wordnet
def test_the_bundle_gathers_pinned_wheels_data_and_wordnet_offline(tmp_path, capsys):
    out = tmp_path / "bundle"
    versions = device_bundle.pins(REPO / "constraints.txt")
    (out / "wheels").mkdir(parents=True)
    for name, version in versions.items():  # already downloaded: no network needed
        (out / "wheels" / f"{device_bundle.wheel_name(name, version)}py3-none-any.whl").write_bytes(b"wheel")
    (out / "wheels" / "omegaconf-0.1-py3-none-any.whl").write_bytes(b"an old version")
    source = fake_fashion_mnist(tmp_path / "fmnist")
    options = ["--out", str(out), "--fashion-mnist", str(source)]
    assert device_bundle.main(options) == 0
    assert "MiB allowed" in capsys.readouterr().out
    assert sorted(p.name for p in (out / "wheels").iterdir()) == sorted(
        f"{device_bundle.wheel_name(name, version)}py3-none-any.whl" for name, version in versions.items())
    assert sorted(p.name for p in (out / "fashion-mnist").iterdir()) == sorted(p.name for p in source.iterdir())
    assert WordNet((out / "wordnet" / "data.noun").read_bytes()).depth(FASHION_MNIST_SYNSETS["bag"]) >= 7
    assert device_bundle.main([*options, "--limit-mib", "0.5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "too large" in err


@pytest.mark.slow
@needs_fashion_mnist
@needs_wordnet
def test_the_device_script_runs_end_to_end_on_this_cpu(tmp_path):
    """SMOKE=1: the bundle built (pip download once; wheels already in device_bundle/ are reused) and installed
    into a fresh --target, the CUDA tests on the CPU, the benchmark and claims at the smoke budget."""
    bundle = tmp_path / "bundle"
    if (REPO / "device_bundle" / "wheels").is_dir():
        shutil.copytree(REPO / "device_bundle" / "wheels", bundle / "wheels")
    env = {**os.environ, "SMOKE": "1", "OUT": str(tmp_path / "out"), "BUNDLE": str(bundle),
           "PYTHON": sys.executable, "TMPDIR": str(tmp_path)}
    done = subprocess.run(["bash", str(REPO / "tools" / "device_check.sh")], env=env, capture_output=True,
                          text=True, timeout=300)
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for step in ("bundle", "install", "tests", "bench", "claims"):
        assert f"| {step} | ok |" in summary, summary
    assert (tmp_path / "out" / "claims.tar.gz").stat().st_size > 0
    assert "not the bundle" not in (tmp_path / "out" / "setup.log").read_text()
