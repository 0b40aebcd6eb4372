#!/usr/bin/env bash
# The GPU benchmark (issue #7; the bench step of tools/device_check.sh, which runs everything the first GPU session
# needs): SimCLR and cl-infonce, resnet18 on 32 px CIFAR-shaped images (synthetic, 3 channels, held on the device as
# uint8 and augmented there), batch 512, bf16 autocast; prints images/s and MFU against the bf16 peak measured in
# the same run and writes bench_out/gpu_check.json (or $BENCH_JSON). About a minute on one GPU.
#
#   bash tools/gpu_check.sh            # on the GPU machine
#   SMOKE=1 bash tools/gpu_check.sh    # seconds, any machine: a tiny model, to check the script itself
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
[[ -x $python ]] || python=python3

if [[ ${SMOKE:-0} == 1 ]]; then
  # The CPU's own precision: bf16 only where it is native (it is emulated, 10x slower, on AVX2 machines).
  size=(--backbone test_resnet --batch-size 32 --steps 2 --warmup-steps 1 --kmeans-n 2000 --kmeans-ks 10
        --knn-train 2000 --knn-test 500 --precision auto model.proj_hidden_dim=64 model.proj_dim=32)
else
  size=(--backbone resnet18 --batch-size 512 --steps 50 --warmup-steps 10 --kmeans-ks 100,1000 --precision bf16)
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv || true
"$python" -m selfsup_clusters bench --methods simclr,cl-infonce --clusters labels --dataset synthetic --channels 3 \
  --image-size 32 --out "${BENCH_JSON:-bench_out/gpu_check.json}" "${size[@]}"
