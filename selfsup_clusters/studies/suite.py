"""The run suite every multi-run command trains through (compare, analyze, tune, claims): entries (a method, its
clusters, its own settings), their runs per seed (one folder each, finished runs skipped, interrupted ones
resumed), raw pixels' reference rows, and summaries with a 95% interval (intervals.Interval) per metric and each
entry's paired difference to a baseline. report.py writes them; compare.py is the `compare` command.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from selfsup_clusters.clusters import parse_spec
from selfsup_clusters.config import Config
from selfsup_clusters.core.errors import DIVERGED_FILE, Diverged, Interrupted, UserError, first_line
from selfsup_clusters.evaluation.evaluate import protocol_scores, raw_pixel_features, weighted_knn
from selfsup_clusters.evaluation.intervals import Interval, SeedRule, t_interval
from selfsup_clusters.evaluation.protocols import FAMILY, unscored
from selfsup_clusters.recipes import UserConfig

# linear first: the paper's metric, with the penalty chosen per representation (protocols.py: the family)
SCORES = (*(protocol.metric for protocol in FAMILY.values()), "knn_top1")
METRICS = (*SCORES, "nmi", "train_time_s", "eval_time_s", "images_per_s")
DECIDING = FAMILY["linear"].metric  # the metric whose verdict decides whether a comparison gets another seed
RULE_FILE = "seed_rule.json"
FIXED = SeedRule(1, 1, 0.01)  # a plain 95% t-interval over whatever seeds there are


@dataclass(frozen=True)
class Entry:
    """One row of a comparison: a method with one cluster source ("none" for methods without clusters) and, for a
    tuning grid point, its own `key=value` settings."""

    method: str
    clusters: str = "none"
    overrides: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        parts = [self.method] + ([str(parse_spec(self.clusters))] if self.clusters != "none" else [])
        return " ".join(parts + list(self.overrides))

    @property
    def folder(self) -> str:
        parts = [self.method] + ([parse_spec(self.clusters).name] if self.clusters != "none" else [])
        parts += [re.sub(r"[^A-Za-z0-9.=-]+", "-", item) for item in self.overrides]
        return "_".join(parts)


@dataclass
class Result:
    """An entry's finished runs: final.json per seed; and the seeds whose run diverged (a non-finite loss stopped
    it: no number to average), with the one line that said so."""

    entry: Entry
    finals: dict[int, dict] = field(default_factory=dict)
    diverged: dict[int, str] = field(default_factory=dict)

    def values(self, metric: str) -> dict[int, float]:
        return {seed: final[metric] for seed, final in self.finals.items() if metric in final}


def run_config(user: UserConfig, entry: Entry, seed: int, run_dir: Path) -> Config:
    """The run's config: the entry's method recipe beneath the user's file and overrides, then the entry itself."""
    return user.load(f"method={entry.method}", f"clusters.spec={entry.clusters}", *entry.overrides, f"seed={seed}",
                     f"out={run_dir}")


def run_one(user: UserConfig, entry: Entry, seed: int, out: Path, tag: str = "compare") -> dict:
    """Train one row's run (resuming an interrupted one); the finished run's final.json, scored again without
    training when it predates the protocol family (run_eval.rescore_run)."""
    from selfsup_clusters.training.trainer import resume, train

    run_dir = out / entry.folder / f"seed{seed}"
    final_path = run_dir / "final.json"
    if (run_dir / DIVERGED_FILE).exists() and not final_path.exists():  # training it again would diverge again
        record = json.loads((run_dir / DIVERGED_FILE).read_text())
        raise Diverged(f"diverged before, in epoch {record.get('epoch')} at step {record.get('step')} (loss "
                       f"{record.get('loss')}); {run_dir}/{DIVERGED_FILE}")
    if final_path.exists():
        final = json.loads(final_path.read_text())
        missing = unscored(final, run_config(user, entry, seed, run_dir).eval.protocols)
        if missing:
            from selfsup_clusters.training.run_eval import rescore_run

            print(f"[{tag}] {entry.name} seed {seed}: finished before the protocol family; scoring its final "
                  f"checkpoint under {', '.join(missing)} ({run_dir})", flush=True)
            return rescore_run(run_dir)
        print(f"[{tag}] {entry.name} seed {seed}: finished before, skipped ({run_dir})", flush=True)
        return final
    if (run_dir / "checkpoints" / "last.pt").exists():
        print(f"[{tag}] {entry.name} seed {seed}: resuming {run_dir}", flush=True)
        return resume(run_dir)
    print(f"[{tag}] {entry.name} seed {seed}: training into {run_dir}", flush=True)
    return train(run_config(user, entry, seed, run_dir))


