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
