"""Evaluation of a run (online, during and after training) and of a checkpoint (offline): features of the centre
views in eval mode, then the pure evaluations of evaluate.py."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from selfsup_clusters.core.errors import UserError
from selfsup_clusters.core.files import atomic_write
from selfsup_clusters.core.progress import progress
from selfsup_clusters.core.seeds import derived_seed
from selfsup_clusters.evaluation.evaluate import (
    evaluate_features,
    extract_features,
    linear_probe_augmented,
    protocol_scores,
)
from selfsup_clusters.training.logger import RunLogger
from selfsup_clusters.training.run import Run, Trained, autocast, load_trained, require_faiss


def backbone_features(run: Run | Trained, split, name: str = "") -> torch.Tensor:
    """L2-normalised backbone features of a split's centre views, in eval mode (the evaluation protocol); a
    progress bar named `name`."""
    batch_size = run.cfg.eval.batch_size
    batches = progress(run.batches.eval(split, batch_size), desc=f"features {name}".strip(),
                       total=math.ceil(len(split) / batch_size), enabled=run.cfg.log.progress, unit="batch")
    with autocast(run):
        return extract_features(run.method.features, batches, modules=[run.method])


def evaluate(run: Run, final: bool = False, logger: RunLogger | None = None, linear: bool = False) -> dict:
    """kNN top-1 on backbone features (eval mode); after the last epoch also the linear probe, the cluster
    quality of the test features and the TensorBoard projector, as `cfg.eval` asks; `linear`: the linear probe
    at another epoch too (a point of `eval.at`'s curve). With data.val_fraction the "test" split is the
    validation split."""
    cfg, data = run.cfg, run.data
    train_features = backbone_features(run, data.train, "train")
    test_features = backbone_features(run, data.test, "test")
    augmented_probe = final and cfg.eval.linear and cfg.eval.linear_augmented_epochs > 0
    probe = (final or linear) and cfg.eval.linear and not augmented_probe
    results, kmeans_ids = evaluate_features(train_features, data.train.labels, test_features, data.test.labels,
                                            cfg.eval, linear=probe, clusters=final and cfg.eval.cluster_metrics,
                                            seed=cfg.seed, show_progress=cfg.log.progress)
    if augmented_probe and results:
        results["linear_top1"] = augmented_linear_probe(run, test_features)
    if final and logger is not None and cfg.eval.projector:
        n = min(cfg.eval.projector, len(data.test))
        metadata = {"label": data.test.labels[:n].tolist(),
                    "class": [data.class_names[i] if i >= 0 else "-" for i in data.test.labels[:n].tolist()]}
        if kmeans_ids is not None:
            metadata["kmeans"] = kmeans_ids[:n].tolist()
        if run.assignments is not None and not run.cluster_source.spec.clustering_dynamic()[0]:
            metadata["train_cluster"] = class_clusters(run.assignments.ids[0], data.train.labels,
                                                       data.test.labels[:n])
        images = None if data.test.images is None else data.test.images[:n]  # file-backed data: no thumbnails
        logger.projector(test_features[:n], metadata, images, step=cfg.epochs * run.steps_per_epoch)
    return results


def augmented_linear_probe(run: Run, test_features: torch.Tensor) -> float:
    """The linear probe on `eval.linear_augmented_epochs` epochs of freshly augmented views (the first view of the
    training pipeline) through the frozen backbone, in eval mode."""
    cfg, train = run.cfg, run.data.train

    def epoch_batches(epoch: int):
        generator = torch.Generator(device=run.device).manual_seed(derived_seed(cfg.seed, 7919, epoch))
        order = torch.randperm(len(train), generator=generator, device=run.device)
        for views, _, labels in run.batches.train(train, order, min(cfg.eval.batch_size, len(train)), generator):
            yield views[0], labels

    was_training = run.method.training
    run.method.eval()
    try:
        with autocast(run):
            return linear_probe_augmented(run.method.features, epoch_batches, test_features,
                                          run.data.test.labels, cfg.eval.linear_augmented_epochs, run.device,
                                          seed=cfg.seed, show_progress=cfg.log.progress)
    finally:
        run.method.train(was_training)


def class_clusters(ids: torch.Tensor, train_labels: torch.Tensor, labels: torch.Tensor) -> list[int]:
    """The training cluster of each label's class (the most common id among that class's training samples):
    fixed clusters (WordNet, labels, superclasses) are functions of the class, so test samples get one too."""
    keep = train_labels >= 0
    pairs = torch.stack([train_labels[keep], ids[keep]], dim=1)
    values, counts = pairs.unique(dim=0, return_counts=True)
    best = {}
    for (label, cluster), count in zip(values.tolist(), counts.tolist(), strict=True):
        if count > best.get(label, (0, -1))[0]:
            best[label] = (count, cluster)
    return [best.get(label, (0, -1))[1] for label in labels.tolist()]


def evaluate_checkpoint(checkpoint_path: str | Path, knn: bool = True, linear: bool = True, clusters: bool = True,
                        overrides: list[str] | None = None) -> dict:
    """Offline evaluation of a checkpoint (by default over the full train/test sets); the results also go to
    eval.json beside the checkpoint."""
    require_faiss(["--clusters"] if clusters else [])
    run = load_trained(checkpoint_path, ["data.subset=null", "data.test_subset=null", *(overrides or [])])
    cfg, data = run.cfg, run.data
    if not data.scorable:
        raise UserError(f"{cfg.data.name} has no labels to evaluate against")
    features = [backbone_features(run, split, name) for split, name in ((data.train, "train"), (data.test, "test"))]
    results, _ = evaluate_features(features[0], data.train.labels, features[1], data.test.labels, cfg.eval,
                                   knn=knn, linear=linear, clusters=clusters, seed=cfg.seed,
                                   show_progress=cfg.log.progress)
    results = {"checkpoint": str(checkpoint_path), "epoch": run.epochs_done, "method": cfg.method,
               "clusters": cfg.clusters.spec, "train_images": len(data.train), "test_images": len(data.test),
               **results}
    (Path(checkpoint_path).parent / "eval.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def rescore_run(run_dir: str | Path, overrides: list[str] | None = None) -> dict:
    """A finished run's final checkpoint scored again under the protocol family (evaluate.protocol_scores), with
    the run's own data and split: features extracted once, no training. final.json gets the new scores, and under
    "rescored" the scores they replace; returns the updated final.json. `overrides`: eval.* settings (the grid,
    the fixed penalty, the protocols)."""
    run_dir = Path(run_dir)
    final_path, checkpoint = run_dir / "final.json", run_dir / "checkpoints" / "last.pt"
    if not final_path.exists() or not checkpoint.exists():
        raise UserError(f"{run_dir} is not a finished run (it needs final.json and checkpoints/last.pt); finish it "
                        f"with: selfsup-clusters train --resume {run_dir}")
    if any(not item.startswith("eval.") for item in overrides or []):
        raise UserError(f"rescore changes only eval.* settings, not {' '.join(overrides or [])}: the data and the "
                        "model are the run's own")
    run = load_trained(checkpoint, overrides)
    if not run.data.scorable:
        raise UserError(f"{run.cfg.data.name} has no labels to score {run_dir} against")
    train, test = (backbone_features(run, split, name) for split, name in ((run.data.train, "train"),
                                                                            (run.data.test, "test")))
    scores = protocol_scores(train, run.data.train.labels, test, run.data.test.labels, run.cfg.eval, run.cfg.seed)
    final = json.loads(final_path.read_text())
    final["rescored"] = {"before": {key: final[key] for key in scores if key in final},
                         "eval": {key: getattr(run.cfg.eval, key) for key in ("probe_l2", "probe_fixed_l2",
                                                                              "protocols", "knn_t")}}
    final.update(scores)
    atomic_write(final_path, lambda f: f.write((json.dumps(final, indent=2) + "\n").encode()))
    return final
