"""Method comparison on Fashion-MNIST: every method with the same backbone, batch, epochs, seed and data, reporting
kNN top-1 and training images/s, plus raw-pixel kNN as the floor.

    python tools/bench_methods.py [--subset 20000] [--epochs 3] [--out bench_out/methods] [key=value ...]

Runs one training at a time (never two on a small machine); a run whose final.json exists is not redone, so an
interrupted benchmark continues where it stopped. Writes OUT/results.md and OUT/results.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from selfsup_clusters.config import load_config
from selfsup_clusters.data import load_dataset
from selfsup_clusters.evaluate import raw_pixel_knn
from selfsup_clusters.trainer import train

# (row name, method, clusters, extra overrides). k-means methods cluster from epoch 1 on: before that the memory
# bank holds only the features of a random network.
RUNS = [
    ("simclr", "simclr", "none", []),
    ("moco", "moco", "none", []),
    ("pcl kmeans:25,50,100", "pcl", "kmeans:25,50,100", ["clusters.warmup=1"]),
    ("cl-infonce wordnet:7 (3 clusters)", "cl-infonce", "wordnet:7", []),
    ("cl-infonce wordnet:8 (5 clusters)", "cl-infonce", "wordnet:8", []),
    ("cl-infonce wordnet:9 (9 clusters)", "cl-infonce", "wordnet:9", []),
    ("cl-infonce kmeans:100", "cl-infonce", "kmeans:100", ["clusters.warmup=1"]),
    ("ce wordnet:8 (5 clusters)", "ce", "wordnet:8", []),
    ("supervised (labels)", "supervised", "none", []),
]
KNN = ((200, 0.1), (20, 0.07))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subset", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", default="bench_out/methods")
    parser.add_argument("--only", help="comma-separated row names to run")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    out = Path(args.out)
    shared = [f"data.subset={args.subset}", f"epochs={args.epochs}", "eval.every=0", "log.progress=false",
              *args.overrides]
    rows = []
    for name, method, clusters, extra in RUNS:
        if args.only and name not in args.only.split(","):
            continue
        run_dir = out / name.split(" (")[0].replace(" ", "_").replace(":", "").replace(",", "-")
        if not (run_dir / "final.json").exists():
            print(f"== {name}", flush=True)
            train(load_config(overrides=[*shared, f"method={method}", f"clusters.spec={clusters}", *extra,
                                         f"out={run_dir}"]))
        final = json.loads((run_dir / "final.json").read_text())
        rows.append({"method": name, "knn_top1": final["knn_top1"], "images_per_s": final["images_per_s"],
                     "train_time_s": final["train_time_s"]})
    data = load_dataset(load_config(overrides=[f"data.subset={args.subset}"]).data)
    for k, t in KNN:
        accuracy = raw_pixel_knn(data.train.images, data.train.labels, data.test.images, data.test.labels, k, t)
        rows.append({"method": f"raw pixels (k={k}, T={t})", "knn_top1": accuracy})

    lines = [f"Fashion-MNIST, first {args.subset} training images, {args.epochs} epochs, resnet18 (timm stem, 28 px), "
             f"batch {load_config(overrides=shared).batch_size}, seed 0; weighted kNN (k=200, T=0.1) on the 10,000 "
             "test images.", "", "| method | kNN top-1 | images/s | train time |", "|---|---:|---:|---:|"]
    for r in rows:
        ips = f"{r['images_per_s']:.0f}" if "images_per_s" in r else ""
        seconds = f"{r['train_time_s'] / 60:.1f} min" if "train_time_s" in r else ""
        lines.append(f"| {r['method']} | {r['knn_top1']:.4f} | {ips} | {seconds} |")
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
