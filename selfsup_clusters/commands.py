"""What each sub-command of `selfsup-clusters` does, once cli.py has parsed its options: the options turned into
config overrides (named flags as key=value), the run suite's shared settings and seeds, and one handler per
sub-command (cli.COMMANDS names them)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from selfsup_clusters.core.errors import UserError
from selfsup_clusters.core.files import hold_folder, writable_folder

# Flags that are shorthands for config keys.
TRAIN_FLAGS = {
    "method": "method",
    "dataset": "data.name",
    "data_root": "data.root",
    "backbone": "model.backbone",
    "epochs": "epochs",
    "batch_size": "batch_size",
    "subset": "data.subset",
    "seed": "seed",
    "clusters": "clusters.spec",
    "out": "out",
}


def shared_runs(args: argparse.Namespace, default_seeds: str = "1"):
    """What every run of `compare` / `analyze` / `claims` / `tune` starts from (each run then gets its method's
    recipe, its own folder under --out, its seed), the seed rule (--seeds N: seeds --seed ... --seed+N-1; --seeds
    MIN..MAX: until decided; without --seeds `default_seeds`) and the first seed."""
    from selfsup_clusters.recipes import UserConfig

    writable_folder(args.out)
    user = UserConfig(args.config, tuple(o for o in config_overrides(args) if not o.startswith("out=")))
    base = user.load()
    return user, seed_rule(args.seeds or default_seeds, base.claims.margin), base.seed


def seed_rule(text: str, margin: float):
    """--seeds as a SeedRule; anything else one UserError."""
    from selfsup_clusters.evaluation.intervals import SeedRule

    try:
        return SeedRule.parse(text, margin)
    except ValueError as e:
        raise UserError(f"--{e}") from None


def fixed_seeds(rule, first: int, command: str) -> list[int]:
    """tune and analyze train a fixed number of seeds."""
    if rule.sequential:
        raise UserError(f"{command} trains a fixed number of seeds (--seeds N); seeds until decided "
                        f"(--seeds {rule.low}..{rule.high}) are for compare and claims")
    return list(range(first, first + rule.low))


def config_overrides(args: argparse.Namespace) -> list[str]:
    """The key=value overrides, then the named flags as key=value; a flag and a key=value that set one field to
    different values are refused (neither silently wins)."""
    from omegaconf import OmegaConf

    flags = {key: (f"--{flag.replace('_', '-')} {getattr(args, flag)}", str(getattr(args, flag)))
             for flag, key in TRAIN_FLAGS.items() if getattr(args, flag, None) is not None}
    if getattr(args, "download", False):
        flags["data.download"] = ("--download", "true")

    def parsed(value: str):  # as the merge reads a value: epochs=02 is --epochs 2, data.download=True is --download
        return OmegaConf.from_dotlist([f"v={value}"]).v

    for item in args.overrides:
        key, _, value = item.partition("=")
        if key.strip() not in flags:
            continue
        flag, flag_value = flags[key.strip()]
        try:
            same = parsed(value.strip()) == parsed(flag_value)
        except Exception:  # a value the merge itself rejects, with its own message
            same = value.strip() == flag_value
        if not same:
            raise UserError(f"{flag} conflicts with {item.strip()}: the same setting given twice with different "
                            "values; give it once")
    return list(args.overrides) + [f"{key}={value}" for key, (_, value) in flags.items()]


def cmd_train(args: argparse.Namespace) -> int:
    from selfsup_clusters.config import to_yaml
    from selfsup_clusters.core import distributed
    from selfsup_clusters.recipes import load_config
    from selfsup_clusters.training.trainer import resume, train

    overrides = config_overrides(args)
    if args.resume and (overrides or args.config):
        raise UserError("--resume continues the saved run exactly; drop the other options "
                        f"({' '.join(overrides) or '--config'})")
    if args.print_config:
        print(to_yaml(resumed_config(args.resume) if args.resume else load_config(args.config, overrides)), end="")
        return 0
    final = resume(args.resume) if args.resume else train(load_config(args.config, overrides))
    keys = ("knn_top1", "knn_k", "knn_t", "linear_top1", "nmi", "loss", "images_per_s", "train_time_s")
    summary = {k: final[k] for k in keys if k in final}
    if distributed.is_main():  # under torchrun: once, from rank 0
        print(f"done: {final['out_dir']}  " + json.dumps(summary))
    return 0


def resumed_config(run_dir: str):
    from selfsup_clusters.training.checkpoint import load_checkpoint
    from selfsup_clusters.training.run import config_from_checkpoint

    return config_from_checkpoint(load_checkpoint(Path(run_dir) / "checkpoints" / "last.pt"))


def run_suite(args: argparse.Namespace, train_runs, outputs: str, default_seeds: str = "1") -> int:
    """compare, tune, analyze, claims: the shared runs, trained with the suite's --out held (a second suite into
    it is refused), then its report; exit status 1 when some run failed. `train_runs(user, rule, first, out)`."""
    user, rule, first = shared_runs(args, default_seeds)
    with hold_folder(args.out):
        report, failures = train_runs(user, rule, first, Path(args.out))
        remember_command(args)  # once its tables are written: a refused command leaves the folder as it was
    print(report)
    print(f"written to {args.out}/{outputs}")
    return 1 if failures else 0


COMMAND_FILE = "command.json"  # a suite folder's command line, which `rescore` runs again to rewrite its tables


def remember_command(args: argparse.Namespace) -> None:
    """DIR/command.json: the command line that wrote a suite folder's tables, and the folder it ran in."""
    from selfsup_clusters.core.files import atomic_write

    record = {"argv": list(getattr(args, "argv", None) or []), "cwd": os.getcwd()}
    if record["argv"]:
        atomic_write(Path(args.out) / COMMAND_FILE, lambda f: f.write((json.dumps(record) + "\n").encode()))


