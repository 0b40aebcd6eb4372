#!/usr/bin/env bash
# The validation-split search behind configs/claims_cpu.yaml (docs/claims.md, "How the cpu budget was sized" and
# "The unsupervised loop"): the first 8,000 training images with half held out (3,998 train, 4,000 validation),
# 6 epochs of the cpu budget's settings, seed 0. About 35 minutes on 2 CPU cores; re-running skips finished runs.
# The test set is never read.
set -euo pipefail
cd "$(dirname "$0")/.."
B=.venv/bin/selfsup-clusters
OUT=${OUT:-runs/claims_search}
S=(--config configs/claims_cpu.yaml --subset 8000 --epochs 6 data.val_fraction=0.5 eval.at=[])
# K, several K, an instance part, against SimCLR and PCL
$B compare --methods simclr,cl-infonce,pcl --out "$OUT/compare" "${S[@]}" \
  --clusters-for "cl-infonce=kmeans:80|kmeans:20|kmeans:400|kmeans:80@0.5+instance@0.5|kmeans:20,80,400,pcl=kmeans:80"
# the authors' k-means temperature, their clustering (fresh eval-mode pass, 5 restarts), a longer warm-up
$B tune --method cl-infonce --clusters kmeans:80 --grid method_args.temperature=0.2 --out "$OUT/tune_t" "${S[@]}"
$B tune --method cl-infonce --clusters kmeans:80 --grid clusters.features=forward --grid clusters.nredo=5 \
  --out "$OUT/tune_fwd" "${S[@]}"
$B tune --method cl-infonce --clusters kmeans:80 --grid clusters.warmup=2 --out "$OUT/tune_warm" "${S[@]}"
# a key queue of past embeddings
$B compare --methods cl-infonce --clusters-for "cl-infonce=kmeans:80|kmeans:400" --out "$OUT/queue" "${S[@]}" \
  method_args.key_queue=1024
# the budget's shape at the same samples seen: 4,000 images x 6 epochs against 8,000 x 3
$B compare --methods cl-infonce --clusters-for cl-infonce=wordnet:8 --out "$OUT/shape_4000x6" "${S[@]}"
$B compare --methods cl-infonce,simclr --clusters-for cl-infonce=wordnet:8 --out "$OUT/shape_8000x3" \
  --config configs/claims_cpu.yaml --subset 16000 --epochs 3 data.val_fraction=0.5 eval.at=[]
