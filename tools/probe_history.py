"""Which change of the linear probe moved a comparison: the same checkpoints scored by the probe before the L-BFGS
change (AdamW, as commit 7251a56's parent had it: tools/bench_probe.adamw_probe), by the L-BFGS probe at one fixed
penalty for every representation (0.003, issue 29's), and by the probe whose penalty is chosen per representation
(issue 36's; evaluate.tuned_probe), each as the paired difference better - worse over the seeds both entries share
(95% t-interval).

    .venv/bin/python tools/probe_history.py runs/claims_cpu/cl-infonce_kmeans400 runs/claims_cpu/pcl_kmeans400

Features of each checkpoint (RUN/seedS/checkpoints/last.pt) are extracted once, with the run's own data.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_probe import adamw_probe  # noqa: E402 - the probe before 7251a56, as it was

from selfsup_clusters.evaluation.evaluate import PROBE_L2, linear_probe, tuned_probe  # noqa: E402
from selfsup_clusters.evaluation.intervals import paired_difference  # noqa: E402
from selfsup_clusters.studies.tables import markdown_table  # noqa: E402
from selfsup_clusters.training.run import load_trained  # noqa: E402
from selfsup_clusters.training.run_eval import backbone_features  # noqa: E402


def scores(run_dir: Path) -> dict[str, float]:
    """One checkpoint under the three probes (labelled training samples only, as every probe skips -1)."""
    run = load_trained(run_dir / "checkpoints" / "last.pt")
    train, test = backbone_features(run, run.data.train), backbone_features(run, run.data.test)
    keep = run.data.train.labels >= 0
    labels, test_labels = run.data.train.labels[keep], run.data.test.labels
    tuned, l2 = tuned_probe(train[keep], labels, test, test_labels, run.cfg.eval.probe_l2, run.cfg.seed)
    return {"AdamW (before 7251a56)": adamw_probe(train[keep], labels, test, test_labels, run.cfg.seed),
            f"L-BFGS, L2 {PROBE_L2:g} for all": linear_probe(train[keep], labels, test, test_labels),
            "L-BFGS, L2 chosen per representation": tuned, "chosen L2": l2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("better", type=Path, help="an entry's folder (its seedS/ runs)")
    parser.add_argument("worse", type=Path)
    args = parser.parse_args()
    seeds = sorted({p.parent.name for p in args.better.glob("seed*/final.json")}
                   & {p.parent.name for p in args.worse.glob("seed*/final.json")})
    found = {side: {seed: scores(side / seed) for seed in seeds} for side in (args.better, args.worse)}
    probes = [name for name in found[args.better][seeds[0]] if name != "chosen L2"]
    cells = []
    for probe in probes:
        a, b = ({int(s[4:]): found[side][s][probe] for s in seeds} for side in (args.better, args.worse))
        cells.append([probe, f"{sum(a.values()) / len(a):.4f}", f"{sum(b.values()) / len(b):.4f}",
                      f"{paired_difference(a, b):+.4f}"])
    print(markdown_table(["probe", args.better.name, args.worse.name, "paired difference [95% interval]"], cells))
    for side in (args.better, args.worse):
        print(f"{side.name}: L2 chosen per seed {[found[side][s]['chosen L2'] for s in seeds]}")
    print(f"seeds: {', '.join(seeds)}")


if __name__ == "__main__":
    main()