def rescore(args: argparse.Namespace) -> list[str] | None:
    """`rescore DIR`: every finished run under DIR (DIR itself or its run folders) scored again under the protocol
    family from its final checkpoint (run_eval.rescore_run); the command line that wrote DIR's tables, when DIR is
    a suite folder that recorded one, for cli.py to run again (from its working folder)."""
    from selfsup_clusters.training.run_eval import rescore_run

    folder = Path(args.folder)
    runs = sorted(path.parent for path in folder.rglob("final.json")) if folder.is_dir() else []
    if not runs:
        raise UserError(f"{folder} holds no finished run (no final.json in it or below it); give a run folder or "
                        "the --out of compare, claims, tune or analyze")
    with hold_folder(folder, "DIR"):
        for run_dir in runs:
            final = rescore_run(run_dir, list(args.overrides))
            scores = "  ".join(f"{key} {value:.4g}" for key, value in final.items()
                               if key.endswith("_top1") or key == "linear_l2")
            print(f"[rescore] {run_dir}: {scores}", flush=True)
    recorded = folder / COMMAND_FILE
    if not recorded.exists():
        return None
    record = json.loads(recorded.read_text())
    print(f"[rescore] rewriting the tables: selfsup-clusters {' '.join(record['argv'])}", flush=True)
    if Path(record["cwd"]).is_dir():  # its relative paths (--config, --out) are from there
        os.chdir(record["cwd"])
    return record["argv"]


def cmd_compare(args: argparse.Namespace) -> int:
    from selfsup_clusters.studies.compare import compare, parse_clusters_for

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    clusters_for = parse_clusters_for(args.clusters_for)
    return run_suite(args, lambda user, rule, first, out: compare(user, methods, clusters_for, rule, first, out),
                     f"results.csv, results.md, results.png; tensorboard --logdir {args.out}")


def cmd_tune(args: argparse.Namespace) -> int:
    from selfsup_clusters.studies.tune import parse_grid, tune

    grid = parse_grid(args.grid)
    return run_suite(args, lambda user, rule, first, out: tune(user, args.method, grid,
                                                              fixed_seeds(rule, first, "tune"), out),
                     "tune.csv, tune.md, best.yaml")


def cmd_analyze(args: argparse.Namespace) -> int:
    from selfsup_clusters.clusters import split_spec_list
    from selfsup_clusters.studies.analyze import analyze

    return run_suite(args, lambda user, rule, first, out: analyze(user, split_spec_list(args.also),
                                                                 fixed_seeds(rule, first, "analyze"), out),
                     "analysis.csv, analysis.md, analysis.png")


def cmd_claims(args: argparse.Namespace) -> int:
    from selfsup_clusters.recipes import UserConfig
    from selfsup_clusters.studies.claims import budget_config, claims

    budget = budget_config(args.budget)  # checked with --config too: a typo never starts the runs of another budget
    args.config = args.config or budget
    budget_seeds = UserConfig(args.config, tuple(config_overrides(args))).load().claims.seeds
    return run_suite(args, claims, "claims.md, claims.csv, claims_c1.png ... claims_c4.png", budget_seeds)


