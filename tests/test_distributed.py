"""torchrun with 2 CPU processes (gloo) against one process with the same global batch.

Tiny runs (conftest.TINY) at a low learning rate (optim.lr=0.005): this tiny model's training amplifies float
rounding quickly, and the 2-rank run rounds differently (gathered rows, BatchNorm statistics summed over ranks,
one thread per process). Measured with one process, channels_last on vs off changes SimCLR's step losses by at most
4e-5 over 8 steps at this learning rate (3e-3 at 4x the rate), and Cl-InfoNCE's (T=0.1, a key queue) by 1e-3 in
its first 4 steps. A wrong gradient scale moves the second step's loss by 1e-2 (SimCLR) or 0.4 (Cl-InfoNCE); a
missing rank's negatives moves the first by about log 2.

This file is also the worker torchrun starts (see the bottom): the CLI, plus a dump of the cluster ids each rank
trains with.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

try:
    from tests.conftest import every_method
except ImportError:  # this file run by torchrun as the worker script, where `tests` is no package: it collects nothing
    def every_method(extras, **_):
        return []

TESTS = Path(__file__).resolve().parent
CALM = ["optim.lr=0.005", "model.sync_bn=true", "eval.linear=false", "eval.cluster_metrics=false", "eval.projector=0"]


def torchrun(args: list[str], dump: Path, nproc: int = 2) -> str:
    """`torchrun --standalone --nproc-per-node 2` of this file's worker (the CLI); returns its output."""
    dump.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               str(Path(__file__)), str(dump), *args]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def step_losses(run_dir: Path) -> list[float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir))
    events.Reload()
    return [e.value for e in events.Scalars("step/loss")]


def max_difference(one: list[float], two: list[float]) -> float:
    assert len(one) == len(two)
    return max(abs(a - b) for a, b in zip(one, two, strict=True))


def one_process(overrides: list[str]) -> None:
    from selfsup_clusters.recipes import load_config
    from selfsup_clusters.training.trainer import train

    train(load_config(overrides=overrides))


# --- without processes: the helpers are no-ops, and a rank's slice of a batch is the slice of the 1-rank batch ---


def test_one_process_helpers_return_their_input():
    from selfsup_clusters.core import distributed

    x = torch.randn(4, 3)
    assert not distributed.enabled() and distributed.world_size() == 1 and distributed.is_main()
    assert distributed.all_gather(x) is x and distributed.all_gather(x, with_grad=True) is x
    assert distributed.other_ranks(x) is None and distributed.mean(x) is x
    assert distributed.broadcast_object({"a": 1}) == {"a": 1}
    module = torch.nn.BatchNorm1d(3)
    assert distributed.data_parallel(module, torch.device("cpu")) is module
    assert distributed.sync_batchnorm(module, torch.device("cpu")) is module
    assert distributed.gather_others(x, torch.arange(4)) == (None, None)


