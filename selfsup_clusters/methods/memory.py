"""An index-aligned memory bank: one L2-normalised embedding per training sample, refreshed every step."""

from __future__ import annotations

import torch
import torch.nn.functional as F


class MemoryBank:
    def __init__(self, size: int, dim: int, device: torch.device | str = "cpu", seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        # Random unit vectors until a sample is first seen, so clustering an early bank is still well defined.
        self.features = F.normalize(torch.randn(size, dim, generator=generator), dim=1).to(device)
        self.seen = torch.zeros(size, dtype=torch.bool, device=device)

    def update(self, index: torch.Tensor, z: torch.Tensor) -> None:
        self.features[index] = z.detach().to(self.features.dtype)
        self.seen[index] = True

    def state_dict(self) -> dict:
        return {"features": self.features.cpu(), "seen": self.seen.cpu()}

    def load_state_dict(self, state: dict) -> None:
        if state["features"].shape != self.features.shape:
            raise ValueError(f"memory bank shape {tuple(state['features'].shape)} != {tuple(self.features.shape)}")
        self.features.copy_(state["features"])
        self.seen.copy_(state["seen"])


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
