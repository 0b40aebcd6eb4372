"""Whole cpu-budget runs of this checkout against another commit's (the landed one), alternately in one invocation:
the same `train --config configs/claims_cpu.yaml` per method (the same samples seen, evaluation points and
evaluation images), each in its own process from its own checkout, baseline and current in turn every round.

    .venv/bin/python tools/bench_runs.py --baseline b616a91 [--rounds 3] \
        [--run simclr] [--run "cl-infonce --clusters kmeans:400"] [--out bench_out/runs.json] [key=value ...]

The baseline commit (and `--current`, when given) is checked out into a temporary git worktree and imported from
there (PYTHONPATH) by this checkout's virtual environment. Per run: the process's wall time, its training time and
its evaluation time (final.json's train_time_s, the epochs' eval_time_s from metrics.jsonl). Reported: medians over
the rounds and the ratio baseline / current of each (above 1: current is faster), median of the per-round ratios.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from selfsup_clusters.studies.bench import write_report  # noqa: E402
from selfsup_clusters.studies.tables import format_table  # noqa: E402


def one_run(checkout: Path, run: str, overrides: list[str], out: Path) -> dict:
    """One `train` of the cpu budget from `checkout`, timed as a whole process."""
    command = [sys.executable, "-m", "selfsup_clusters", "train", "--config", "configs/claims_cpu.yaml",
               *shlex.split(run), "--out", str(out), *overrides]
    start = time.perf_counter()
    subprocess.run(command, cwd=checkout, env={"PYTHONPATH": str(checkout), "PATH": "/usr/bin:/bin"}, check=True,
                   stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    final = json.loads((out / "final.json").read_text())
    epochs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    evaluation = sum(e.get("eval_time_s", 0.0) for e in epochs)
    return {"wall_s": wall, "train_time_s": final["train_time_s"], "eval_time_s": evaluation,
            "eval_share": evaluation / final["train_time_s"], "linear_top1": final.get("linear_top1")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", required=True, help="the commit to compare against (e.g. the landed one)")
    parser.add_argument("--current", help="a commit to measure instead of this checkout as it stands")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--run", action="append", help="train options of one run (default: simclr and "
                                                        "cl-infonce --clusters kmeans:400)")
    parser.add_argument("--out", default="bench_out/runs.json")
    parser.add_argument("overrides", nargs="*", help="key=value for every run of both sides")
    args = parser.parse_args()
    runs = args.run or ["--method simclr", "--method cl-infonce --clusters kmeans:400"]
    overrides = ["log.progress=false", *args.overrides]
    found: dict[str, dict[str, list[dict]]] = {run: {"baseline": [], "current": []} for run in runs}
    with tempfile.TemporaryDirectory() as tmp:
        checkouts = {"baseline": Path(tmp) / "baseline", "current": Path(tmp) / "current" if args.current else ROOT}
        for side, commit in (("baseline", args.baseline), ("current", args.current)):
            if commit:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(checkouts[side]),
                                commit], check=True)
        try:
            for round_ in range(args.rounds):
                for run in runs:
                    for side, checkout in checkouts.items():
                        out = Path(tmp) / f"{side}-{round_}-{len(found[run][side])}-{abs(hash(run))}"
                        found[run][side].append(one_run(checkout, run, overrides, out))
                        print(f"round {round_ + 1} {run} {side}: " + ", ".join(
                            f"{k} {v:.4g}" for k, v in found[run][side][-1].items() if v is not None), flush=True)
        finally:
            for checkout in checkouts.values():
                if checkout != ROOT:
                    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(checkout)],
                                   check=False)
    rows = []
    for run, sides in found.items():
        row = {"run": run}
        for key in ("wall_s", "train_time_s", "eval_time_s"):
            b, c = ([r[key] for r in sides[side]] for side in ("baseline", "current"))
            row |= {f"{key} baseline": statistics.median(b), f"{key} current": statistics.median(c),
                    f"{key} ratio": statistics.median(x / y for x, y in zip(b, c, strict=True))}
        row["eval share current"] = statistics.median(r["eval_share"] for r in sides["current"])
        rows.append(row)
    print(format_table(rows))
    write_report({"baseline": args.baseline, "current": args.current or "this checkout", "rounds": args.rounds,
                  "overrides": overrides, "runs": found, "rows": rows}, args.out)


if __name__ == "__main__":
    main()
