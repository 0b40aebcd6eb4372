"""THE loop: config -> run (run.py) -> epochs of (clustering when due, steps, evaluation, logging, checkpoint).

Read it top to bottom; everything method-specific lives in the method's own file.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import torch

from selfsup_clusters.clusters import batch_mates, cluster_statistics
from selfsup_clusters.config import Config, to_dict, to_yaml
from selfsup_clusters.core import distributed
from selfsup_clusters.core.errors import Interrupted
from selfsup_clusters.core.files import hold_folder, remove_stale_temporaries
from selfsup_clusters.core.progress import progress
from selfsup_clusters.training import cluster_views, provenance
from selfsup_clusters.training.checkpoint import save_checkpoint
from selfsup_clusters.training.divergence import check_finite, diverged
from selfsup_clusters.training.logger import NullLogger, RunLogger
from selfsup_clusters.training.run import (
    EpochProgress,
    Run,
    autocast,
    clustering_features,
    epoch_generator,
    run_folder,
    setup,
    setup_resumed,
)
from selfsup_clusters.training.run_eval import evaluate
from selfsup_clusters.training.stopping import StopRequest


def kmeans_due(run: Run, epoch: int) -> bool:
    c = run.cfg.clusters
    return run.cluster_source.dynamic and epoch >= c.warmup and (epoch - c.warmup) % c.every == 0


def clustering_due(run: Run, epoch: int) -> bool:
    """Fixed clusters once (from the first epoch), k-means on its schedule; a composite spec has both."""
    source = run.cluster_source
    if source is None:
        return False
    return kmeans_due(run, epoch) or (run.assignments is None and source.spec.fixed)


def update_clusters(run: Run, epoch: int, logger: RunLogger) -> list[dict]:
    """Re-cluster (k-means on the memory bank or a fresh pass; fixed sources once), hand the result to the
    method (clearing the optimizer state of any parameters it re-initialised) and log each clustering's
    statistics (fixed parts the first time, k-means parts each time they run)."""
    start = time.perf_counter()
    clustered, first = kmeans_due(run, epoch), run.assignments is None
    features = clustering_features(run) if clustered else None
    features_seconds, start = time.perf_counter() - start, time.perf_counter()
    # One process: FAISS on the whole bank. Under torchrun every rank clusters its shard together with the others
    # (k-means over the shards); every rank ends with the same assignments (fixed parts: computed alike on each).
    run.assignments = run.cluster_source.assign(features)
    seconds = time.perf_counter() - start
    if run.method.needs_cluster_spec:
        for parameter in run.method.set_clusters(run.assignments):
            forget_momentum(run.optimizer, parameter)  # a fresh head must not inherit its predecessor's momentum
    spec = run.cluster_source.spec
    logged = [(name, ids) for name, ids, dynamic in zip(spec.clustering_names(), run.assignments.ids,
                                                        spec.clustering_dynamic(), strict=True)
              if (clustered if dynamic else first)]  # what was clustered now
    rows = [{"name": name, **cluster_statistics(ids, run.data.train.labels), "seconds": seconds,
             "features_seconds": features_seconds} for name, ids in logged]
    # stability to the previous clustering, size histogram, RUN/clusters/epochNNNN.npz, the gallery (cluster_views.py)
    whole = features if isinstance(features, torch.Tensor) else None  # a composite's distances (one process)
    for row, views in zip(rows, cluster_views.after_clustering(run, epoch, whole, [n for n, _ in logged], logger),
                          strict=True):
        row.update(views)
    run.cluster_stats.update({row["name"]: row for row in rows})
    logger.clusters(rows, [torch.bincount(ids) for _, ids in logged], step=epoch * run.steps_per_epoch)
    return rows


def forget_momentum(optimizer: torch.optim.Optimizer, parameter: torch.nn.Parameter) -> None:
    """`parameter` starts its optimizer state afresh. SGD gets a zero momentum buffer rather than none: its first
    step then computes buffer = 0 * momentum + grad = grad, what a missing buffer gives, and the fused kernel (the
    CPU's default) takes no mix of parameters with and without buffers."""
    optimizer.state.pop(parameter, None)
    if isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["momentum"]:
        optimizer.state[parameter] = {"momentum_buffer": torch.zeros_like(parameter)}


def train_epoch(run: Run, epoch: int, logger: RunLogger, done: EpochProgress | None = None,
                stop: StopRequest | None = None) -> dict:
    """The epoch's steps from `done.step` on (a fresh epoch without `done`), adding to `done`; at a step boundary
    where `stop` asks, a step checkpoint and Interrupted. The epoch's record."""
    cfg, method, train = run.cfg, run.method, run.data.train
    done = done or EpochProgress()
    method.train()
    for parameter in method.start_epoch(epoch):  # parameters that begin to learn now start their optimizer state
        if done.step == 0:  # afresh (not again when a run resumes inside the epoch)
            forget_momentum(run.optimizer, parameter)
    generator = epoch_generator(cfg, epoch, run.device)
    order = torch.randperm(len(train), generator=generator, device=run.device)
    if done.step == 0:
        run.memory.begin_epoch(order)  # under torchrun: the samples this epoch does not train keep their rows
    tracked = cluster_views.tracked_clusterings(run, done)
    clusterings = [ids.to(run.device) for _, ids in tracked]
    if done.loss_sum is None:
        done.loss_sum = torch.zeros((), device=run.device)
        done.mates_sum = torch.zeros(len(clusterings), device=run.device)
    start = time.perf_counter()
    bar = progress(range(done.step, run.steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   enabled=cfg.log.progress)
    batches = run.batches.train(train, order, cfg.batch_size, generator, start_step=done.step)
    for step in bar:
        if stop is not None and stop.agreed(run.device):
            stop_here(run, epoch, done, start, stop)
        t0 = time.perf_counter()
        views, index, labels = next(batches)
        done.data_time += time.perf_counter() - t0
        out, samples = train_step(run, views, index, labels)
        done.loss_sum += out["loss"].detach()
        if clusterings:
            done.mates_sum += torch.stack([batch_mates(ids[samples]) for ids in clusterings])
        done.step = step + 1
        global_step = epoch * run.steps_per_epoch + step
        if cfg.log.every_steps and global_step % cfg.log.every_steps == 0:
            log_step(run, out, global_step, logger, bar)
        if cfg.checkpoint.every_steps and (global_step + 1) % cfg.checkpoint.every_steps == 0 \
                and done.step < run.steps_per_epoch:
            save_step(run, epoch, done, start)
    record = epoch_record(run, epoch, done, start)
    record["cluster_mates"] = [(name, ids, mates) for (name, ids), mates in zip(tracked, record["cluster_mates"],
                                                                                 strict=True)]
    # The epoch's loss sum holds every step's loss (a non-finite one stays non-finite): one check per epoch, on a
    # value read to the host anyway, and the weights too, before a checkpoint would keep them.
    check_finite(run, epoch, run.steps_per_epoch, record["loss"])
    return record


def train_step(run: Run, views: list[torch.Tensor], index: torch.Tensor, labels: torch.Tensor
               ) -> tuple[dict, torch.Tensor]:
    """One optimizer step on a batch; its output and the global batch's sample indices (every rank's)."""
    with autocast(run):
        out = run.model(views, index, labels)  # method.training_step
    run.optimizer.zero_grad(set_to_none=True)
    out["loss"].backward()
    run.method.after_backward()
    run.optimizer.step()
    run.scheduler.step()
    samples = distributed.all_gather(index)  # the global batch's samples (cluster-mates diagnostics)
    run.memory.update(index, out["z"])  # this rank's samples: under torchrun each rank keeps its shard
    run.method.after_step()
    return out, samples


def log_step(run: Run, out: dict, global_step: int, logger: RunLogger, bar) -> None:
    scalars = distributed.mean_scalars({k: float(v.detach()) if torch.is_tensor(v) else float(v)
                                        for k, v in out.items() if k != "z"})
    scalars["lr"] = run.optimizer.param_groups[0]["lr"]
    if not math.isfinite(scalars["loss"]):  # the value is on the host already: checking it costs nothing
        epoch, step = divmod(global_step, run.steps_per_epoch)
        raise diverged(run, epoch, step + 1, scalars["loss"])
    logger.scalars(scalars, global_step, prefix="step/")
    bar.set_postfix(loss=f"{scalars['loss']:.3f}")


def epoch_record(run: Run, epoch: int, done: EpochProgress, start: float) -> dict:
    """What an epoch's steps add up to (across a stop and resume: `done` carries the part before)."""
    loss = float(distributed.mean(done.loss_sum)) / run.steps_per_epoch  # waits for queued GPU work: timed below
    seconds = done.seconds + time.perf_counter() - start
    images = run.steps_per_epoch * run.cfg.batch_size * run.cfg.augment.views
    return {
        "loss": loss,
        "lr": run.optimizer.param_groups[0]["lr"],
        "epoch_time_s": seconds,
        "images_per_s": images / seconds,
        "data_time_frac": done.data_time / seconds,
        "samples_seen": (epoch + 1) * run.steps_per_epoch * run.cfg.batch_size,  # the budget so far (the curve's)
        "cluster_mates": (done.mates_sum / run.steps_per_epoch).tolist(),
    }


def save_step(run: Run, epoch: int, done: EpochProgress, start: float) -> None:
    """A step checkpoint into checkpoints/last.pt (rank 0, atomically): the run as after its last step, with the
    epoch's progress so far (its time up to now; `start`: when this process began the epoch)."""
    now = time.perf_counter()
    every_rank = distributed.all_gather(done.loss_sum.view(1))  # each rank sums its own slices' losses
    check_finite(run, epoch, done.step, float(every_rank.mean()) / max(1, done.step))
    memory = run.memory.state_dict()  # every rank's shard, gathered to rank 0
    if distributed.is_main():
        snapshot = dataclasses.replace(done, seconds=done.seconds + now - start, loss_sum=every_rank)
        state = checkpoint_state(run, epoch, run.train_time_s + now - run.started, memory)
        save_checkpoint({**state, "progress": snapshot.state_dict()}, run.out_dir / "checkpoints" / "last.pt")
    distributed.barrier()


def stop_here(run: Run, epoch: int, done: EpochProgress, start: float, stop: StopRequest) -> None:
    save_step(run, epoch, done, start)
    raise Interrupted(f"stopped by {stop.name} at epoch {epoch + 1}/{run.cfg.epochs}, step {done.step}/"
                      f"{run.steps_per_epoch}; saved - continue with: selfsup-clusters train --resume {run.out_dir}")


def evaluate_epoch(run: Run, epoch: int, logger: RunLogger) -> dict:
    """The evaluation due after `epoch`, if any: kNN every `eval.every` epochs, kNN and the linear probe at the
    epochs of `eval.at` (the learning curve), everything after the last epoch; with its time."""
    cfg = run.cfg
    last, curve_point = epoch == cfg.epochs - 1, epoch + 1 in cfg.eval.at
    if not (last or curve_point or (cfg.eval.every and (epoch + 1) % cfg.eval.every == 0)):
        return {}
    start = time.perf_counter()
    results = evaluate(run, final=last, logger=logger, linear=curve_point)
    return {**results, "eval_time_s": time.perf_counter() - start}


def checkpoint_state(run: Run, epoch: int, train_time_s: float, memory: dict) -> dict:
    return {
        "epoch": epoch,
        "train_time_s": train_time_s,
        "config": to_dict(run.cfg),
        "model": run.method.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "memory": memory,  # the bank's state_dict (under torchrun every rank's shard, gathered beforehand)
        "assignments": run.assignments.state_dict() if run.assignments is not None else None,
        "rng": {"torch": torch.get_rng_state(), "python": random.getstate()},
        "run_id": run.run_id,  # resume refuses a checkpoint of another run (run_identity.check_identity)
        # what export and embed need to prepare images without loading the training data
        "data": {"channels": run.data.channels, "mean": list(run.data.mean), "std": list(run.data.std),
                 "class_names": list(run.data.class_names)},
    }


def train(cfg: Config) -> dict:
    """Train one new run into `cfg.out` (default runs/METHOD-STAMP); returns the final metrics that also go to
    final.json. Under torchrun every process runs this; rank 0 alone evaluates, logs, prints and writes
    checkpoints."""

    def open_run(stack: ExitStack) -> Run:  # setup validates; a folder held for a refused config is removed
        out_dir = run_folder(cfg)
        hold(stack, out_dir)
        return setup(cfg, out_dir)

    return execute(open_run)


def resume(run_dir: str | Path) -> dict:
    """Continue the run in `run_dir` exactly where its last checkpoint left it, on its own config; a finished run
    is refused before any data loads."""

    def open_run(stack: ExitStack) -> Run:
        hold(stack, Path(run_dir), "--resume")
        return setup_resumed(run_dir)

    return execute(open_run)


def hold(stack: ExitStack, folder: Path, option: str = "--out") -> None:
    """The run holds its folder (rank 0, for all ranks) until it ends: a second run into it is refused."""
    if distributed.is_main():
        stack.enter_context(hold_folder(folder, option))
        # Held: nobody else writes here, so a temporary file is what a killed write left (tens of MB for last.pt)
        stale = remove_stale_temporaries(folder)
        if stale:
            print(f"{folder}: removed {len(stale)} partial file(s) an interrupted write left (e.g. {stale[0].name})",
                  flush=True)


def execute(open_run: Callable[[ExitStack], Run]) -> dict:
    """The process group, the run `open_run` opens (holding its folder on the stack), its epochs and final.json;
    whatever fails, the process group and the folder are released. SIGTERM and SIGINT stop the run at its next
    step boundary with a step checkpoint (stopping.py)."""
    distributed.init()
    # A bad config must not leave the process group standing: under torchrun its (NCCL) threads would abort every
    # process at exit (SIGABRT) instead of letting it exit with the error's status.
    with ExitStack() as stack:
        stack.callback(distributed.cleanup)
        run = open_run(stack)
        resumed_step = run.start_epoch * run.steps_per_epoch + (run.resumed_progress.step if run.resumed_progress
                                                                 else 0)
        logger = RunLogger(run.out_dir, run.cfg.log.tensorboard, resume_epoch=run.start_epoch,
                           purge_step=resumed_step or None) if distributed.is_main() else NullLogger()
        stack.callback(logger.close)
        try:
            with StopRequest() as stop:
                return train_epochs(run, logger, stop)
        except KeyboardInterrupt:  # before the handlers were in place, or after they were gone
            raise Interrupted(f"interrupted; the last checkpoint is kept - continue with --resume {run.out_dir}"
                              ) from None


def train_epochs(run: Run, logger: RunLogger, stop: StopRequest | None = None) -> dict:
    """The epochs from `run.start_epoch` on (from its step, when a step checkpoint stopped in it), each logged and
    checkpointed; the final metrics."""
    cfg = run.cfg
    environment = provenance.environment(run.device, run.precision, distributed.world_size()) \
        if distributed.is_main() else {}
    logger.run_info(to_yaml(cfg), environment, step=run.start_epoch * run.steps_per_epoch)
    record: dict = {}
    run.started = time.perf_counter()
    train_time_s = run.train_time_s
    scorable = run.data.scorable
    if not scorable and distributed.is_main():
        print(f"{cfg.data.name} has no labels: kNN and linear evaluation are off", flush=True)
    for epoch in range(run.start_epoch, cfg.epochs):
        done = run.resumed_progress if epoch == run.start_epoch else None
        if done is None:
            done = EpochProgress(clusters=update_clusters(run, epoch, logger) if clustering_due(run, epoch) else [])
        record = {"epoch": epoch, **train_epoch(run, epoch, logger, done, stop)}
        record.update({"clusters": done.clusters} if done.clusters else {},
                      **cluster_views.diagnostics(run, record.pop("cluster_mates"), logger, epoch))
        if scorable and distributed.is_main():
            record.update(evaluate_epoch(run, epoch, logger))
        # Log first, then checkpoint: resume drops logged epochs the checkpoint does not cover.
        logger.epoch(record, step=(epoch + 1) * run.steps_per_epoch)
        train_time_s = run.train_time_s + time.perf_counter() - run.started
        memory = run.memory.state_dict()  # under torchrun: every rank's shard, gathered to rank 0
        if distributed.is_main():
            save_epoch(run, epoch, train_time_s, memory)
            print(_epoch_line(record, cfg.epochs), flush=True)
        distributed.barrier()  # every rank leaves the epoch with its checkpoint written
        if stop is not None and epoch + 1 < cfg.epochs and stop.agreed(run.device):
            raise Interrupted(f"stopped by {stop.name} after epoch {epoch + 1}/{cfg.epochs}; saved - continue "
                              f"with: selfsup-clusters train --resume {run.out_dir}")
    final = {
        "config": to_dict(cfg),
        "out_dir": str(run.out_dir),
        "epochs": cfg.epochs,
        "precision": run.precision,
        "environment": environment,  # versions, commit, machine, threads: what the numbers were measured on
        "train_time_s": train_time_s,  # all invocations of a resumed run, up to the last checkpoint
        "run_id": run.run_id,
        **({"unreadable_skipped": len(run.data.skipped_files)} if run.data.skipped_files else {}),
        **{k: v for k, v in record.items() if k not in ("epoch", "clusters", "cluster_diagnostics")},
    }
    logger.final(final, hparams(run))
    return final


def save_epoch(run: Run, epoch: int, train_time_s: float, memory: dict) -> None:
    """checkpoints/last.pt after every epoch, and epochNNNN.pt every `log.save_every` epochs."""
    state = checkpoint_state(run, epoch, train_time_s, memory)
    save_checkpoint(state, run.out_dir / "checkpoints" / "last.pt")
    if run.cfg.log.save_every and (epoch + 1) % run.cfg.log.save_every == 0:
        save_checkpoint(state, run.out_dir / "checkpoints" / f"epoch{epoch + 1:04d}.pt")


def hparams(run: Run) -> dict:
    """The settings a comparison varies, for TensorBoard's HPARAMS tab."""
    cfg = run.cfg
    return {"method": cfg.method, "clusters": cfg.clusters.spec, "dataset": cfg.data.name,
            "backbone": cfg.model.backbone, "epochs": cfg.epochs, "batch_size": cfg.batch_size, "lr": cfg.optim.lr,
            "seed": cfg.seed, "subset": cfg.data.subset or 0,
            **({"temperature": run.method.temperature} if run.method.temperature is not None else {})}


def _epoch_line(record: dict, epochs: int) -> str:
    line = (f"epoch {record['epoch'] + 1}/{epochs}  loss {record['loss']:.4f}  "
            f"{record['images_per_s']:.0f} img/s  {record['epoch_time_s']:.1f}s")
    if "knn_top1" in record:
        line += f"  kNN top-1 {record['knn_top1']:.4f} (k={record['knn_k']}, T={record['knn_t']})"
    if "linear_top1" in record:
        line += f"  linear top-1 {record['linear_top1']:.4f}"
    if "nmi" in record:
        line += f"  NMI {record['nmi']:.3f}"
    if "eval_time_s" in record:
        line += f"  eval {record['eval_time_s']:.1f}s"
    for row in record.get("clusters", []):
        line += f"  [{row['name']}: {row['num_clusters']} clusters, NMI {row['NMI']:.3f}]"
    return line
