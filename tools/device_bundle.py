"""Gather what the GPU machine lacks into one ignored folder that the device run tool carries (`carry: [BUNDLE]`).

    .venv/bin/python tools/device_bundle.py [--out device_bundle] [--python-version 3.12] [--limit-mib 64]

That machine has Python 3.12 with torch, torchvision, timm, tensorboard, scikit-learn, tqdm, matplotlib, safetensors,
PyYAML and pytest, but no FAISS, no OmegaConf, no Debian data and no network, and one call carries at most 64 MiB
(the working tree included). The bundle:

    wheels/              faiss-cpu and omegaconf at constraints.txt's pins (`pip download`, manylinux x86_64 wheels
                         for --python-version; faiss-cpu's is abi3), kept across runs: re-running needs no network
    fashion-mnist/       the four IDX .gz files (--fashion-mnist, default Debian's), for --data-root
    wordnet/data.noun    the lines of WordNet 3.0's data.noun that Fashion-MNIST's classes (and --wnids) and all their
                         ancestors reach (a few KB of the 15 MB), for clusters.wordnet_dir; the reader accepts it

The bundle and the working tree that travels with it (tracked and untracked, not ignored files) must fit within
--limit-mib less --spare (10%) of it; a larger bundle is refused with one line naming what to cut.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from selfsup_clusters.clusters.wordnet import (  # noqa: E402
    DEFAULT_WORDNET_DIR,
    FASHION_MNIST_SYNSETS,
    load_wordnet,
    synset_for_wnid,
)
from selfsup_clusters.core.errors import UserError  # noqa: E402
from selfsup_clusters.core.files import atomic_write  # noqa: E402
from selfsup_clusters.data.fashion_mnist import DEBIAN_ROOT, FILES  # noqa: E402

WHEELS = ("faiss-cpu", "omegaconf")  # what the GPU machine lacks (PyYAML and packaging, omegaconf's needs, it has)
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
MIB = 1 << 20


def pins(constraints: Path, names: tuple[str, ...] = WHEELS) -> dict[str, str]:
    """name -> version of `names` in a pip constraints file (`name==version` lines)."""
    found = {}
    for line in constraints.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)==([^\s#;]+)", line.strip())
        if match and match.group(1).lower() in names:
            found[match.group(1).lower()] = match.group(2)
    missing = [name for name in names if name not in found]
    if missing:
        raise UserError(f"{constraints} pins no version of {', '.join(missing)}; add name==version lines")
    return found


def wheel_name(name: str, version: str) -> str:
    """The file-name prefix of a wheel (`faiss_cpu-1.15.1-`): names normalised as wheel files spell them."""
    return f"{re.sub(r'[-_.]+', '_', name).lower()}-{version}-"


def fetch_wheels(folder: Path, versions: dict[str, str], python_version: str) -> list[Path]:
    """The pinned wheels in `folder`, downloaded where missing; other versions there are removed (two versions
    of one package stop `pip install --no-index` there)."""
    folder.mkdir(parents=True, exist_ok=True)
    prefixes = [wheel_name(name, version) for name, version in versions.items()]
    for stale in folder.glob("*.whl"):
        if not any(stale.name.lower().startswith(prefix) for prefix in prefixes):
            stale.unlink()
    needed = [f"{name}=={version}" for (name, version), prefix in zip(versions.items(), prefixes, strict=True)
              if not any(w.name.lower().startswith(prefix) for w in folder.glob("*.whl"))]
    if needed:
        platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
        command = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--no-deps",
                   "--implementation", "cp", "--python-version", python_version, *platforms, "-d", str(folder),
                   *needed]
        if subprocess.run(command).returncode != 0:
            raise UserError(f"pip could not download {' '.join(needed)} (network to PyPI needed once; the wheels "
                            f"are kept in {folder} after that)")
    return sorted(folder.glob("*.whl"))


def copy_fashion_mnist(source: Path, folder: Path) -> list[Path]:
    copied = []
    for stem in (stem for pair in FILES.values() for stem in pair):
        found = next((p for p in (source / f"{stem}.gz", source / stem) if p.is_file()), None)
        if found is None:
            raise UserError(f"Fashion-MNIST's {stem}.gz is not in {source}; install dataset-fashion-mnist or pass "
                            "--fashion-mnist DIR")
        target = folder / found.name
        if not target.is_file() or target.stat().st_size != found.stat().st_size:
            atomic_write(target, lambda f, found=found: f.write(found.read_bytes()))
        copied.append(target)
    return copied


def write_wordnet_subset(wordnet_dir: str, folder: Path, wnids: list[str]) -> Path:
    """data.noun holding only the synsets of Fashion-MNIST's classes and `wnids`, with all their ancestors."""
    offsets = [*FASHION_MNIST_SYNSETS.values(), *(synset_for_wnid(wnid) for wnid in wnids)]
    lines = load_wordnet(wordnet_dir).subset(offsets)
    atomic_write(folder / "data.noun", lambda f: f.write(lines))
    return folder / "data.noun"


