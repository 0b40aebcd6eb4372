"""Paired differences between two sets of runs by seed: FOLDER_A/seed*/final.json minus FOLDER_B/seed*/final.json,
per metric, with the 95% t-interval of the per-seed differences (what `compare` reports between rows, for runs that
differ in a setting rather than a method: e.g. two points of a `tune` grid).

    .venv/bin/python tools/paired_runs.py RUNS/simclr_precision=bf16 RUNS/simclr_precision=fp32 \
        [--metrics linear_top1,knn_top1,train_time_s]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from selfsup_clusters.evaluation.intervals import paired_difference, t_interval  # noqa: E402


def finals(folder: Path) -> dict[int, dict]:
    return {int(p.parent.name.removeprefix("seed")): json.loads(p.read_text()) for p in folder.glob("seed*/final.json")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--metrics", default="linear_top1,knn_top1,train_time_s")
    args = parser.parse_args()
    a, b = finals(Path(args.a)), finals(Path(args.b))
    for metric in args.metrics.split(","):
        values = [{seed: final[metric] for seed, final in side.items() if metric in final} for side in (a, b)]
        common = sorted(set(values[0]) & set(values[1]))
        difference = paired_difference(*values)
        ratio = t_interval([values[0][s] / values[1][s] for s in common])
        print(f"{metric}: {Path(args.a).name} {t_interval(list(values[0].values())):.4f}, {Path(args.b).name} "
              f"{t_interval(list(values[1].values())):.4f}; difference {difference:+.4f} (seeds {common}); "
              f"ratio {ratio:.3f}")


if __name__ == "__main__":
    main()