def train_entries(user: UserConfig, entries: list[Entry], seeds: list[int], out: Path,
                  tag: str = "compare") -> tuple[list[Result], list[str]]:
    """Train every entry and seed (skipping finished runs): train_runs of each entry with `seeds`."""
    return train_runs(user, [(entry, seeds) for entry in entries], out, tag)


def train_runs(user: UserConfig, runs: list[tuple[Entry, list[int]]], out: Path,
               tag: str = "compare") -> tuple[list[Result], list[str]]:
    """Train each entry on its seeds (skipping finished runs), with a progress line and an estimate of the time
    left; the results of entries that finished at least once, and one line per failed run. A failure does not stop
    the others; a stop (SIGTERM, Ctrl-C) does."""
    results, failures = [], []
    total, done, trained_seconds, trained = sum(len(seeds) for _, seeds in runs), 0, 0.0, 0
    for entry, seeds in runs:
        result = Result(entry)
        for seed in seeds:
            start = time.perf_counter()
            fresh = not (out / entry.folder / f"seed{seed}" / "final.json").exists()
            try:
                result.finals[seed] = run_one(user, entry, seed, out, tag)
            except Interrupted as stopped:
                raise Interrupted(f"{stopped}; or re-run the same {tag} command, which continues every run "
                                  "where it stopped") from None
            except Diverged as diverged:
                result.diverged[seed] = first_line(diverged)
                failures.append(f"{entry.name} seed {seed} DIVERGED: {first_line(diverged)}")
                print(f"[{tag}] {failures[-1]}", flush=True)
            except Exception as e:  # noqa: BLE001 - one failed run must not lose the others' results
                failures.append(f"{entry.name} seed {seed}: {first_line(e)}")
                print(f"[{tag}] FAILED {failures[-1]}", flush=True)
            done += 1
            if fresh:
                trained_seconds, trained = trained_seconds + time.perf_counter() - start, trained + 1
            left = f", about {(total - done) * trained_seconds / trained / 60:.0f} min left" if trained else ""
            print(f"[{tag}] {done}/{total} runs done{left}", flush=True)
        if result.finals or result.diverged:
            results.append(result)
    return results, failures


def train_until_decided(user: UserConfig, entries: list[Entry], pairs: list[tuple[Entry, Entry]], rule: SeedRule,
                        first: int, out: Path, tag: str = "compare") -> tuple[list[Result], list[str]]:
    """Every entry on seeds first, first+1, ... `rule.low` of them; then, round by round, one more seed for both
    entries of each pair (better, worse) whose paired difference on DECIDING is still undecided (rule.wants_more),
    until every pair is decided or at `rule.high`. Finished runs in `out` are reused, so an interrupted run picks
    up where it stopped. A fixed rule (low == high) is one round. The results, as train_entries gives them."""
    results = {entry: Result(entry) for entry in entries}
    targets, attempted, failures, round_ = dict.fromkeys(entries, rule.low), dict.fromkeys(entries, 0), [], 0
    while todo := [entry for entry in entries if attempted[entry] < targets[entry]]:
        round_ += 1
        if round_ > 1:
            print(f"[{tag}] seeds until decided, round {round_}: {', '.join(e.name for e in todo)}", flush=True)
        found, failed = train_runs(user, [(entry, list(range(first + attempted[entry], first + targets[entry])))
                                          for entry in todo], out, tag)
        for result in found:
            results[result.entry].finals.update(result.finals)
            results[result.entry].diverged.update(result.diverged)
        failures += failed
        attempted.update({entry: targets[entry] for entry in todo})
        for better, worse in pairs:
            a, b = results[better].values(DECIDING), results[worse].values(DECIDING)
            n = len(set(a) & set(b))
            if n and rule.wants_more(n, rule.read(a, b)[1]):
                for entry in (better, worse):
                    targets[entry] = max(targets[entry], n + 1)
    return [result for result in results.values() if result.finals or result.diverged], failures


def hold_rule(out: Path, rule: SeedRule) -> None:
    """A folder trained with seeds until decided keeps its rule (DIR/seed_rule.json): the seeds it spent were chosen
    by that rule, so a later run into it with another rule (or a fixed number of seeds) is refused before any
    training; the same rule continues where it stopped."""
    path = out / RULE_FILE
    wanted = {"seeds": f"{rule.low}..{rule.high}" if rule.sequential else str(rule.low), "margin": rule.margin,
              "confidence": rule.confidence, "metric": DECIDING}
    if path.exists():
        saved = json.loads(path.read_text())
        if saved != wanted:
            rule_text = ", ".join(f"{key} {value}" for key, value in saved.items())
            raise UserError(f"{out} was trained with seeds until decided ({rule_text}), which chose the seeds it "
                            f"spent; continue it with --seeds {saved['seeds']} claims.margin={saved['margin']}, or "
                            "pick another --out")
    elif rule.sequential:
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(wanted, indent=2) + "\n")


