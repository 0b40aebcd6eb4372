"""Re-clustering time and peak memory per process against N: FAISS k-means on one process (`run_kmeans`, what
one-process training runs) against k-means over 2 shards under torchrun (`sharded_kmeans`, issue #40).

    .venv/bin/python tools/bench_kmeans_scaling.py              # N = 1e4, 1e5, 1e6; d 128; K 1000 and 3 x 1000
    .venv/bin/python tools/bench_kmeans_scaling.py --sizes 10000 --niter 5

Each configuration runs in fresh processes (so each peak RSS is its own): one process with every core (FAISS's
OpenMP threads), or `torch.distributed.run --nproc-per-node 2` with one thread each (gloo). The features are
synthetic unit vectors (seeded per half of the table, so both runs cluster the same table); "3 x 1000" is three
clusterings of K=1000 in one call (spec kmeans:1000,1000,1000). Prints a markdown table (docs/distributed.md):
seconds per re-clustering (niter Lloyd iterations and the final assignment), seconds per iteration, the cost per
point and centroid in core-nanoseconds (seconds x cores used / (N x sum of K)), and each process's peak RSS and
its RSS before the features were made (imports alone).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DIM = 128


def table_half(n: int, half: int, seed: int = 0):
    """Rows of half `half` (0 or 1) of the synthetic (n, DIM) table of unit vectors."""
    import torch

    rows = n // 2 if half == 0 else n - n // 2
    generator = torch.Generator().manual_seed(seed * 2 + half)
    return torch.nn.functional.normalize(torch.randn(rows, DIM, generator=generator), dim=1)


def measure(n: int, ks: list[int], niter: int) -> None:
    """One process of a configuration: its half (or the whole table), one re-clustering, one JSON line."""
    import torch

    from selfsup_clusters.clusters import KMeansOptions, Shard, run_kmeans, sharded_kmeans
    from selfsup_clusters.core import distributed

    distributed.init()
    before = peak_rss_mb()
    options = KMeansOptions(niter=niter, use_gpu="cpu", min_points_per_centroid=1)
    if distributed.enabled():
        rank = distributed.rank()
        rows = table_half(n, rank)
        index = torch.arange(rank * (n // 2), rank * (n // 2) + len(rows))
        distributed.barrier()
        start = time.perf_counter()
        sharded_kmeans(Shard(rows, index, n), ks, options)
    else:
        rows = torch.cat([table_half(n, 0), table_half(n, 1)])
        start = time.perf_counter()
        run_kmeans(rows, ks, options)
    seconds = time.perf_counter() - start
    print(json.dumps({"rank": distributed.rank(), "seconds": seconds, "rss_mb": peak_rss_mb(),
                      "imports_rss_mb": before}), flush=True)
    distributed.cleanup()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(n: int, ks: list[int], niter: int, processes: int) -> list[dict]:
    args = [str(Path(__file__).resolve()), "--measure", str(n), ",".join(map(str, ks)), str(niter)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if processes == 1:
        command = [sys.executable, *args]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
                   *args]
        env["OMP_NUM_THREADS"] = "1"
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode:
        raise SystemExit(done.stdout[-2000:] + done.stderr[-2000:])
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--niter", type=int, default=10)
    parser.add_argument("--measure", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        measure(int(args.measure[0]), [int(k) for k in args.measure[1].split(",")], int(args.measure[2]))
        return
    print("| N | K | processes | s / re-clustering | s / iteration | core-ns / (point x centroid) | peak RSS MB "
          "per process (imports alone) |")
    print("|---|---|---|---|---|---|---|")
    for n in [int(float(size)) for size in args.sizes.split(",")]:
        for ks in ([1000], [1000, 1000, 1000]):
            for processes in (1, 2):
                rows = run(n, ks, args.niter, processes)
                seconds = max(r["seconds"] for r in rows)
                per_iteration = seconds / (args.niter + 1)  # niter iterations and the final assignment
                cores = os.cpu_count() if processes == 1 else processes  # FAISS's threads; one thread a process
                cost = per_iteration / (n * sum(ks)) * 1e9 * cores
                label = "1000" if len(ks) == 1 else f"{len(ks)} x 1000"
                rss = ", ".join(f"{r['rss_mb']:.0f} ({r['imports_rss_mb']:.0f})" for r in rows)
                print(f"| {n:.0e} | {label} | {processes} | {seconds:.2f} | {per_iteration:.3f} | {cost:.2f} | "
                      f"{rss} |", flush=True)


if __name__ == "__main__":
    main()
