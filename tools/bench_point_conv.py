"""One 3x3 convolution's forward and backward on the CPU, through oneDNN (nn.Conv2d) and as unfold + matmul
(`backbones.PointOutputConv2d`, what `model.point_conv_matmul` uses for 1x1 outputs), at the shapes of resnet10t's
last stages at 28 px; channels_last, 3 warm-up and 5 timed passes each.

    .venv/bin/python tools/bench_point_conv.py
"""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from selfsup_clusters.backbones import use_point_convolutions  # noqa: E402

SHAPES = [  # (batch, in channels, map size), out channels, stride
    ((128, 512, 1), 512, 1), ((128, 256, 2), 512, 2), ((128, 256, 2), 256, 1), ((128, 64, 7), 64, 1)]


def milliseconds(conv: torch.nn.Module, x: torch.Tensor) -> float:
    for i in range(8):
        if i == 3:
            start = time.perf_counter()
        conv(x).sum().backward()
    return (time.perf_counter() - start) / 5 * 1000


def main() -> None:
    torch.manual_seed(0)
    for (batch, channels, size), out_channels, stride in SHAPES:
        conv = torch.nn.Conv2d(channels, out_channels, 3, stride=stride, padding=1, bias=False)
        conv = conv.to(memory_format=torch.channels_last)
        point = use_point_convolutions(copy.deepcopy(conv))
        x = torch.randn(batch, channels, size, size).to(memory_format=torch.channels_last).requires_grad_()
        output = (size + 2 - 3) // stride + 1
        print(f"{batch}x{channels}x{size}x{size} -> {out_channels}x{output}x{output}: oneDNN "
              f"{milliseconds(conv, x):.1f} ms, PointOutputConv2d {milliseconds(point, x):.1f} ms"
              + ("" if output == 1 else " (not a 1x1 output: nn.Conv2d's path)"), flush=True)


if __name__ == "__main__":
    main()