def test_gather_others_is_the_other_ranks_rows_with_their_gradient(monkeypatch):
    """Rank 1 of 2, the collectives played in-process: rank 0 holds this rank's rows + 100, and each rank's loss
    is the sum of the other rank's rows, so every row's gradient is 1 (it reaches the rank that computed it)."""
    from selfsup_clusters.core import distributed

    monkeypatch.setattr(distributed, "enabled", lambda: True)
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    monkeypatch.setattr(distributed, "rank", lambda: 1)
    monkeypatch.setattr(distributed.dist, "all_gather", lambda parts, x: [parts[0].copy_(x + 100), parts[1].copy_(x)])
    # Sum over the ranks: rank 0's gradient of the gathered rows is this rank's with its halves swapped.
    monkeypatch.setattr(distributed.dist, "all_reduce", lambda grad: grad.add_(grad.roll(grad.shape[0] // 2, 0)))
    z, ids = torch.randn(3, 2, requires_grad=True), torch.tensor([5, 6, 7])
    others, other_ids = distributed.gather_others(z, ids)
    assert torch.equal(others, z.detach() + 100) and torch.equal(other_ids, ids + 100)
    assert others.requires_grad and not other_ids.requires_grad
    others.sum().backward()
    assert torch.equal(z.grad, torch.ones(3, 2))


def test_each_rank_gets_its_slice_of_the_same_views(monkeypatch):
    from selfsup_clusters.config import AugmentConfig
    from selfsup_clusters.core import distributed
    from selfsup_clusters.data.augment import BatchAugment
    from selfsup_clusters.data.base import Split
    from selfsup_clusters.data.loader import InMemoryBatches

    images = torch.randint(0, 256, (24, 1, 28, 28), dtype=torch.uint8)
    split = Split(images, torch.arange(24))
    batches = InMemoryBatches(BatchAugment(AugmentConfig(), 28, (0.5,), (0.25,)), torch.device("cpu"))
    order = torch.randperm(24)

    def epoch(rank: int, world: int) -> list:
        monkeypatch.setattr(distributed, "rank", lambda: rank)
        monkeypatch.setattr(distributed, "world_size", lambda: world)
        return list(batches.train(split, order, 8, torch.Generator().manual_seed(5)))

    whole = epoch(0, 1)
    parts = [epoch(r, 2) for r in range(2)]
    for step, (views, index, labels) in enumerate(whole):
        for r, part in enumerate(parts):
            rows = slice(4 * r, 4 * (r + 1))
            assert torch.equal(part[step][1], index[rows]) and torch.equal(part[step][2], labels[rows])
            for view, part_view in zip(views, part[step][0], strict=True):
                torch.testing.assert_close(part_view, view[rows])


# --- 2 processes with gloo ---

needs_gloo = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="this PyTorch build has no gloo backend")


@pytest.fixture(scope="module")
def simclr_one_process(tmp_path_factory):
    """An uninterrupted 1-process SimCLR run, the reference of the 2-process runs."""
    from tests.conftest import TINY

    run = tmp_path_factory.mktemp("one") / "run"
    one_process([*TINY, *CALM, f"out={run}"])
    return run


def assert_shards_split_the_bank(rank0: dict, rank1: dict, size: int) -> None:
    """The two ranks' memory-bank shards hold every one of `size` samples exactly once, and nothing else: no rank
    keeps the whole bank."""
    index = torch.cat([rank0["bank_index"], rank1["bank_index"]])
    assert torch.equal(index.sort().values, torch.arange(size))
    assert 0 < len(rank0["bank_index"]) < size and len(rank0["bank"]) == len(rank0["bank_index"])


@needs_gloo
@pytest.mark.usefixtures("needs_data")
def test_simclr_on_two_ranks_matches_one_rank(simclr_one_process, tmp_path):
    from tests.conftest import TINY, metrics

    run = tmp_path / "run"
    out = torchrun(["train", *TINY, *CALM, f"out={run}"], tmp_path / "dump")
    assert out.count("done:") == 1 and out.count("epoch 2/2") == 1  # rank 0 alone prints
    difference = max_difference(step_losses(simclr_one_process), step_losses(run))
    print(f"simclr: 2 ranks vs 1, largest step-loss difference over 8 steps {difference:.1e}")
    assert difference < 1e-3
    two, one = metrics(run), metrics(simclr_one_process)
    assert [r["epoch"] for r in two] == [0, 1] and "knn_top1" in two[-1]
    assert abs(two[-1]["loss"] - one[-1]["loss"]) < 1e-3
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert not any(key.startswith("module.") for key in state["model"])  # no DDP prefix: loads anywhere


@needs_gloo
@pytest.mark.usefixtures("needs_data")
def test_resume_a_one_rank_run_on_two_ranks(simclr_one_process, tmp_path, monkeypatch):
    from tests.conftest import TINY, interrupted_run, metrics

    run = tmp_path / "run"
    interrupted_run([*TINY, *CALM, f"out={run}"], monkeypatch)  # 1 process, stopped after epoch 1
    out = torchrun(["train", "--resume", str(run)], tmp_path / "dump")
    assert "epoch 2/2" in out
    resumed, uninterrupted = metrics(run), metrics(simclr_one_process)
    assert [r["epoch"] for r in resumed] == [0, 1]
    assert resumed[0]["loss"] == uninterrupted[0]["loss"]
    assert abs(resumed[1]["loss"] - uninterrupted[1]["loss"]) < 1e-3


@needs_gloo
@pytest.mark.usefixtures("needs_data")
def test_cl_infonce_kmeans_on_two_ranks_matches_one_rank_with_equal_clusters(tmp_path, monkeypatch):
    from selfsup_clusters.clusters import Shard, sources
    from selfsup_clusters.training.trainer import resume
    from tests.conftest import TINY, metrics

    # k-means before epoch 1 on a fresh pass of the initial model (the bank is still empty; each rank passes its
    # contiguous half), before epoch 2 on the memory bank, each rank's shard filled by its own samples: k-means over
    # the shards. The one-process run clusters with the same algorithm over one shard (the contiguous halves in
    # order are that shard's rows: the same initial centroids), so both runs start from the same clusters. A key
    # queue, filled from both.
    monkeypatch.setattr(sources, "run_kmeans", lambda features, ks, options, warn=True: sources.sharded_kmeans(
        Shard(features, torch.arange(len(features)), len(features)), ks, options, warn=warn))
    cl = ["method=cl-infonce", "clusters.spec=kmeans:8", "method_args.key_queue=96"]
    one_process([*TINY, *CALM, *cl, f"out={tmp_path / 'one'}"])
    dump = tmp_path / "dump"
    torchrun(["train", *TINY, *CALM, *cl, "log.save_every=1", f"out={tmp_path / 'two'}"], dump)
    one, two = step_losses(tmp_path / "one"), step_losses(tmp_path / "two")
    first_epoch, second_epoch = max_difference(one[:4], two[:4]), max_difference(one[4:], two[4:])
    print(f"cl-infonce: 2 ranks vs 1, largest step-loss difference {first_epoch:.1e} (epoch 1), "
          f"{second_epoch:.1e} (epoch 2, after re-clustering the slightly different banks)")
    # With these clusters the rounding grows to 2.5e-3 by the 4th step (with FAISS's clusters on both sides, 8.9e-4:
    # how fast it grows depends on the trajectory); the faults in the module docstring move losses by 1e-2 or more.
    assert first_epoch < 5e-3 and second_epoch < 0.2
    for epoch in (0, 1):
        rank0, rank1 = (torch.load(dump / f"rank{r}_epoch{epoch}.pt") for r in (0, 1))
        assert torch.equal(rank0["cluster_ids"][0], rank1["cluster_ids"][0])  # every rank, the same clusters
        assert len(rank0["cluster_ids"][0].unique()) > 1
    assert rank0["bank_seen"] and rank1["bank_seen"]  # epoch 2 clustered the bank, not a fresh pass
    assert_shards_split_the_bank(rank0, rank1, 256)  # each rank holds only its own samples' rows
    state = torch.load(tmp_path / "two" / "checkpoints" / "last.pt", weights_only=True)
    assert torch.equal(torch.as_tensor(state["assignments"]["ids"][0]), rank0["cluster_ids"][0])
    # The checkpoint after epoch 1 holds the whole bank, gathered from the shards; one process resumes from it
    # (another number of processes) and clusters that bank before epoch 2.
    first = torch.load(tmp_path / "two" / "checkpoints" / "epoch0001.pt", weights_only=True)
    assert first["memory"]["seen"].all()
    for shard in (torch.load(dump / f"rank{r}_state_epoch0.pt") for r in (0, 1)):
        assert torch.equal(first["memory"]["features"][shard["bank_index"]], shard["bank"])
    two_ranks = metrics(tmp_path / "two")
    shutil.copy(tmp_path / "two" / "checkpoints" / "epoch0001.pt", tmp_path / "two" / "checkpoints" / "last.pt")
    resume(tmp_path / "two")
    one_rank = metrics(tmp_path / "two")
    assert [r["epoch"] for r in one_rank] == [0, 1] and one_rank[0] == two_ranks[0] and "clusters" in one_rank[1]
    assert abs(one_rank[1]["loss"] - two_ranks[1]["loss"]) < 0.2  # other clusters (and rounding): not equal


@needs_gloo
@pytest.mark.slow
@pytest.mark.usefixtures("needs_data")
@pytest.mark.parametrize("name, method", every_method({
    "moco": ["method=moco", "method_args.queue_size=256", "method_args.shuffle_bn_splits=2", "model.sync_bn=false"],
    "pcl": ["method=pcl", "clusters.spec=kmeans:8,16", "method_args.queue_size=256", "method_args.shuffle_bn_splits=2"],
    "cl-infonce": ["method=cl-infonce", "clusters.spec=kmeans:8", "method_args.key_queue=96"],
    # each rank queues 64 of the 128 from epoch 2 on; Sinkhorn's sums over both ranks
    "swav": ["method=swav", "method_args.num_prototypes=16", "method_args.queue_length=128",
             "method_args.queue_start_epoch=1"],
}))
def test_every_method_trains_on_two_ranks(name, method, tmp_path):
    from tests.conftest import TINY, metrics

    dump = tmp_path / "dump"
    torchrun(["train", *TINY, *CALM, *method, f"out={tmp_path / 'run'}"], dump)  # checks the bank every step
    records = metrics(tmp_path / "run")
    assert [r["epoch"] for r in records] == [0, 1]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in records)
    final = json.loads((tmp_path / "run" / "final.json").read_text())
    assert 0.0 <= final["knn_top1"] <= 1.0
    # The ranks stay in step: after every epoch (for ce: after its heads were re-initialised before epoch 1; for
    # pcl: after each rank sampled its own negative prototypes) every parameter and buffer is equal on both
    # ranks, and so is the memory bank. Without sync_bn each rank's BatchNorm keeps its own running statistics.
    per_rank_bn = "model.sync_bn=false" in method
    for epoch in (0, 1):
        rank0, rank1 = (torch.load(dump / f"rank{r}_state_epoch{epoch}.pt") for r in (0, 1))
        differ = [key for key, value in rank0["state"].items() if not torch.equal(value, rank1["state"][key])
                  and not (per_rank_bn and ("running_" in key or "num_batches_tracked" in key))]
        assert not differ, f"epoch {epoch}: the ranks disagree on {differ[:5]}"
        assert_shards_split_the_bank(rank0, rank1, 256)
    if "method=ce" in method:
        assert int(rank0["state"]["resets"]) == 1  # the heads were re-initialised (before epoch 1) on both ranks
    for epoch in sorted({int(p.stem.rpartition("epoch")[2]) for p in dump.glob("rank0_epoch*.pt")}):
        clusters0, clusters1 = (torch.load(dump / f"rank{r}_epoch{epoch}.pt")["cluster_ids"] for r in (0, 1))
        assert all(torch.equal(a, b) for a, b in zip(clusters0, clusters1, strict=True))


@pytest.mark.slow
@pytest.mark.usefixtures("needs_data")
def test_sigterm_to_one_rank_stops_every_rank_at_one_step_and_resume_matches(tmp_path):
    """A signal that reaches rank 1 only: both ranks stop at the same step (they agree at every step boundary),
    rank 0 writes the step checkpoint, both exit "stopped, resumable"; torchrun --resume then ends equal to a 2-rank
    run never stopped."""
    import signal
    import time

    from selfsup_clusters.training.checkpoint import load_checkpoint
    from tests.conftest import TINY
    from tests.test_preemption import LONG_EPOCHS, comparable

    settings = ["--method", "cl-infonce", "--clusters", "kmeans:8", *TINY, *CALM, *LONG_EPOCHS]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m",
           "selfsup_clusters", "train"]
    process = subprocess.Popen([*run, *settings, f"out={tmp_path / 'stopped'}"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env)
    for line in process.stdout:
        if line.startswith("epoch 1/3"):
            time.sleep(0.4)
            workers = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True).stdout.split()
            rank1 = [pid for pid in workers if b"RANK=1\0" in Path(f"/proc/{pid}/environ").read_bytes()]
            os.kill(int(rank1[0]), signal.SIGTERM)
            break
    _, stderr = process.communicate(timeout=300)
    # both ranks stopped through the same path (each exits STOPPED; torchrun then reports its workers as failed)
    assert stderr.count("continue with: selfsup-clusters train --resume") == 2, stderr[-3000:]
    assert process.returncode != 0
    checkpoint = load_checkpoint(tmp_path / "stopped" / "checkpoints" / "last.pt")
    assert checkpoint["epoch"] == 1 and 0 < checkpoint["progress"]["step"] < 128
    resumed = subprocess.run([*run, "--resume", str(tmp_path / "stopped")], capture_output=True, text=True, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    whole = subprocess.run([*run, *settings, f"out={tmp_path / 'whole'}"], capture_output=True, text=True, env=env)
    assert whole.returncode == 0, whole.stderr[-3000:]
    for name in ("final.json", "metrics.jsonl"):
        assert comparable(tmp_path / "stopped" / name) == comparable(tmp_path / "whole" / name)


@pytest.fixture
def needs_data():
    from tests.conftest import FASHION_MNIST_MISSING, HAS_FASHION_MNIST

    if not HAS_FASHION_MNIST:
        pytest.skip(FASHION_MNIST_MISSING)


def cluster_ids_of(method) -> list[torch.Tensor]:
    """The cluster ids a method trains with, whichever attribute holds them."""
    if getattr(method, "clusterings", None):  # pcl, deepcluster-v2
        return [clustering[0].cpu() for clustering in method.clusterings]
    return [ids.cpu() for ids in getattr(method, "cluster_ids", None) or getattr(method, "targets", None) or []]


def _worker(dump: Path, argv: list[str]) -> int:
    """One torchrun process: the CLI, checking after every step that the memory bank holds this rank's embeddings
    at its samples' slots (a wrong slot stops the run), and recording at each clustering this rank's memory bank
    and the cluster ids it then trains with, and after each epoch its weights, buffers and bank."""
    from selfsup_clusters.cli import main
    from selfsup_clusters.core import distributed
    from selfsup_clusters.methods.base import Method
    from selfsup_clusters.methods.memory import ShardedMemoryBank
    from selfsup_clusters.training import trainer

    last_step = {}
    real_forward, real_bank_update = Method.forward, ShardedMemoryBank.update

    def recording_forward(self, views, index, label):
        out = real_forward(self, views, index, label)
        last_step.update(index=index.detach().clone(), z=out["z"].detach().clone())
        return out

    def checking_update(self, index, z):
        real_bank_update(self, index, z)
        if last_step:  # this rank's samples, and none of the others', in the slots just written
            written = slice(self.cursor - len(index), self.cursor)
            if not (torch.equal(self.ids[written], last_step["index"])
                    and torch.equal(self.features[written], last_step["z"].to(self.features.dtype))):
                raise AssertionError(f"rank {distributed.rank()}: the memory bank does not hold this rank's "
                                     "embeddings in the slots of its samples")
            last_step.clear()

    Method.forward, ShardedMemoryBank.update = recording_forward, checking_update

    real_update, real_epoch = trainer.update_clusters, trainer.train_epoch

    def shard(run) -> dict:
        rows = run.memory.shard()
        return {"bank": rows.rows.cpu().clone(), "bank_index": rows.index.cpu().clone()}

    def recording(run, epoch, logger):
        bank, seen = shard(run), run.memory.all_seen()  # all_seen: a collective, on every rank
        rows = real_update(run, epoch, logger)
        torch.save({"cluster_ids": cluster_ids_of(run.method), **bank, "bank_seen": seen},
                   dump / f"rank{distributed.rank()}_epoch{epoch}.pt")
        return rows

    def recording_epoch(run, epoch, logger, *rest):
        record = real_epoch(run, epoch, logger, *rest)
        torch.save({"state": {k: v.cpu().clone() for k, v in run.method.state_dict().items()}, **shard(run)},
                   dump / f"rank{distributed.rank()}_state_epoch{epoch}.pt")
        return record

    trainer.update_clusters, trainer.train_epoch = recording, recording_epoch
    return main(argv)


if __name__ == "__main__":
    raise SystemExit(_worker(Path(sys.argv[1]), sys.argv[2:]))
