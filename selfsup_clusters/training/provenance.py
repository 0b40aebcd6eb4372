"""What a reader needs to trust a run's numbers: package versions, the project's git commit, the machine, threads
and precision. The trainer records it in final.json ("environment") and in TensorBoard's text tab."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import torch

PACKAGES = ("torch", "torchvision", "timm", "numpy", "safetensors")
FAISS_DISTRIBUTIONS = ("faiss-cpu", "faiss-gpu-cu12", "faiss-gpu-cu11", "faiss-gpu", "faiss")


def environment(device: torch.device, precision: str, world_size: int = 1) -> dict:
    commit, dirty = git_state()
    return {
        "selfsup_clusters": installed_version("selfsup-clusters"),  # pyproject.toml's version
        "git_commit": commit,  # None outside a git checkout of this project (e.g. installed from a wheel)
        "git_dirty": dirty,  # uncommitted changes to tracked files when the run started
        "python": platform.python_version(),
        "packages": {**{name: installed_version(name) for name in PACKAGES}, **faiss_version()},
        "platform": platform.platform(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "world_size": world_size,
        "precision": precision,
        "torch_cuda": torch.version.cuda,  # the CUDA version this torch build targets (None: a CPU build)
    }


def installed_version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def faiss_version() -> dict[str, str | None]:
    """{distribution: version} of the FAISS build installed (faiss-cpu or a GPU one), or {"faiss": None}."""
    for name in FAISS_DISTRIBUTIONS:
        version = installed_version(name)
        if version is not None:
            return {name: version}
    return {"faiss": None}


def cpu_fields() -> dict[str, str]:
    """The first CPU's fields in /proc/cpuinfo ("model name", "flags", "cpu MHz", ...); empty where there is none."""
    fields: dict[str, str] = {}
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return fields
    for line in lines:
        if not line.strip():
            break  # the end of the first CPU's block
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_name() -> str:
    return cpu_fields().get("model name") or platform.processor() or platform.machine()


PACKAGE = Path(__file__).resolve().parent.parent  # the selfsup_clusters folder this module is imported from


def git_state() -> tuple[str | None, bool | None]:
    """(commit, dirty) of the git checkout this package is imported from; (None, None) when it is not in one
    (or git is missing). A checkout that merely contains the install location (a venv inside some other
    repository) does not count: its top level must hold this very package."""
    package = PACKAGE
    try:
        top = _git(package, "rev-parse", "--show-toplevel")
        if top is None or (Path(top) / package.name).resolve() != package:
            return None, None
        status = _git(package, "status", "--porcelain", "--untracked-files=no")
        return _git(package, "rev-parse", "HEAD"), None if status is None else bool(status)
    except (OSError, subprocess.SubprocessError):
        return None, None


def _git(folder: Path, *args: str) -> str | None:
    done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=10)
    return done.stdout.strip() if done.returncode == 0 else None


def as_markdown(environment: dict) -> str:
    """A two-column table for TensorBoard's text tab."""
    rows = [("packages", ", ".join(f"{k} {v}" for k, v in value.items())) if key == "packages" else (key, value)
            for key, value in environment.items()]
    return "| | |\n|---|---|\n" + "\n".join(f"| {key} | {value} |" for key, value in rows)
