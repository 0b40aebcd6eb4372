"""Where the final evaluation's time goes, on a trained run's checkpoint: the forward pass over the training and
test images (at several `eval.batch_size`), weighted kNN, the linear probe at the fixed penalty (the probe before
issue 36), the protocol family (the penalty chosen per representation, the fixed-penalty probe, kNN at k=20 and
k=200: what every linear evaluation computes now) and the cluster quality (k-means).

    .venv/bin/python tools/bench_eval_parts.py RUN/checkpoints/last.pt [--batch-sizes 256,1024,4096]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from selfsup_clusters.evaluation.evaluate import cluster_quality, linear_probe, protocol_scores, weighted_knn  # noqa: E402
from selfsup_clusters.training.run import load_trained  # noqa: E402
from selfsup_clusters.training.run_eval import backbone_features  # noqa: E402


def timed(name: str, work):
    start = time.perf_counter()
    result = work()
    print(f"{name}: {time.perf_counter() - start:.2f} s", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--batch-sizes", default="256,1024,4096")
    args = parser.parse_args()
    run = load_trained(args.checkpoint)
    data = run.data
    for batch_size in map(int, args.batch_sizes.split(",")):
        run.cfg.eval.batch_size = batch_size
        train = timed(f"features of {len(data.train)} training images, eval.batch_size {batch_size}",
                      lambda: backbone_features(run, data.train))
    test = timed(f"features of {len(data.test)} test images", lambda: backbone_features(run, data.test))
    timed("weighted kNN", lambda: weighted_knn(train, data.train.labels, test, data.test.labels,
                                              k=run.cfg.eval.knn_k, temperature=run.cfg.eval.knn_t))
    timed("linear probe, fixed penalty", lambda: linear_probe(train, data.train.labels, test, data.test.labels))
    scores = timed("protocol family (penalty chosen, fixed penalty, kNN k=20 and k=200)",
                   lambda: protocol_scores(train, data.train.labels, test, data.test.labels, run.cfg.eval))
    print(f"  {scores}")
    timed("cluster quality (k-means, NMI/AMI/ARI)", lambda: cluster_quality(test, data.test.labels))


if __name__ == "__main__":
    main()
