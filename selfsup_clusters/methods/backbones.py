"""Backbones from timm by name, with a small-image stem option and projection heads."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from selfsup_clusters.core.errors import UserError

if TYPE_CHECKING:  # type hints only: the schema sits below, and imports nothing of this
    from selfsup_clusters.config import ModelConfig


def create_backbone(cfg: ModelConfig, in_chans: int) -> nn.Module:
    """A timm model without its classifier: images -> pooled features (B, backbone.num_features).

    stem="small" replaces a ResNet's 7x7/stride-2 conv and max-pool by a 3x3/stride-1 conv, the usual choice for
    28-96 px images: it keeps the spatial resolution (16x the activations, and the cost) through the network.
    """
    import timm  # here: the command line reads the registry (--help) without paying timm's start-up

    if not timm.is_model(cfg.backbone):
        close = timm.list_models(f"*{cfg.backbone.split('_')[0][:6]}*")[:8]
        hint = f" (similar: {', '.join(close)})" if close else ""
        raise UserError(f"unknown timm model {cfg.backbone!r}{hint}; see timm.list_models()")
    model = timm.create_model(cfg.backbone, pretrained=False, num_classes=0, in_chans=in_chans)
    if cfg.stem == "small":
        if not (hasattr(model, "conv1") and hasattr(model, "maxpool")):
            raise UserError(f"model.stem=small needs a ResNet-style model with conv1/maxpool; {cfg.backbone} has "
                            "neither; use model.stem=timm")
        out_channels = model.bn1.num_features  # conv1 may be a deep stem (Sequential); bn1 follows it either way
        model.conv1 = nn.Conv2d(in_chans, out_channels, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    if cfg.point_conv_matmul:
        use_point_convolutions(model)
    return model


def use_point_convolutions(model: nn.Module) -> nn.Module:
    """Every plain nn.Conv2d in `model` (itself included) becomes a PointOutputConv2d, in place: the same
    parameters and state_dict keys."""
    for module in model.modules():
        if type(module) is nn.Conv2d:
            module.__class__ = PointOutputConv2d
    return model


SMALL_OUTPUT = 4  # output pixels up to which PointOutputConv2d computes a convolution as window matmuls


class PointOutputConv2d(nn.Conv2d):
    """nn.Conv2d that computes a small output (at most SMALL_OUTPUT pixels: a ResNet's last stages at 28-32 px) on
    the CPU as one matmul per output pixel over the input window that pixel sees (`model.point_conv_matmul`).

    Hand-written because oneDNN is pathological there, forward and backward: at a 1x1 output a 3x3 convolution
    sees its input through the centre taps only, yet oneDNN computes the padded 3x3 window, and for bf16 it was
    slower still: 128x512x1x1 -> 512 forward + backward 24.5 ms through oneDNN against 2.8 ms here, the forward
    alone on 1,024 images 49 ms against 0.8 ms (bf16, an Intel Xeon with AMX; docs/speed.md). Only the taps that
    land inside the input are multiplied (zero padding contributes nothing), so it is the same arithmetic without
    the zeros. Larger outputs, GPUs, groups and non-zero padding modes take nn.Conv2d's own path.
    """

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if input.device.type != "cpu" or self.groups != 1 or self.padding_mode != "zeros" or input.dim() != 4 \
                or isinstance(self.padding, str):
            return super()._conv_forward(input, weight, bias)
        geometry = list(zip(input.shape[-2:], self.padding, self.dilation, self.kernel_size, self.stride, strict=True))
        size = [(n + 2 * p - d * (k - 1) - 1) // s + 1 for n, p, d, k, s in geometry]
        rows, columns = (window_taps(size[axis], *geometry[axis]) for axis in (0, 1))
        if size[0] * size[1] > SMALL_OUTPUT or rows is None or columns is None:  # None: a pixel sees only padding
            return super()._conv_forward(input, weight, bias)
        dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else input.dtype
        windows = [(x_rows, x_columns, w_rows, w_columns)
                   for x_rows, w_rows in rows for x_columns, w_columns in columns]
        out = WindowConv.apply(input, weight, windows, size, dtype)
        return out if bias is None else out + bias.view(1, -1, 1, 1).to(out.dtype)


def window_taps(outputs: int, n: int, padding: int, dilation: int, kernel: int, stride: int) -> list[tuple] | None:
    """Per output position along one axis: (the input slice it sees, the kernel taps that see it), leaving out the
    taps that fall on the zero padding; None when a position sees padding alone."""
    found = []
    for i in range(outputs):
        taps = [j for j in range(kernel) if 0 <= i * stride + j * dilation - padding < n]
        if not taps:
            return None
        first = i * stride + taps[0] * dilation - padding
        found.append((slice(first, first + (len(taps) - 1) * dilation + 1, dilation), slice(taps[0], taps[-1] + 1)))
    return found


class WindowConv(torch.autograd.Function):
    """A convolution given per output pixel as (input rows, input columns, kernel rows, kernel columns): each pixel
    is its input window (B, h*w*C) times its kernel taps (h*w*C, O), in `dtype` (bf16 under autocast), both taken
    channels-last, the layout the network runs in, so a window is a view rather than a transposed copy. Its own
    backward, so the gradients keep their tensors' memory layout: autograd's slicing handed back contiguous
    gradients for channels_last weights, and the optimizer step over mixed layouts took twice as long."""

    @staticmethod
    def forward(ctx, input, weight, windows, size, dtype):
        x, w = input.permute(0, 2, 3, 1), weight.permute(0, 2, 3, 1)  # (B, H, W, C), (O, kh, kw, C): views
        columns = [x[:, xr, xc].reshape(x.shape[0], -1).to(dtype) for xr, xc, _, _ in windows]
        taps = [w[:, wr, wc].reshape(w.shape[0], -1).to(dtype) for _, _, wr, wc in windows]
        ctx.save_for_backward(input, weight, *columns, *taps)
        ctx.windows = windows
        with torch.autocast("cpu", enabled=False):
            out = torch.stack([c @ t.t() for c, t in zip(columns, taps, strict=True)], dim=1)  # (B, pixels, O)
        return out.unflatten(1, size).permute(0, 3, 1, 2)  # (B, O, oh, ow), channels-last in memory

    @staticmethod
    def backward(ctx, grad):
        input, weight, *saved = ctx.saved_tensors
        columns, taps = saved[: len(ctx.windows)], saved[len(ctx.windows):]
        grad = grad.permute(0, 2, 3, 1).flatten(1, 2).to(taps[0].dtype)  # (B, pixels, O)
        grad_input = torch.zeros_like(input) if ctx.needs_input_grad[0] else None
        grad_weight = torch.zeros_like(weight) if ctx.needs_input_grad[1] else None
        for pixel, (xr, xc, wr, wc) in enumerate(ctx.windows):
            g = grad[:, pixel]
            if grad_input is not None:
                window = grad_input.permute(0, 2, 3, 1)[:, xr, xc]
                window += (g @ taps[pixel]).view(window.shape)
            if grad_weight is not None:
                window = grad_weight.permute(0, 2, 3, 1)[:, wr, wc]
                window += (g.t() @ columns[pixel]).view(window.shape)
        return grad_input, grad_weight, None, None, None


def projection_head(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """The SimCLR/MoCo v2 MLP: Linear-BN-ReLU-Linear."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim, bias=False),
        nn.BatchNorm1d(hidden_dim),
        nn.ReLU(inplace=True),
        nn.Linear(hidden_dim, out_dim),
    )


@torch.no_grad()
def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
