"""The memory bank: one L2-normalised embedding per training sample, refreshed every step. One process keeps
the whole index-aligned bank (`MemoryBank`); under torchrun each process keeps only its shard
(`ShardedMemoryBank`, docs/distributed.md)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from selfsup_clusters.clusters.distributed_kmeans import Shard
from selfsup_clusters.core import distributed
from selfsup_clusters.data.loader import rank_order


class MemoryBank:
    def __init__(self, size: int, dim: int, device: torch.device | str = "cpu", seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        # Random unit vectors until a sample is first seen, so clustering an early bank is still well defined.
        self.features = F.normalize(torch.randn(size, dim, generator=generator), dim=1).to(device)
        self.seen = torch.zeros(size, dtype=torch.bool, device=device)

    def update(self, index: torch.Tensor, z: torch.Tensor) -> None:
        self.features[index] = z.detach().to(self.features.dtype)
        self.seen[index] = True

    def begin_epoch(self, order: torch.Tensor) -> None:
        """Nothing to do: the whole bank is index-aligned (the sharded bank's hook)."""

    def all_seen(self) -> bool:
        """Every sample has been through a step (before that, k-means takes a fresh pass)."""
        return bool(self.seen.all())

    def state_dict(self) -> dict:
        return {"features": self.features.cpu(), "seen": self.seen.cpu()}

    def load_state_dict(self, state: dict) -> None:
        if state["features"].shape != self.features.shape:
            raise ValueError(f"memory bank shape {tuple(state['features'].shape)} != {tuple(self.features.shape)}")
        self.features.copy_(state["features"])
        self.seen.copy_(state["seen"])


class ShardedMemoryBank:
    """Under torchrun: this process's rows of the bank only, the samples its slices of the global batches gave it
    (no per-step all-gather of every rank's embeddings). Slot j of `features` (S = steps * batch / world, d) holds
    the j-th sample of this rank's part of the epoch's order (`rank_order`), written by the step that trains it;
    `ids` (S,) holds its sample id (-1: none yet). The few samples an epoch does not train (the N mod batch after
    its last whole batch) keep their rows in `carry`, dealt over the ranks by sample id when the epoch begins.

    At an epoch boundary - where k-means reads it - the slots and carries of all ranks hold every sample seen so
    far exactly once, with its latest embedding: what `MemoryBank` holds on one process. Within an epoch, slots
    from `cursor` on still hold the previous epoch's samples (stale where that sample is trained again before
    they are overwritten). `state_dict` gathers the whole bank to rank 0 in `MemoryBank`'s format, latest rows
    winning, so a checkpoint resumes on any number of processes; `load_state_dict` lays it out as this rank's part
    of the epoch in progress."""

    def __init__(self, size: int, dim: int, steps: int, batch_size: int, device: torch.device | str = "cpu"):
        self.size, self.steps, self.batch_size = size, steps, batch_size
        slots = steps * batch_size // distributed.world_size()
        self.features = torch.zeros(slots, dim, device=device)
        self.ids = torch.full((slots,), -1, dtype=torch.long, device=device)
        self.carry = torch.zeros(0, dim, device=device)
        self.carry_ids = torch.zeros(0, dtype=torch.long, device=device)
        self.cursor = 0  # slots written this epoch

    def update(self, index: torch.Tensor, z: torch.Tensor) -> None:
        """This rank's slice of a step: its samples' embeddings, into the next slots."""
        slots = slice(self.cursor, self.cursor + len(index))
        self.features[slots] = z.detach().to(self.features.dtype)
        self.ids[slots] = index.to(self.ids.device)
        self.cursor += len(index)

    def begin_epoch(self, order: torch.Tensor) -> None:
        """Before the epoch's first step: the samples it does not train keep their rows (every rank's, gathered:
        fewer than one batch in all), dealt by sample id; the slots are then overwritten in order."""
        tail = order[self.steps * self.batch_size :].to(self.ids.device)
        held = self.ids >= 0
        ids, rows = torch.cat([self.ids[held], self.carry_ids]), torch.cat([self.features[held], self.carry])
        kept = torch.isin(ids, tail)
        self.ids[torch.isin(self.ids, tail)] = -1
        self.carry_ids, self.carry = self._deal(torch.cat(distributed.all_gather_uneven(ids[kept])),
                                                torch.cat(distributed.all_gather_uneven(rows[kept])))
        self.cursor = 0

    def _deal(self, ids: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's share of every rank's (ids, rows): by sample id, every world_size-th."""
        mine = torch.argsort(ids)[distributed.rank() :: distributed.world_size()]
        return ids[mine], rows[mine]

    def all_seen(self) -> bool:
        """Every sample is in some rank's shard (at an epoch boundary; a collective)."""
        count = torch.tensor([int((self.ids >= 0).sum()) + len(self.carry_ids)], dtype=torch.float64)
        return int(distributed.all_reduce_sum(count)) == self.size

    def shard(self) -> Shard:
        """This rank's rows and their sample ids (at an epoch boundary), for k-means over the shards."""
        held = self.ids >= 0
        return Shard(torch.cat([self.features[held], self.carry]), torch.cat([self.ids[held], self.carry_ids]),
                     self.size)

    def state_dict(self) -> dict | None:
        """The whole bank on rank 0 (`MemoryBank`'s format: features (N, d), seen (N,)), None on the others: a
        collective. Stale slots first, then carries, then this epoch's slots: the latest row of a sample wins."""
        position = torch.arange(len(self.ids), device=self.ids.device)
        held = self.ids >= 0
        groups = [(self.ids[held & (position >= self.cursor)], self.features[held & (position >= self.cursor)]),
                  (self.carry_ids, self.carry), (self.ids[held & (position < self.cursor)],
                                                 self.features[held & (position < self.cursor)])]
        tags = torch.cat([torch.full((len(ids),), tag) for tag, (ids, _) in enumerate(groups)])
        ids = torch.stack([torch.cat([ids.cpu() for ids, _ in groups]), tags], dim=1)
        every_id = distributed.gather_uneven_to_main(ids)
        every_row = distributed.gather_uneven_to_main(torch.cat([rows for _, rows in groups]).float())
        if every_id is None:
            return None
        features = torch.zeros(self.size, self.features.shape[1])
        seen = torch.zeros(self.size, dtype=torch.bool)
        for tag in range(len(groups)):  # within a group a sample appears once: one write per row
            for ids, rows in zip(every_id, every_row, strict=True):  # rank by rank: no second copy of the bank
                chosen = ids[:, 1] == tag
                features[ids[chosen, 0]] = rows[chosen]
                seen[ids[chosen, 0]] = True
        return {"features": features, "seen": seen}

    def load_state_dict(self, state: dict, order: torch.Tensor, step: int | None) -> None:
        """A whole bank (either class's checkpoint, from any number of processes), laid out as this rank's part of
        the epoch whose sample `order` it is: stopped before its step `step` (its slots from there on hold the
        samples still to come), or finished (`step` None)."""
        if state["features"].shape != (self.size, self.features.shape[1]):
            raise ValueError(f"memory bank shape {tuple(state['features'].shape)} != "
                             f"{(self.size, self.features.shape[1])}")
        features, seen, order = state["features"].cpu(), state["seen"].cpu(), order.cpu()  # rows picked on the host
        device, dtype = self.features.device, self.features.dtype
        mine = rank_order(order, self.batch_size)
        self.ids = torch.where(seen[mine], mine, -1).to(device)
        self.features = features[mine].to(device, dtype)
        tail = order[self.steps * self.batch_size :]
        tail = tail[seen[tail]]
        carry_ids, carry = self._deal(tail, features[tail])
        self.carry_ids, self.carry = carry_ids.to(device), carry.to(device, dtype)
        self.cursor = len(mine) if step is None else step * (self.batch_size // distributed.world_size())


@torch.no_grad()
def ring_write(pointer: torch.Tensor, buffers: list[torch.Tensor], values: list[torch.Tensor]) -> None:
    """FIFO queues as ring buffers: write the rows of each value (n, ...) into its buffer (size, ...) from `pointer`
    on, wrapping around the end, and advance the 0-d `pointer` in place. A batch larger than the buffer keeps its
    last `size` rows, so no slot is written twice."""
    size = buffers[0].shape[0]
    n = min(values[0].shape[0], size)
    slots = (pointer + torch.arange(n, device=pointer.device)) % size
    for buffer, value in zip(buffers, values, strict=True):
        buffer[slots] = value[-n:].to(buffer.dtype)
    pointer.copy_((pointer + n) % size)
