"""`selfsup-clusters` command line: sub-commands train (eval, compare, clusters, bench follow)."""

from __future__ import annotations

import argparse
import json
import sys

from selfsup_clusters.errors import UserError

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
    parser = argparse.ArgumentParser(prog="selfsup-clusters", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train one method; key=value overrides any config field")
    train.add_argument("--config", help="YAML config (default: configs/fashion_mnist.yaml)")
    train.add_argument("--method", help="simclr, ... (see the README)")
    train.add_argument("--dataset", help="dataset name (default fashion-mnist)")
    train.add_argument("--data-root", help="folder holding the dataset files")
    train.add_argument("--download", action="store_true", help="download the dataset if it is missing")
    train.add_argument("--backbone", help="timm model name (default resnet18)")
    train.add_argument("--epochs", type=int)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--subset", type=int, help="train on the first N training images")
    train.add_argument("--seed", type=int)
    train.add_argument("--clusters", metavar="SPEC", help="none, labels, kmeans:K[,K2..], wordnet:LEVEL, attributes:K")
    train.add_argument("--out", help="run folder (default runs/<method>-<timestamp>)")
    train.add_argument("--resume", metavar="DIR", help="continue the run in DIR from checkpoints/last.pt")
    train.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. optim.lr=0.3 model.stem=small")

    clusters = sub.add_parser("clusters", help="print cluster statistics (H, I, NMI, AMI) of every auxiliary level")
    clusters.add_argument("--config", help="YAML config (default: configs/fashion_mnist.yaml)")
    clusters.add_argument("--dataset")
    clusters.add_argument("--data-root")
    clusters.add_argument("--subset", type=int, help="use the first N training images")
    clusters.add_argument("overrides", nargs="*", metavar="key=value")
    return parser


def config_overrides(args: argparse.Namespace) -> list[str]:
    overrides = [f"{key}={getattr(args, flag)}" for flag, key in TRAIN_FLAGS.items()
                 if getattr(args, flag, None) is not None]
    if getattr(args, "download", False):
        overrides.append("data.download=true")
    return list(args.overrides) + overrides  # a named flag wins over a key=value for the same field


def cmd_train(args: argparse.Namespace) -> int:
    from selfsup_clusters.config import load_config
    from selfsup_clusters.trainer import train

    overrides = config_overrides(args)
    if args.resume:
        if overrides or args.config:
            raise UserError("--resume continues the saved run exactly; drop the other options "
                            f"({' '.join(overrides) or '--config'})")
        final = train(load_config(), resume=args.resume)
    else:
        final = train(load_config(args.config, overrides))
    summary = {k: final[k] for k in ("knn_top1", "knn_k", "knn_t", "loss", "images_per_s", "train_time_s")
               if k in final}
    print(f"done: {final['out_dir']}  " + json.dumps(summary))
    return 0


def cmd_clusters(args: argparse.Namespace) -> int:
    from selfsup_clusters.clusters import format_table, statistics_table
    from selfsup_clusters.config import load_config
    from selfsup_clusters.data import load_dataset

    cfg = load_config(args.config, config_overrides(args))
    data = load_dataset(cfg.data)
    rows = statistics_table(data.train.labels, data.class_names, wnids=data.wnids, attributes=data.train.attributes,
                            attribute_names=data.attribute_names or None, wordnet_dir=cfg.clusters.wordnet_dir)
    print(f"{cfg.data.name}: {len(data.train)} training images, {len(data.class_names)} classes; "
          "H, I in bits (T = class label)")
    print(format_table(rows))
    return 0


COMMANDS = {"train": cmd_train, "clusters": cmd_clusters}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except UserError as e:
        print(f"selfsup-clusters: error: {e}", file=sys.stderr)
        return 2
