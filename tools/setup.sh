#!/usr/bin/env bash
# Sets up selfsup-clusters on Debian/Ubuntu with Python >= 3.10 (3.11 on Debian 12):
#   - Debian's dataset-fashion-mnist and wordnet-base (and python3-venv) where missing, with sudo when not root;
#   - a virtual environment .venv with the project installed editable, with its test tools, at the exact versions
#     of constraints.txt (pyproject.toml itself declares ranges).
# Re-running is cheap: the Python install is skipped while pyproject.toml and the constraints are unchanged.
# SELFSUP_GPU=1 installs faiss-gpu-cu12 (CUDA 12) instead of faiss-cpu: exactly one FAISS either way.
# SELFSUP_TORCH=oldest builds .venv-oldest instead, with the oldest PyTorch pyproject.toml allows
# (constraints-oldest.txt), for CI to test that end of the range.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

need_debs=()
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || need_debs+=(dataset-fashion-mnist)
[ -f /usr/share/wordnet/data.noun ] || need_debs+=(wordnet-base)
"$PYTHON" -c "import ensurepip, venv" 2>/dev/null || need_debs+=(python3-venv)
if [ ${#need_debs[@]} -gt 0 ]; then
    if ! command -v apt-get >/dev/null; then
        echo "setup: missing ${need_debs[*]} and no apt-get here; install Fashion-MNIST's IDX files and WordNet 3.0" \
             "yourself and pass --data-root (see README)" >&2
        exit 1
    fi
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || { echo "setup: run as root or install sudo to get: ${need_debs[*]}" >&2; exit 1; }
        sudo="sudo"
    fi
    echo "setup: installing Debian packages ${need_debs[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need_debs[@]}" >/dev/null
fi

"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
    || { echo "setup: Python >= 3.10 needed, $("$PYTHON" --version) found; set PYTHON=python3.11" >&2; exit 1; }
venv=.venv
constraints=constraints.txt
case "${SELFSUP_TORCH:-}" in
    "") ;;
    oldest) venv=.venv-oldest ;;
    *) echo "setup: SELFSUP_TORCH=${SELFSUP_TORCH} is unknown; leave it unset or use SELFSUP_TORCH=oldest" >&2; exit 1 ;;
esac
faiss=cpu other_faiss=faiss-gpu-cu12
[ -n "${SELFSUP_GPU:-}" ] && faiss=gpu other_faiss=faiss-cpu
[ -x "$venv/bin/python" ] || "$PYTHON" -m venv "$venv"
stamp="$venv/.selfsup-installed-$(cat pyproject.toml constraints.txt constraints-oldest.txt | sha1sum | cut -c1-12)-$faiss"
if [ ! -f "$stamp" ]; then
    if [ "$venv" = .venv-oldest ]; then
        constraints="$venv/constraints.txt"
        { grep -v -E '^(torch|torchvision)==' constraints.txt; cat constraints-oldest.txt; } > "$constraints"
    fi
    echo "setup: installing Python packages into $venv (PyTorch first; about a minute from a local wheel cache)"
    "$venv/bin/python" -m pip install -q --upgrade pip
    "$venv/bin/python" -m pip install -q -c "$constraints" torch torchvision
    # One FAISS per environment: both wheels install the same `faiss` module, so drop the other one first.
    if "$venv/bin/python" -m pip show -q "$other_faiss" 2>/dev/null; then
        "$venv/bin/python" -m pip uninstall -q -y "$other_faiss"
    fi
    "$venv/bin/python" -m pip install -q -c "$constraints" -e ".[$faiss,test]"
    rm -f "$venv"/.selfsup-installed-*
    touch "$stamp"
fi
echo "setup: ready ($venv)"
