#!/usr/bin/env bash
# Sets up selfsup-clusters on Debian/Ubuntu with Python >= 3.10 (3.11 on Debian 12):
#   - Debian's dataset-fashion-mnist and wordnet-base (and python3-venv) where missing, with sudo when not root;
#   - a virtual environment .venv with the project installed editable, with its test tools.
# Re-running is cheap: the Python install is skipped while pyproject.toml is unchanged.
# SELFSUP_GPU=1 swaps faiss-cpu for faiss-gpu (CUDA 12).
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
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
stamp=".venv/.selfsup-installed-$(sha1sum pyproject.toml | cut -c1-12)${SELFSUP_GPU:+-gpu}"
if [ ! -f "$stamp" ]; then
    echo "setup: installing Python packages into .venv (PyTorch first; about a minute from a local wheel cache)"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1
    .venv/bin/python -m pip install -q -e ".[test]"
    if [ -n "${SELFSUP_GPU:-}" ]; then
        .venv/bin/python -m pip uninstall -q -y faiss-cpu
        .venv/bin/python -m pip install -q -e ".[gpu,test]"
    fi
    rm -f .venv/.selfsup-installed-*
    touch "$stamp"
fi
echo "setup: ready (.venv)"
