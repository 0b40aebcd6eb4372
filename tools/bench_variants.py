"""Training speed of setting variants, measured alternately in one invocation (this machine's run-to-run noise is
about 15%, so variants timed in separate invocations are not comparable).

    .venv/bin/python tools/bench_variants.py --variant base= --variant compile=model.compile=true \
        [--variant NAME=key=value,key=value ...] [--steps 10] [--rounds 3] [--eval-images 0] \
        [--out bench_out/variants.json] \
        [key=value ...]

Every variant is a run built by `run.setup` with the shared key=value overrides plus its own, trained by
`trainer.train_epoch` (the loop itself). Round 0 warms every variant up (kernel selection, compilation); then each
round times `--steps` steps of each variant in turn (and with `--eval-images N` the evaluation's feature extraction,
`run_eval.backbone_features`, over the first N training images: eval batch size, compiled backbone). Reported per
variant: the median images/s (both views), the FLOPs of one step (torch.utils.flop_counter), and MFU against the
measured peak (`bench.peak_flops`, the better of a large matmul and a large convolution) and against the CPU's
physical peak (`bench.physical_peak`).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from selfsup_clusters.data import load_dataset  # noqa: E402
from selfsup_clusters.recipes import load_config  # noqa: E402
from selfsup_clusters.studies.bench import parse_variants, peak_flops, step_flops, timed_run, write_report  # noqa: E402
from selfsup_clusters.studies.tables import format_table  # noqa: E402
from selfsup_clusters.training.run import resolve_device  # noqa: E402
from selfsup_clusters.training.run_eval import backbone_features  # noqa: E402
from selfsup_clusters.training.trainer import train_epoch  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", action="append", required=True, metavar="NAME=key=value,...")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--eval-images", type=int, default=0,
                        help="> 0: also time the evaluation's feature extraction over this many training images")
    parser.add_argument("--out", default="bench_out/variants.json")
    parser.add_argument("overrides", nargs="*")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    shared = ["log.progress=false", "log.tensorboard=false", "log.every_steps=0", *args.overrides]
    variants = parse_variants(args.variant)
    data = load_dataset(load_config(overrides=shared).data)
    runs, loggers, rates, flops = {}, {}, {name: [] for name in variants}, {}
    eval_rates = {name: [] for name in variants}
    eval_split = data.train.first(args.eval_images) if args.eval_images else None
    with tempfile.TemporaryDirectory() as tmp:
        for name, settings in variants.items():
            cfg = load_config(overrides=[*shared, *settings, f"out={tmp}/{name}"])
            runs[name], loggers[name] = timed_run(cfg, data, args.steps)
        for round_ in range(args.rounds + 1):
            for name, run in runs.items():
                record = train_epoch(run, round_, loggers[name])
                if round_:
                    rates[name].append(record["images_per_s"])
                line = (f"round {round_}{' (warm-up)' if not round_ else ''} {name}: "
                        f"{record['images_per_s']:.0f} images/s")
                if eval_split is not None:
                    start = time.perf_counter()
                    backbone_features(run, eval_split)
                    eval_rates[name].append(len(eval_split) / (time.perf_counter() - start))
                    line += f", features {eval_rates[name][-1]:.0f} images/s"
                print(line, flush=True)
        for name, run in runs.items():
            flops[name] = step_flops(run)
    first = next(iter(runs.values()))
    device = resolve_device(first.cfg.device)
    peaks = {precision: peak_flops(device, torch.bfloat16 if precision == "bf16" else torch.float32)
             for precision in {run.precision for run in runs.values()}}
    rows = []
    for name, run in runs.items():
        images_per_s = statistics.median(rates[name])
        steps_per_s = images_per_s / (run.cfg.batch_size * run.cfg.augment.views)
        achieved = flops[name] * steps_per_s / 1e9
        peak = peaks[run.precision]
        rows.append({"variant": name, "settings": ",".join(variants[name]) or "-", "precision": run.precision,
                     "images/s": round(images_per_s), "all rounds": " ".join(f"{r:.0f}" for r in rates[name]),
                     "GFLOP/step": flops[name] / 1e9, "GFLOP/s": round(achieved),
                     "MFU measured": achieved / peak["peak_gflops"],
                     "MFU physical": achieved / peak["physical"]["gflops"] if peak["physical"] else "-",
                     **({"features images/s": round(statistics.median(eval_rates[name][1:]))}
                        if eval_split is not None else {})})
    report = {"settings": {"shared": shared, "steps": args.steps, "rounds": args.rounds,
                           "threads": torch.get_num_threads()}, "peaks": peaks, "rows": rows}
    print(format_table(rows))
    for precision, peak in peaks.items():
        physical = peak["physical"]
        print(f"{precision}: measured peak {peak['peak_gflops']:.0f} GFLOP/s (matmul {peak['matmul_gflops']:.0f}, "
              f"convolution {peak['conv_gflops']:.0f}); physical peak "
              + (f"{physical['gflops']:.0f} GFLOP/s ({physical['formula']})" if physical else "not modelled"))
    write_report(report, args.out)


if __name__ == "__main__":
    main()
