"""`selfsup-clusters` command line: sub-commands train, methods, tune, compare, analyze, claims, eval, export, embed,
clusters, bench, cache. `key=value` overrides may stand anywhere among a sub-command's options."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from selfsup_clusters.clusters.spec import SPEC_HELP
from selfsup_clusters.errors import UserError
from selfsup_clusters.files import hold_folder, writable_folder

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


def build_parser() -> argparse.ArgumentParser:
    """One sub-parser per row of COMMANDS: its help line and the function that adds its options."""
    parser = argparse.ArgumentParser(prog="selfsup-clusters", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, add_options, _) in COMMANDS.items():
        add_options(sub.add_parser(name, help=help_text))
    parser.set_defaults(command_parsers=sub.choices)
    return parser


def train_options(train: argparse.ArgumentParser) -> None:
    train.add_argument("--config", help="YAML config (default: configs/fashion_mnist.yaml)")
    train.add_argument("--method", help="simclr, cl-infonce, moco, pcl, ce, supervised (selfsup-clusters methods)")
    train.add_argument("--dataset", help="fashion-mnist (default), cifar10, cifar100, stl10, imagefolder:PATH, "
                                         "csv:PATH")
    train.add_argument("--data-root", help="folder holding the dataset files")
    train.add_argument("--download", action="store_true", help="download the dataset if it is missing")
    train.add_argument("--backbone", help="timm model name (default resnet18)")
    train.add_argument("--epochs", type=int)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--subset", type=int, help="train on the first N training images")
    train.add_argument("--seed", type=int)
    train.add_argument("--clusters", metavar="SPEC", help=SPEC_HELP)
    train.add_argument("--out", help="run folder (default runs/<method>-<timestamp>)")
    train.add_argument("--resume", metavar="DIR", help="continue the run in DIR from checkpoints/last.pt")
    train.add_argument("--print-config", action="store_true", help="print the resolved config (YAML) and exit")
    train.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. optim.lr=0.3 model.stem=small")


def compare_options(compare: argparse.ArgumentParser) -> None:
    compare.add_argument("--methods", default="simclr,cl-infonce", help="comma list (default simclr,cl-infonce)")
    compare.add_argument("--clusters-for", metavar="M=SPEC,...",
                         help="cluster source per method, e.g. cl-infonce=wordnet:8,pcl=kmeans:25,50,100; "
                              "'|' gives one method several rows: cl-infonce=wordnet:7|wordnet:9")
    compare.add_argument("--out", required=True, help="folder for every run and the results")
    compare.add_argument("--clusters", metavar="SPEC", help="for methods that learn from clusters and have no "
                                                            f"--clusters-for entry: {SPEC_HELP}")
    add_shared_run_flags(compare)


def analyze_options(analyze: argparse.ArgumentParser) -> None:
    analyze.add_argument("--out", required=True, help="folder for every run and analysis.csv/.md/.png")
    analyze.add_argument("--also", "--synthetic", dest="also", default="", metavar="SPECS",
                         help="also train on these fixed cluster specs: synthetic sets from the labels and composites, "
                              "e.g. merge:2,split:4,wordnet:7+wordnet:9")
    add_shared_run_flags(analyze)


def tune_options(tune: argparse.ArgumentParser) -> None:
    tune.add_argument("--method", required=True, help="the method to tune (its recipe is the starting point)")
    tune.add_argument("--clusters", metavar="SPEC", help=f"for methods that learn from clusters: {SPEC_HELP}")
    tune.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                      help="values to try for one config key; repeat for a product grid, e.g. --grid optim.lr=0.1,0.3")
    tune.add_argument("--out", required=True, help="folder for every run, tune.csv/.md and best.yaml")
    add_shared_run_flags(tune)


def claims_options(claims: argparse.ArgumentParser) -> None:
    claims.add_argument("--budget", default="cpu", help="smoke, cpu (default) or gpu: configs/claims_<budget>.yaml")
    claims.add_argument("--out", required=True, help="folder for every run, claims.md/.csv and the figures")
    add_shared_run_flags(claims, seeds=3)


def eval_options(evaluate: argparse.ArgumentParser) -> None:
    evaluate.add_argument("--checkpoint", required=True, metavar="PATH", help="e.g. runs/RUN/checkpoints/last.pt")
    evaluate.add_argument("--knn", action="store_true", help="weighted kNN top-1 (eval.knn_k, eval.knn_t)")
    evaluate.add_argument("--linear", action="store_true", help="linear probe top-1 on frozen features")
    evaluate.add_argument("--clusters", action="store_true", help="k-means (K = classes) on test features: NMI/AMI/ARI")
    evaluate.add_argument("--subset", type=int, help="use the first N training images (default: all)")
    evaluate.add_argument("--test-subset", type=int, help="use the first N test images (default: all)")
    evaluate.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. eval.knn_k=20 eval.knn_t=0.07")


def export_options(export: argparse.ArgumentParser) -> None:
    export.add_argument("--checkpoint", required=True, metavar="PATH", help="e.g. runs/RUN/checkpoints/last.pt")
    export.add_argument("--out", required=True, metavar="DIR", help="folder for model.safetensors and config.json")


def embed_options(embed: argparse.ArgumentParser) -> None:
    embed.add_argument("--checkpoint", required=True, metavar="PATH", help="e.g. runs/RUN/checkpoints/last.pt")
    embed.add_argument("--dataset", help="default: the dataset the checkpoint was trained on")
    embed.add_argument("--data-root", help="folder holding the dataset files")
    embed.add_argument("--download", action="store_true", help="download the dataset if it is missing")
    embed.add_argument("--split", default="train",
                       help="train (default), val (the run's validation split, with data.val_fraction) or test")
    embed.add_argument("--subset", type=int, help="the first N images of the split (default: all)")
    embed.add_argument("--batch-size", type=int, help="default: eval.batch_size of the run")
    embed.add_argument("--device", help="default: the run's device setting (auto: a GPU when there is one)")
    embed.add_argument("--out", required=True, metavar="FILE", help="FILE.npy (features) or FILE.npz (features, "
                                                                    "labels, indices, class_names)")
    embed.add_argument("overrides", nargs="*", metavar="key=value", help="data settings, e.g. data.num_workers=2")


def data_options(parser: argparse.ArgumentParser, dataset: str | None = None,
                 subset: str = "use the first N training images", overrides: str | None = None) -> None:
    """A config and the dataset it reads (clusters, cache): --config, --dataset, --data-root, --subset, key=value."""
    parser.add_argument("--config", help="YAML config (default: configs/fashion_mnist.yaml)")
    parser.add_argument("--dataset", help=dataset)
    parser.add_argument("--data-root")
    parser.add_argument("--subset", type=int, help=subset)
    parser.add_argument("overrides", nargs="*", metavar="key=value", help=overrides)


def clusters_options(clusters: argparse.ArgumentParser) -> None:
    data_options(clusters)


def bench_options(bench: argparse.ArgumentParser) -> None:
    bench.add_argument("--method", help="one method (overrides --methods)")
    bench.add_argument("--methods", default="simclr,cl-infonce", help="comma-separated (default simclr,cl-infonce)")
    bench.add_argument("--clusters", default="labels", metavar="SPEC",
                       help=f"for methods that use clusters: {SPEC_HELP}")
    bench.add_argument("--backbone", default="resnet18")
    bench.add_argument("--batch-size", type=int, default=256)
    bench.add_argument("--steps", type=int, default=20, help="timed training steps per method")
    bench.add_argument("--warmup-steps", type=int, default=3)
    bench.add_argument("--image-size", type=int, default=28)
    bench.add_argument("--precision", default="auto", help="auto, fp32 or bf16")
    bench.add_argument("--device", default="auto")
    bench.add_argument("--dataset", default="fashion-mnist", help="a dataset name, or synthetic (random images)")
    bench.add_argument("--channels", type=int, default=1, help="channels of --dataset synthetic")
    bench.add_argument("--kmeans-n", type=int, default=60000)
    bench.add_argument("--kmeans-d", type=int, default=128)
    bench.add_argument("--kmeans-ks", default="100,1000")
    bench.add_argument("--knn-train", type=int, default=60000)
    bench.add_argument("--knn-test", type=int, default=10000)
    bench.add_argument("--out", default="bench_out/bench.json", help="JSON file (default bench_out/bench.json)")
    bench.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. model.compile=true")


def cache_options(cache: argparse.ArgumentParser) -> None:
    data_options(cache, "imagefolder:PATH or csv:PATH", "the first N training images, as training with --subset N "
                 "reads", "e.g. data.image_size=64 data.cache_size=80")


def no_options(parser: argparse.ArgumentParser) -> None:
    pass


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, with a sub-command's `key=value` overrides accepted anywhere among its options
    (`train eval.every=0 --out DIR optim.lr=0.1`): argparse's intermixed parsing, per sub-command."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    first, _ = parser.parse_known_args(argv)  # which sub-command (and -h, or a missing one, as usual)
    position = argv.index(first.command)
    args = first.command_parsers[first.command].parse_intermixed_args(argv[position + 1:])
    args.command = first.command
    return args


def add_shared_run_flags(parser: argparse.ArgumentParser, seeds: int = 1) -> None:
    """The options `compare`, `analyze`, `tune` and `claims` pass to every run they train."""
    parser.add_argument("--seeds", type=int, default=seeds,
                        help=f"seeds per run: --seed, --seed+1, ... (default {seeds})")
    for flag in ("--config", "--dataset", "--data-root", "--backbone"):
        parser.add_argument(flag)
    for flag in ("--epochs", "--batch-size", "--subset", "--seed"):
        parser.add_argument(flag, type=int)
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="shared by every run")


def shared_runs(args: argparse.Namespace):
    """What every run of `compare` / `analyze` / `claims` / `tune` starts from (each run then gets its method's
    recipe, its own folder under --out, its seed), and the seeds: --seed, --seed+1, ..."""
    from selfsup_clusters.recipes import UserConfig

    if args.seeds < 1:
        raise UserError("--seeds must be at least 1")
    writable_folder(args.out)
    user = UserConfig(args.config, tuple(o for o in config_overrides(args) if not o.startswith("out=")))
    first = user.load().seed
    return user, list(range(first, first + args.seeds))


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
    from selfsup_clusters import distributed
    from selfsup_clusters.config import to_yaml
    from selfsup_clusters.recipes import load_config
    from selfsup_clusters.trainer import resume, train

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
    from selfsup_clusters.checkpoint import load_checkpoint
    from selfsup_clusters.run import config_from_checkpoint

    return config_from_checkpoint(load_checkpoint(Path(run_dir) / "checkpoints" / "last.pt"))


def run_suite(args: argparse.Namespace, train_runs, outputs: str) -> int:
    """compare, tune, analyze, claims: the shared runs, trained with the suite's --out held (a second suite into
    it is refused), then its report; exit status 1 when some run failed."""
    user, seeds = shared_runs(args)
    with hold_folder(args.out):
        report, failures = train_runs(user, seeds, Path(args.out))
    print(report)
    print(f"written to {args.out}/{outputs}")
    return 1 if failures else 0


def cmd_compare(args: argparse.Namespace) -> int:
    from selfsup_clusters.compare import compare, parse_clusters_for

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    clusters_for = parse_clusters_for(args.clusters_for)
    return run_suite(args, lambda user, seeds, out: compare(user, methods, clusters_for, seeds, out),
                     f"results.csv, results.md, results.png; tensorboard --logdir {args.out}")


def cmd_tune(args: argparse.Namespace) -> int:
    from selfsup_clusters.tune import parse_grid, tune

    grid = parse_grid(args.grid)
    return run_suite(args, lambda user, seeds, out: tune(user, args.method, grid, seeds, out),
                     "tune.csv, tune.md, best.yaml")


def cmd_analyze(args: argparse.Namespace) -> int:
    from selfsup_clusters.analyze import analyze
    from selfsup_clusters.clusters import split_spec_list

    return run_suite(args, lambda user, seeds, out: analyze(user, split_spec_list(args.also), seeds, out),
                     "analysis.csv, analysis.md, analysis.png")


def cmd_claims(args: argparse.Namespace) -> int:
    from selfsup_clusters.claims import budget_config, claims

    args.config = args.config or budget_config(args.budget)
    return run_suite(args, claims, "claims.md, claims.csv, claims_c1.png ... claims_c4.png")


def cmd_eval(args: argparse.Namespace) -> int:
    from selfsup_clusters.run_eval import evaluate_checkpoint

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
    from selfsup_clusters.export import export_backbone

    config = export_backbone(args.checkpoint, args.out)
    info = config["selfsup_clusters"]
    print(f"exported {info['timm_name']} ({info['in_chans']}x{info['image_size']}x{info['image_size']} in, "
          f"{info['num_features']} features; {info['method']}, epoch {info['epoch']}) to {args.out}/model.safetensors "
          "and config.json")
    print(f"load it with: {info['load']}")
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    from selfsup_clusters.export import embed

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
    from selfsup_clusters.clusters import statistics_table
    from selfsup_clusters.data import load_dataset
    from selfsup_clusters.recipes import load_config
    from selfsup_clusters.tables import format_table

    cfg = load_config(args.config, config_overrides(args))
    data = load_dataset(cfg.data)
    rows = statistics_table(data.auxiliary, cfg.clusters.wordnet_dir)
    print(f"{cfg.data.name}: {len(data.train)} training images, {len(data.class_names)} classes; "
          "H, I in bits (T = class label)")
    print(format_table(rows))
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    from selfsup_clusters.methods import methods_table

    print(methods_table())
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from selfsup_clusters.bench import run_bench

    run_bench(args)
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    from selfsup_clusters.data.cache import prepare_cache

    print(prepare_cache(args.config, config_overrides(args)))
    return 0


COMMANDS = {  # name: (help line, its options, what it runs), in the order --help lists them
    "train": ("train one method; key=value overrides any config field", train_options, cmd_train),
    "compare": ("train several methods with the same options and tabulate them", compare_options, cmd_compare),
    "analyze": ("cl-infonce on every cluster level: accuracy against I(Z;T), H(Z|T)", analyze_options, cmd_analyze),
    "methods": ("list the methods: what each learns from, its reference recipe and source", no_options,
                cmd_methods),
    "tune": ("choose hyperparameters on a validation split held out of the training set", tune_options, cmd_tune),
    "claims": ("train the runs the paper's four claims need; verdicts with intervals", claims_options, cmd_claims),
    "eval": ("evaluate a checkpoint: kNN, linear probe, cluster quality (default all)", eval_options, cmd_eval),
    "export": ("write a checkpoint's backbone as model.safetensors + config.json (loadable by timm)", export_options,
               cmd_export),
    "embed": ("backbone features of a dataset split to .npy, or .npz with labels and indices", embed_options,
              cmd_embed),
    "clusters": ("print cluster statistics (H, I, NMI, AMI) of every auxiliary level", clusters_options,
                 cmd_clusters),
    "bench": ("measure training images/s, MFU, k-means and kNN time on this machine", bench_options, cmd_bench),
    "cache": ("decode an image folder or CSV table once into the cache training reads (data.cache; built on first "
              "use otherwise)", cache_options, cmd_cache),
}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return COMMANDS[args.command][2](args)
    except UserError as e:
        print(f"selfsup-clusters: error: {e}", file=sys.stderr)
        return 2