def travelling_tree_bytes(repo: Path = REPO) -> int:
    """Bytes of the working tree a device call sends besides carried paths: tracked files and untracked ones git
    does not ignore."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=repo,
                            capture_output=True, check=True).stdout.split(b"\0")
    return sum((repo / name.decode()).stat().st_size for name in listed if name and (repo / name.decode()).is_file())


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def check_size(bundle: Path, tree_bytes: int, limit_mib: float = 64, spare: float = 0.1) -> str:
    """One line with the sizes; a UserError when the bundle and the tree exceed `limit_mib` less `spare` of it."""
    size = folder_bytes(bundle)
    allowed = limit_mib * (1 - spare) * MIB
    line = (f"bundle {size / MIB:.1f} MiB + working tree {tree_bytes / MIB:.1f} MiB = "
            f"{(size + tree_bytes) / MIB:.1f} MiB of {limit_mib * (1 - spare):.1f} MiB allowed "
            f"({limit_mib:g} MiB a call carries, {spare:.0%} kept spare)")
    if size + tree_bytes > allowed:
        largest = max((p for p in bundle.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
        raise UserError(f"{line}: too large; drop what the check does not need from {bundle} (largest: "
                        f"{largest.relative_to(bundle)}, {largest.stat().st_size / MIB:.1f} MiB)")
    return line


def build_bundle(args: argparse.Namespace) -> str:
    out = Path(args.out)
    wheels = fetch_wheels(out / "wheels", pins(REPO / "constraints.txt"), args.python_version)
    data = copy_fashion_mnist(Path(args.fashion_mnist), out / "fashion-mnist")
    wordnet = write_wordnet_subset(args.wordnet_dir, out / "wordnet", args.wnids)
    for path in (*wheels, *data, wordnet):
        print(f"{path.stat().st_size / MIB:8.2f} MiB  {path.relative_to(out)}")
    return check_size(out, travelling_tree_bytes(), args.limit_mib, args.spare)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(REPO / "device_bundle"), help="the bundle folder (default device_bundle)")
    parser.add_argument("--python-version", default="3.12", help="the GPU machine's Python (default 3.12)")
    parser.add_argument("--fashion-mnist", default=DEBIAN_ROOT, help=f"folder of the IDX .gz files ({DEBIAN_ROOT})")
    parser.add_argument("--wordnet-dir", default=DEFAULT_WORDNET_DIR, help="folder of WordNet 3.0's data.noun")
    parser.add_argument("--wnids", nargs="*", default=[], help="more classes' wnids to carry (e.g. n02084071)")
    parser.add_argument("--limit-mib", type=float, default=64, help="what one device call carries (default 64)")
    parser.add_argument("--spare", type=float, default=0.1, help="fraction of the limit kept free (default 0.1)")
    args = parser.parse_args(argv)
    try:
        print(build_bundle(args))
    except UserError as e:
        print(f"device_bundle: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
