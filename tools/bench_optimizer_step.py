"""The SGD step (nesterov, weight decay) over resnet10t's and a projector's parameters: torch's per-tensor loop (its
CPU default), foreach and fused kernels, alternately in one invocation; median ms per step of 5 rounds of 20.

    .venv/bin/python tools/bench_optimizer_step.py
"""

import statistics
import time

import timm
import torch
from torch import nn

model = timm.create_model("resnet10t", num_classes=0, in_chans=1)
head = nn.Sequential(nn.Linear(512, 2048), nn.BatchNorm1d(2048), nn.ReLU(), nn.Linear(2048, 128))
params = [*model.parameters(), *head.parameters()]
for p in params:
    p.grad = torch.randn_like(p)
kinds = {"loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}
optimizers = {name: torch.optim.SGD(params, lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-4, **kw)
              for name, kw in kinds.items()}
times: dict[str, list[float]] = {name: [] for name in kinds}
for _ in range(5):
    for name, optimizer in optimizers.items():
        start = time.perf_counter()
        for _ in range(20):
            optimizer.step()
        times[name].append((time.perf_counter() - start) / 20 * 1000)
for name, values in times.items():
    print(f"{name}: {statistics.median(values):.1f} ms a step (median of 5 rounds)")
