"""The `selfsup-clusters` command line: this file parses (COMMANDS, one row per sub-command); what each sub-command
does is commands.py's. The parser's description is DESCRIPTION, written for users."""

from __future__ import annotations

import argparse
import sys

from selfsup_clusters import commands
from selfsup_clusters.clusters.spec import SPEC_HELP
from selfsup_clusters.core.errors import DIVERGED, Diverged, Interrupted, UserError
from selfsup_clusters.methods.registry import METHODS
from selfsup_clusters.training.stopping import STOPPED

DESCRIPTION = ("Self-supervised representation learning from clusters: train a method (Cl-InfoNCE and its "
               "baselines), compare and tune methods, evaluate, export and embed trained runs. `key=value` overrides "
               "any config field, anywhere among a sub-command's options.")


def build_parser() -> argparse.ArgumentParser:
    """One sub-parser per row of COMMANDS: its help line and the function that adds its options."""
    parser = argparse.ArgumentParser(prog="selfsup-clusters", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, add_options, _) in COMMANDS.items():
        add_options(sub.add_parser(name, help=help_text))
    parser.set_defaults(command_parsers=sub.choices)
    return parser


def train_options(train: argparse.ArgumentParser) -> None:
    train.add_argument("--config", help="YAML config (default: configs/fashion_mnist.yaml)")
    train.add_argument("--method", help=f"{', '.join(METHODS)} (selfsup-clusters methods)")
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
    add_shared_run_flags(compare, until_decided=True)


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
    add_shared_run_flags(claims, seeds="claims.seeds of the budget", until_decided=True)


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
    clusters.add_argument("--run", metavar="DIR", help="a run folder: its clusters (RUN/clusters/epochNNNN.npz) "
                                                       "instead of the dataset's auxiliary levels")
    clusters.add_argument("--epoch", type=int, metavar="N", help="with --run: the clusters epoch N trained with "
                                                                 "(default: the latest)")
    clusters.add_argument("--out", metavar="FILE.png", help="with --run: draw the cluster gallery into FILE.png")


def rescore_options(rescore: argparse.ArgumentParser) -> None:
    rescore.add_argument("folder", metavar="DIR", help="a finished run, or a folder of them (a compare, claims, "
                                                        "tune or analyze --out)")
    rescore.add_argument("overrides", nargs="*", metavar="key=value",
                         help="eval.* settings, e.g. eval.probe_l2=[1e-4,1e-3,1e-2] eval.protocols=[knn20]")


def cmd_rescore(args: argparse.Namespace) -> int:
    """commands.rescore, then the command that wrote the folder's tables run again (it trains nothing: every run
    is finished), so they are rewritten from the new scores."""
    replay = commands.rescore(args)
    return main(replay) if replay else 0


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
    args.command, args.argv = first.command, argv
    return args


def add_shared_run_flags(parser: argparse.ArgumentParser, seeds: str = "1", until_decided: bool = False) -> None:
    """The options `compare`, `analyze`, `tune` and `claims` pass to every run they train."""
    more = (" or MIN..MAX: seeds until decided, one more per round for the runs an undecided comparison needs "
            "(intervals valid under that stopping)") if until_decided else ""
    parser.add_argument("--seeds", help=f"seeds per run: --seed, --seed+1, ...{more} (default {seeds})")
    for flag in ("--config", "--dataset", "--data-root", "--backbone"):
        parser.add_argument(flag)
    for flag in ("--epochs", "--batch-size", "--subset", "--seed"):
        parser.add_argument(flag, type=int)
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="shared by every run")


COMMANDS = {  # name: (help line, its options, what it runs: commands.py), in the order --help lists them
    "train": ("train one method; key=value overrides any config field", train_options, commands.cmd_train),
    "compare": ("train several methods with the same options and tabulate them", compare_options,
                commands.cmd_compare),
    "analyze": ("cl-infonce on every cluster level: accuracy against I(Z;T), H(Z|T)", analyze_options,
                commands.cmd_analyze),
    "methods": ("list the methods: what each learns from, its reference recipe and source", no_options,
                commands.cmd_methods),
    "tune": ("choose hyperparameters on a validation split held out of the training set", tune_options,
             commands.cmd_tune),
    "claims": ("train the runs the paper's four claims need; verdicts with intervals", claims_options,
               commands.cmd_claims),
    "eval": ("evaluate a checkpoint: kNN, linear probe, cluster quality (default all)", eval_options,
             commands.cmd_eval),
    "export": ("write a checkpoint's backbone as model.safetensors + config.json (loadable by timm)", export_options,
               commands.cmd_export),
    "embed": ("backbone features of a dataset split to .npy, or .npz with labels and indices", embed_options,
              commands.cmd_embed),
    "clusters": ("print cluster statistics (H, I, NMI, AMI) of every auxiliary level; --run DIR: a run's "
                 "clusters, --out FILE.png: their gallery", clusters_options,
                 commands.cmd_clusters),
    "rescore": ("score finished runs again under the evaluation protocol family, no training; rewrite their tables",
                rescore_options, cmd_rescore),
    "bench": ("measure training images/s, MFU, k-means and kNN time on this machine", bench_options,
              commands.cmd_bench),
    "cache": ("decode an image folder or CSV table once into the cache training reads (data.cache; built on first "
              "use otherwise)", cache_options, commands.cmd_cache),
}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return COMMANDS[args.command][2](args)
    except Interrupted as e:  # stopped by a signal, saved: "resumable", not a failure (stopping.STOPPED)
        print(f"selfsup-clusters: {e}", file=sys.stderr)
        return STOPPED
    except Diverged as e:  # a non-finite loss: not a bad input nor a crash (errors.DIVERGED)
        print(f"selfsup-clusters: error: {e}", file=sys.stderr)
        return DIVERGED
    except UserError as e:
        print(f"selfsup-clusters: error: {e}", file=sys.stderr)
        return 2