def raw_pixel_rows(cfg: Config, out: Path) -> list[dict]:
    """kNN and the protocol family on raw pixels (mean-centred, L2-normalised) of the same train/test images; kept
    in DIR/raw_pixels.json, computed again when that row predates the family (as a run's final.json is)."""
    from selfsup_clusters.data import load_dataset

    path = out / "raw_pixels.json"
    if path.exists():
        rows = json.loads(path.read_text())
        if not any(unscored(row, cfg.eval.protocols) for row in rows):
            return rows
    data = load_dataset(cfg.data)
    if not torch.is_tensor(data.train.images):
        return []  # image files: no raw-pixel reference
    train_features, test_features = raw_pixel_features(data.train.images, data.test.images)
    labels, test_labels = data.train.labels, data.test.labels
    row = {"name": "raw pixels", "method": "raw pixels", "clusters": "none", "seeds": 1,
           "knn_top1": weighted_knn(train_features, labels, test_features, test_labels, cfg.eval.knn_k,
                                    cfg.eval.knn_t),
           **protocol_scores(train_features, labels, test_features, test_labels, cfg.eval, cfg.seed)}
    path.write_text(json.dumps([row], indent=2) + "\n")
    return [row]


@dataclass(frozen=True)
class Summary:
    """One row of a comparison: per metric the mean with its 95% t-interval over the seeds (`intervals`), per
    metric the paired difference to the baseline row (`differences`, same seeds), and single measurements that
    have no interval (`values`: the raw-pixel reference's)."""

    name: str
    method: str
    clusters: str
    seeds: int
    intervals: dict[str, Interval] = field(default_factory=dict)
    differences: dict[str, Interval] = field(default_factory=dict)
    values: dict[str, float] = field(default_factory=dict)
    penalties: str = ""  # the deciding probe's L2 penalty chosen for each seed's representation
    diverged: tuple[int, ...] = ()  # seeds whose run diverged: in no interval

    @classmethod
    def reference(cls, row: dict) -> Summary:
        """A raw_pixels.json row, its numbers as single values."""
        identity = ("name", "method", "clusters", "seeds")
        return cls(*(row[key] for key in identity), values={k: v for k, v in row.items() if k not in identity})

    def get(self, metric: str) -> Interval | float | None:
        """The metric's interval over seeds, else its single value, else None."""
        return self.intervals.get(metric, self.values.get(metric))

    def mean(self, metric: str) -> float | None:
        value = self.get(metric)
        return value.mean if isinstance(value, Interval) else value

    def row(self) -> dict:
        """Every field under one key, the paired differences as `<metric>_diff`: a row for tables.write_csv,
        which writes each interval as its mean, _low and _high columns."""
        return {"name": self.name, "method": self.method, "clusters": self.clusters, "seeds": self.seeds,
                **self.intervals, **self.values, **({"linear_l2": self.penalties} if self.penalties else {}),
                **({"diverged_seeds": " ".join(map(str, self.diverged))} if self.diverged else {}),
                **{f"{m}_diff": d for m, d in self.differences.items()}}


def summarise(result: Result, baseline: Result | None = None, rule: SeedRule | None = None) -> Summary:
    """One table row: per metric the mean with its 95% t-interval over seeds, the penalty each seed's probe chose;
    against `baseline` (same seeds) the paired difference of every score of the protocol family, at `rule`'s level
    (a plain 95% interval without one)."""
    entry = result.entry
    intervals = {metric: t_interval(list(values.values())) for metric in METRICS
                 for values in [result.values(metric)] if values}
    chosen = result.values("linear_l2")
    penalties = " ".join(f"{chosen[seed]:g}" for seed in sorted(chosen))
    differences = {}
    if baseline is not None and baseline is not result:
        for metric in SCORES:
            try:
                differences[metric] = (rule or FIXED).difference(result.values(metric), baseline.values(metric))
            except ValueError:
                continue
    return Summary(entry.name, entry.method, entry.clusters, len(result.finals), intervals, differences,
                   penalties=penalties, diverged=tuple(sorted(result.diverged)))