def cmd_eval(args: argparse.Namespace) -> int:
    from selfsup_clusters.training.run_eval import evaluate_checkpoint

    every = not (args.knn or args.linear or args.clusters)
    overrides = list(args.overrides)
    overrides += [f"data.subset={args.subset}"] if args.subset else []
    overrides += [f"data.test_subset={args.test_subset}"] if args.test_subset else []
    results = evaluate_checkpoint(args.checkpoint, knn=every or args.knn, linear=every or args.linear,
                                  clusters=every or args.clusters, overrides=overrides)
    for key, value in results.items():
        print(f"{key:>14}  {value:.4f}" if isinstance(value, float) else f"{key:>14}  {value}")
    print(f"written to {Path(args.checkpoint).parent / 'eval.json'}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from selfsup_clusters.training.export import export_backbone

    config = export_backbone(args.checkpoint, args.out)
    info = config["selfsup_clusters"]
    print(f"exported {info['timm_name']} ({info['in_chans']}x{info['image_size']}x{info['image_size']} in, "
          f"{info['num_features']} features; {info['method']}, epoch {info['epoch']}) to {args.out}/model.safetensors "
          "and config.json")
    print(f"load it with: {info['load']}")
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    from selfsup_clusters.training.export import embed

    overrides = list(args.overrides)
    if args.dataset:
        overrides += [f"data.name={args.dataset}"] + ([] if args.data_root else ["data.root=null"])
    overrides += [f"data.root={args.data_root}"] if args.data_root else []
    overrides += ["data.download=true"] if args.download else []
    done = embed(args.checkpoint, args.out, split=args.split, subset=args.subset, batch_size=args.batch_size,
                 device=args.device, overrides=overrides)
    print(f"wrote {done['images']} x {done['dim']} features of {done['dataset']} {done['split']} to {done['out']} "
          f"in {done['seconds']:.1f}s")
    return 0


def cmd_clusters(args: argparse.Namespace) -> int:
    if args.run is not None:  # a run's own clusters (cluster_views.py)
        from selfsup_clusters.training.cluster_views import clusters_command

        return clusters_command(args.run, args.epoch, args.out, list(args.overrides))
    if args.epoch is not None or args.out is not None:
        raise UserError("--epoch and --out draw a run's clusters: add --run DIR")
    from selfsup_clusters.clusters import statistics_table
    from selfsup_clusters.data import load_dataset
    from selfsup_clusters.recipes import load_config
    from selfsup_clusters.studies.tables import format_table

    cfg = load_config(args.config, config_overrides(args))
    data = load_dataset(cfg.data)
    rows = statistics_table(data.auxiliary, cfg.clusters.wordnet_dir)
    print(f"{cfg.data.name}: {len(data.train)} training images, {len(data.class_names)} classes; "
          "H, I in bits (T = class label)")
    print(format_table(rows))
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    from selfsup_clusters.methods.registry import methods_table

    print(methods_table())
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from selfsup_clusters.studies.bench import run_bench

    run_bench(args)
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    print(prepare_cache(args.config, config_overrides(args)))
    return 0


def prepare_cache(config: str | None, overrides: list[str]) -> str:
    """The `cache` command: build the cache a training run with this config and these overrides reads, unless it
    is up to date; one line describing it."""
    from dataclasses import replace

    from selfsup_clusters.data import load_dataset
    from selfsup_clusters.data.cache import cache_dataset
    from selfsup_clusters.recipes import load_config

    cfg = load_config(config, [*overrides, "data.cache=false", "data.val_fraction=0"])
    data = load_dataset(cfg.data)  # training's subset and test subset, before any validation split is held out
    if data.train.paths is None:
        raise UserError(f"{cfg.data.name} is held in memory already; the cache is for --dataset imagefolder:PATH "
                        "and csv:PATH")
    _, info = cache_dataset(data, replace(cfg.data, cache=True))
    state = "up to date" if info.built_seconds is None else f"built in {info.built_seconds:.1f} s"
    return (f"{info.images} images ({len(data.train)} train, {len(data.test)} test) at {info.size}x{info.size} px "
            f"in {info.folder}: {info.bytes / 1e6:.1f} MB, {state}")


