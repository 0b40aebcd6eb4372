"""Taking a trained backbone out of the tool.

`export_backbone` writes a checkpoint's backbone as `model.safetensors` plus `config.json`; with timm's own stem
timm alone loads it (`timm.create_model(name, pretrained=False, num_classes=0, in_chans=C,
checkpoint_path=DIR/model.safetensors)`), with `model.stem=small` `load_backbone(DIR)` does (timm has no such
stem). `embed` writes the backbone features of a dataset split to .npy or .npz. Both read only the checkpoint's
backbone, never its optimizer or memory bank.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import nn

from selfsup_clusters.config import Config, ModelConfig
from selfsup_clusters.core.errors import UserError, first_line
from selfsup_clusters.core.files import atomic_write, writable_folder
from selfsup_clusters.core.progress import progress
from selfsup_clusters.methods.backbones import create_backbone
from selfsup_clusters.training.checkpoint import load_checkpoint

FORMAT = "selfsup-clusters-backbone/1"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
# With the checkpoint's data.val_fraction > 0, "train" is the training images outside the validation split and
# "val" that split (load_dataset's holdout, over the whole training set: the run's data.subset is dropped); "test"
# is always the test set.
SPLITS = ("train", "val", "test")


@dataclass
class TrainedBackbone:
    """A checkpoint's backbone (eval mode, on the CPU) and what it takes to feed it: `info` is the
    "selfsup_clusters" block of an export's config.json."""

    model: nn.Module
    info: dict
    cfg: Config


def backbone_from_checkpoint(path: str | Path, overrides: list[str] | None = None) -> TrainedBackbone:
    """The backbone of a training checkpoint (last.pt or an epochNNNN.pt). `overrides` change the checkpoint's
    config (data settings for `embed`)."""
    from selfsup_clusters.training.run import config_from_checkpoint

    checkpoint = load_checkpoint(path)
    cfg = config_from_checkpoint(checkpoint, overrides)
    data = checkpoint.get("data") or _describe_data(cfg)
    model = create_backbone(cfg.model, data["channels"])
    prefix = "backbone."
    state = {key[len(prefix):]: value for key, value in checkpoint["model"].items() if key.startswith(prefix)}
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise UserError(f"{path}: the backbone does not match its own config ({first_line(e)}); "
                        "it is damaged") from None
    info = {
        "format": FORMAT,
        "timm_name": cfg.model.backbone,
        "in_chans": data["channels"],
        "stem": cfg.model.stem,
        "image_size": cfg.data.image_size,
        "mean": [float(m) for m in data["mean"]],
        "std": [float(s) for s in data["std"]],
        "num_features": int(model.num_features),
        "method": cfg.method,
        "clusters": cfg.clusters.spec,
        "epoch": int(checkpoint["epoch"]) + 1,  # epochs trained
        "dataset": cfg.data.name,
        "seed": cfg.seed,
    }
    return TrainedBackbone(model.eval(), info, cfg)


def _describe_data(cfg: Config) -> dict:
    """Channels and normalisation of the training data, for checkpoints written before they were recorded."""
    from selfsup_clusters.data import load_dataset

    data = load_dataset(cfg.data)
    return {"channels": data.channels, "mean": data.mean, "std": data.std}


def export_backbone(checkpoint: str | Path, out: str | Path) -> dict:
    """Write the checkpoint's backbone to `out`/model.safetensors and `out`/config.json (each atomically);
    returns the config. config.json follows timm's Hub layout (architecture, model_args, pretrained_cfg with
    input size, mean and std), so `timm.create_model("local-dir:OUT", pretrained=True)` works too (timm stem),
    and keeps this tool's own fields under "selfsup_clusters"."""
    out = writable_folder(out)
    trained = backbone_from_checkpoint(checkpoint)
    info = {**trained.info, "checkpoint": str(checkpoint), "load": load_instruction(trained.info, out)}
    tensors = {key: value.detach().to("cpu", memory_format=torch.contiguous_format, copy=True)
               for key, value in trained.model.state_dict().items()}
    size = [info["in_chans"], info["image_size"], info["image_size"]]
    config = {
        "architecture": info["timm_name"],
        "num_classes": 0,
        "num_features": info["num_features"],
        "model_args": {"in_chans": info["in_chans"]},
        "pretrained_cfg": {"input_size": size, "mean": info["mean"], "std": info["std"], "crop_pct": 1.0,
                           "interpolation": "bilinear", "num_classes": 0},
        "selfsup_clusters": info,
    }
    atomic_write(out / WEIGHTS, lambda f: f.write(safetensors_bytes(tensors, metadata={"format": "pt"})))
    atomic_write(out / CONFIG, lambda f: f.write((json.dumps(config, indent=2) + "\n").encode()))
    return config


