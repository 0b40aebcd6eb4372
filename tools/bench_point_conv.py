"""One 3x3 convolution through oneDNN (nn.Conv2d) and as window matmuls (`backbones.PointOutputConv2d`, what
`model.point_conv_matmul` uses for outputs of at most 4 pixels), at the shapes of resnet10t's last stages at 28 px;
channels_last, in fp32 and under bf16 autocast; forward + backward on a training batch of 128 (the input needing
its gradient too) and the forward alone on an evaluation batch of 1,024; 3 warm-up and 5 timed passes each,
alternately in one invocation.

    .venv/bin/python tools/bench_point_conv.py
"""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from selfsup_clusters.methods.backbones import SMALL_OUTPUT, use_point_convolutions  # noqa: E402

SHAPES = [  # (in channels, map size), out channels, stride: resnet10t's layer4, layer3 and layer2 at 28 px
    ((512, 1), 512, 1), ((256, 2), 512, 2), ((256, 2), 256, 1), ((128, 4), 256, 2), ((128, 4), 128, 1)]


def milliseconds(conv: torch.nn.Module, x: torch.Tensor, bf16: bool, backward: bool) -> float:
    for i in range(8):
        if i == 3:
            start = time.perf_counter()
        with torch.set_grad_enabled(backward), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = conv(x)
        if backward:
            out.float().sum().backward()
    return (time.perf_counter() - start) / 5 * 1000


def main() -> None:
    torch.manual_seed(0)
    for (channels, size), out_channels, stride in SHAPES:
        conv = torch.nn.Conv2d(channels, out_channels, 3, stride=stride, padding=1, bias=False)
        conv = conv.to(memory_format=torch.channels_last)
        window = use_point_convolutions(copy.deepcopy(conv))
        output = (size + 2 - 3) // stride + 1
        note = "" if output * output <= SMALL_OUTPUT else " (larger output: nn.Conv2d's path both times)"
        for backward, batch in ((True, 128), (False, 1024)):
            x = torch.randn(batch, channels, size, size).to(memory_format=torch.channels_last)
            x.requires_grad_(backward)
            times = [f"{precision} oneDNN {milliseconds(conv, x, precision == 'bf16', backward):.1f} ms, window "
                     f"{milliseconds(window, x, precision == 'bf16', backward):.1f} ms"
                     for precision in ("fp32", "bf16")]
            print(f"{batch}x{channels}x{size}x{size} -> {out_channels}x{output}x{output} "
                  f"{'forward+backward' if backward else 'forward'}: {'; '.join(times)}{note}", flush=True)


if __name__ == "__main__":
    main()
