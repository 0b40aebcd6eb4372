"""Clustering-step benchmark: FAISS k-means over a memory bank of N x d features, for several K, and its cost
relative to one training epoch.

    python tools/bench_kmeans.py [--n 60000] [--d 128] [--ks 10,100,1000,2500] [--run DIR | --epoch-seconds S]

The features are the memory bank of a finished run (--run, which also gives the epoch time) or, without one,
random unit vectors (k-means time depends on N, d, K and iterations, barely on the data). Results go to
bench_out/kmeans.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from selfsup_clusters.clusters import KMeansOptions, run_kmeans


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=60000)
    parser.add_argument("--d", type=int, default=128)
    parser.add_argument("--ks", default="10,100,1000,2500")
    parser.add_argument("--niter", type=int, default=20)
    parser.add_argument("--run", help="a finished run: its memory bank and mean epoch time are used")
    parser.add_argument("--epoch-seconds", type=float, help="training epoch time to compare against")
    args = parser.parse_args()

    epoch_seconds = args.epoch_seconds
    if args.run:
        state = torch.load(Path(args.run) / "checkpoints" / "last.pt", weights_only=True, map_location="cpu")
        features = state["memory"]["features"]
        records = [json.loads(line) for line in (Path(args.run) / "metrics.jsonl").read_text().splitlines()]
        epoch_seconds = epoch_seconds or sum(r["epoch_time_s"] for r in records) / len(records)
        source = f"memory bank of {args.run}"
    else:
        features = F.normalize(torch.randn(args.n, args.d, generator=torch.Generator().manual_seed(0)), dim=1)
        source = "random unit vectors"
    n, d = features.shape
    print(f"k-means over N={n}, d={d} ({source}), {args.niter} iterations, {torch.get_num_threads()} threads")
    rows = []
    for k in (int(k) for k in args.ks.split(",")):
        start = time.perf_counter()
        assignments = run_kmeans(features, [k], KMeansOptions(niter=args.niter), warn=False)
        seconds = time.perf_counter() - start
        row = {"K": k, "seconds": seconds, "num_nonempty": int(assignments.ids[0].unique().numel())}
        if epoch_seconds:
            row["share_of_epoch"] = seconds / epoch_seconds
        rows.append(row)
        share = f"  {row['share_of_epoch']:.2%} of a {epoch_seconds:.0f} s epoch" if epoch_seconds else ""
        print(f"K={k:5d}  {seconds:7.2f} s{share}", flush=True)
    out = Path("bench_out/kmeans.json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"n": n, "d": d, "niter": args.niter, "source": source,
                               "epoch_seconds": epoch_seconds, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
