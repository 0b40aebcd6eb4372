#!/usr/bin/env bash
# The one prepared device check (issue #24): everything the first GPU session needs, in one command that ends
# within DEVICE_BUDGET_S (480 s) and writes its results to $OUT (default device_out/), at most 8 files:
#   summary.md    one row per step: status (ok, failed RC, timed out), seconds, log
#   setup.log     the bundle step (SMOKE) and its install into a fresh --target folder, the imports, nvidia-smi
#   tests.log     pytest -m cuda: every method's epoch with data on the device under bf16, resume, k-means on device
#                 features, export, the decoded cache on the device (tests/test_cuda.py)
#   bench.log, bench.json   `bench`: SimCLR and Cl-InfoNCE, resnet18 on 32 px CIFAR-shaped images (synthetic, 3
#                 channels, held on the device as uint8 and augmented there), batch 512, bf16: images/s, MFU against
#                 the bf16 peak measured in the same run, k-means and kNN times
#   claims.log, claims.tar.gz   claims --budget gpu --seeds 3 (claims.md/csv/png, each run's final.json, metrics)
# Each step runs under its share of the budget and is stopped (SIGINT, then SIGKILL) when it overruns it; what
# finished is still written, and the exit status is 1. claims gets what the earlier steps left; its runs live in
# $TMPDIR/selfsup-device/claims, so running the script again on the same (still warm) machine skips finished runs.
#
# On the GPU machine (no network; the bundle travels with the call):
#   here:   .venv/bin/python tools/device_bundle.py                  # wheels, Fashion-MNIST, WordNet subset
#   device: run(command="bash tools/device_check.sh", carry=["device_bundle"], timeout_s=540)
# Here, to check the script itself end to end on the CPU (tiny model, the CPU's own precision, the bundle built and
# installed, claims --budget smoke), in about 2 minutes (a budget of 150 s):
#   SMOKE=1 bash tools/device_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
smoke=${SMOKE:-0}
out=${OUT:-device_out}
bundle=${BUNDLE:-device_bundle}
budget=${DEVICE_BUDGET_S:-$([[ $smoke == 1 ]] && echo 150 || echo 480)}
python=${PYTHON:-}
[[ -n $python ]] || { [[ -x .venv/bin/python ]] && python=.venv/bin/python || python=python3; }
mkdir -p "$out"
work=${TMPDIR:-/tmp}/selfsup-device
rm -rf "$work/site"  # the bundle goes into a fresh --target folder every time
mkdir -p "$work"
start=$SECONDS
failed=0
export PYTHONUNBUFFERED=1 PYTHON=$python
printf '| step | status | seconds | log |\n|---|---|---|---|\n' > "$out/summary.md"

# step NAME SHARE_S LOG COMMAND...: run COMMAND with at most SHARE_S seconds (and no more than the budget leaves),
# its output in $out/LOG, and a row in summary.md.
step() {
  local name=$1 share=$2 log=$3 left status rc began=$SECONDS
  shift 3
  left=$((budget - (SECONDS - start) - 10))  # 10 s kept for packing the results
  ((share > left)) && share=$left
  if ((share < 5)); then
    printf '| %s | skipped: the budget is spent | 0 | - |\n' "$name" >> "$out/summary.md"
    failed=1
    return 1
  fi
  echo "== $name (at most ${share}s): $*" | tee -a "$out/$log"
  timeout --signal=INT --kill-after=15 "$share" "$@" >> "$out/$log" 2>&1
  rc=$?
  case $rc in 0) status=ok ;; 124|137) status="timed out after ${share}s" ;; *) status="failed ($rc)" ;; esac
  printf '| %s | %s | %d | %s |\n' "$name" "$status" $((SECONDS - began)) "$log" >> "$out/summary.md"
  ((rc == 0)) || failed=1
  echo "== $name: $status" | tee -a "$out/$log"
  return $rc
}

install_bundle() {
  [[ -d $bundle/wheels ]] || { echo "no $bundle/wheels: run tools/device_bundle.py here and carry $bundle"; return 1; }
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$work/site" \
    "$bundle"/wheels/*.whl || return 1
  # The bundle's copies must be the ones imported: the fresh --target comes first on the path.
  PYTHONPATH="$work/site:$PWD" "$python" -c "
import faiss, omegaconf, sys, torch
import selfsup_clusters
assert faiss.__file__.startswith('$work/site') and omegaconf.__file__.startswith('$work/site'), 'not the bundle'
print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available(),
      'faiss', faiss.__version__, 'omegaconf', omegaconf.__version__)"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv
  return 0
}

pack_claims() {  # the reports and each run's small files; checkpoints and event files stay behind
  [[ -d $work/claims ]] || return 0
  (cd "$work" && find claims -type f \( -name '*.md' -o -name '*.csv' -o -name '*.png' -o -name final.json \
     -o -name metrics.jsonl -o -name config.yaml \) -print0 | tar -czf - --null -T -) > "$out/claims.tar.gz"
}

if [[ $smoke == 1 ]]; then
  step bundle 60 setup.log "$python" tools/device_bundle.py --out "$bundle"
  # a tiny model at the CPU's own precision: bf16 only where it is native (emulated, 10x slower, on AVX2 machines)
  bench=(--backbone test_resnet --batch-size 32 --steps 2 --warmup-steps 1 --kmeans-n 2000 --kmeans-ks 10
         --knn-train 2000 --knn-test 500 --precision auto model.proj_hidden_dim=64 model.proj_dim=32)
  claims=(--budget smoke --seeds 1 data.subset=128 data.test_subset=100)
  tests=(env SELFSUP_TEST_DEVICE=cpu)
  test_files=tests/test_cuda.py  # collecting the whole suite costs this CPU 10 s
else
  bench=(--backbone resnet18 --batch-size 512 --steps 50 --warmup-steps 10 --kmeans-ks 100,1000 --precision bf16)
  claims=(--budget gpu --seeds 3)
  tests=(env)
  test_files=tests
fi
export bundle work python
export -f install_bundle
step install 60 setup.log bash -c install_bundle
export PYTHONPATH="$work/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
data=(--data-root "$bundle/fashion-mnist" "clusters.wordnet_dir=$bundle/wordnet")
step tests "$([[ $smoke == 1 ]] && echo 45 || echo 150)" tests.log \
  "${tests[@]}" SELFSUP_DATA_ROOT="$bundle/fashion-mnist" \
  "$python" -m pytest -m cuda -q -p no:cacheprovider --basetemp "$work/pytest" "$test_files"
step bench "$([[ $smoke == 1 ]] && echo 30 || echo 90)" bench.log \
  "$python" -m selfsup_clusters bench --methods simclr,cl-infonce --clusters labels --dataset synthetic --channels 3 \
  --image-size 32 --out "$out/bench.json" "${bench[@]}"
step claims "$budget" claims.log "$python" -m selfsup_clusters claims "${claims[@]}" --out "$work/claims" "${data[@]}"
pack_claims
cat "$out/summary.md"
echo "total $((SECONDS - start)) s; results in $out"
exit $failed