def load_instruction(info: dict, out: Path) -> str:
    if info["stem"] == "timm":
        return (f"timm.create_model({info['timm_name']!r}, pretrained=False, num_classes=0, "
                f"in_chans={info['in_chans']}, checkpoint_path={str(out / WEIGHTS)!r})")
    return f"selfsup_clusters.load_backbone({str(out)!r})  # model.stem={info['stem']} is not a timm option"


def load_backbone(folder: str | Path) -> nn.Module:
    """An exported backbone (any stem), in eval mode: (B, C, S, S) images normalised with the config's mean and
    std -> (B, num_features) pooled features."""
    folder = Path(folder)
    try:
        info = json.loads((folder / CONFIG).read_text())["selfsup_clusters"]
        model = create_backbone(ModelConfig(backbone=info["timm_name"], stem=info["stem"]), info["in_chans"])
        model.load_state_dict(load_file(folder / WEIGHTS))
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise UserError(f"{folder} is not a backbone written by `selfsup-clusters export` "
                        f"({type(e).__name__}: {first_line(e)})") from None
    return model.eval()


def embed(checkpoint: str | Path, out: str | Path, split: str = "train", subset: int | None = None,
          batch_size: int | None = None, device: str | None = None, overrides: list[str] | None = None) -> dict:
    """Backbone features (float32, before the projection head, not normalised) of every image of a dataset
    split, written to `out`: .npy holds the (N, D) features; .npz holds `features`, `labels` (-1: none),
    `indices` (positions in the split) and `class_names`. The images are prepared like the evaluation's centre
    view, with the trained model's image size, mean and std. `overrides` change the checkpoint's config, e.g.
    data.name=cifar10 to embed another dataset."""
    from selfsup_clusters.data import load_dataset
    from selfsup_clusters.data.augment import BatchAugment
    from selfsup_clusters.data.loader import make_batches
    from selfsup_clusters.training.run import resolve_device

    out = Path(out)
    if out.suffix not in (".npy", ".npz"):
        raise UserError(f"--out {out}: the file must end in .npy (features) or .npz (features, labels, indices)")
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; give a file name ending in {out.suffix}")
    writable_folder(out.parent)
    if split not in SPLITS:
        raise UserError(f"--split {split!r}: use one of {', '.join(SPLITS)}")
    if subset is not None and subset < 1:
        raise UserError(f"--subset {subset}: give a number of images >= 1")
    whole = ["data.subset=null", "data.test_subset=null", *(["data.val_fraction=0"] if split == "test" else [])]
    trained = backbone_from_checkpoint(checkpoint, [*(overrides or []), *whole])
    info, cfg = trained.info, trained.cfg
    if split == "val" and not cfg.data.val_fraction:
        raise UserError("--split val: this run held out no validation split (data.val_fraction=0); use --split "
                        "train or test, or pass data.val_fraction=F to hold one out")
    data = load_dataset(cfg.data)
    if data.channels != info["in_chans"]:
        raise UserError(f"the backbone takes {info['in_chans']}-channel images but {cfg.data.name} has "
                        f"{data.channels} channels; embed a dataset like the one it was trained on")
    images = data.train if split == "train" else data.test
    if subset is not None:
        images = images.first(min(subset, len(images)))
    run_device = resolve_device(device or cfg.device)
    model = trained.model.to(run_device)
    augment = BatchAugment(cfg.augment, info["image_size"], tuple(info["mean"]), tuple(info["std"]))
    batch_size = batch_size or cfg.eval.batch_size
    batches = make_batches(data, augment, run_device, cfg.data.num_workers).eval(images, batch_size)
    start = time.perf_counter()
    with torch.no_grad():
        features = torch.cat([model(x).float().cpu() for x in progress(
            batches, desc=f"embed {cfg.data.name} {split}", total=-(-len(images) // batch_size),
            unit="batch")]).numpy()
    seconds = time.perf_counter() - start
    if out.suffix == ".npy":
        atomic_write(out, lambda f: np.save(f, features))
    else:
        atomic_write(out, lambda f: np.savez(f, features=features, labels=images.labels.numpy(),
                                             indices=np.arange(len(images)),
                                             class_names=np.array(data.class_names, dtype=str)))
    return {"out": str(out), "dataset": cfg.data.name, "split": split, "images": len(images),
            "dim": int(features.shape[1]), "seconds": seconds}
