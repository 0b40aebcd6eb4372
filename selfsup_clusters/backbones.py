"""Backbones from timm by name, with a small-image stem option and projection heads."""

from __future__ import annotations

from typing import TYPE_CHECKING

import timm
import torch
import torch.nn.functional as F
from torch import nn

from selfsup_clusters.errors import UserError

if TYPE_CHECKING:  # type hints only: the schema sits below, and imports nothing of this
    from selfsup_clusters.config import ModelConfig


def create_backbone(cfg: ModelConfig, in_chans: int) -> nn.Module:
    """A timm model without its classifier: images -> pooled features (B, backbone.num_features).

    stem="small" replaces a ResNet's 7x7/stride-2 conv and max-pool by a 3x3/stride-1 conv, the usual choice for
    28-96 px images: it keeps the spatial resolution (16x the activations, and the cost) through the network.
    """
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


class PointOutputConv2d(nn.Conv2d):
    """nn.Conv2d that computes a 1x1 output on the CPU as unfold + matmul (`model.point_conv_matmul`).

    Hand-written because oneDNN's backward pass is pathological there: a ResNet's last stage sees 1x1 maps at
    28 px (2x2 at 32-63 px), where a 3x3 conv's forward and backward on a batch of 128 x 512 channels took 211 ms
    through oneDNN and 33 ms as unfold + matmul, the same arithmetic (docs/measurements.md). Only where a backward
    pass will follow: oneDNN's forward alone is faster (feature extraction ran 17% slower through unfold). Larger
    outputs, GPUs, groups and non-zero padding modes take nn.Conv2d's own path too.
    """

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        backward = torch.is_grad_enabled() and (weight.requires_grad or input.requires_grad)
        if not backward or input.device.type != "cpu" or self.groups != 1 or self.padding_mode != "zeros" \
                or input.dim() != 4 or isinstance(self.padding, str):
            return super()._conv_forward(input, weight, bias)
        size = [(n + 2 * p - d * (k - 1) - 1) // s + 1 for n, p, d, k, s in
                zip(input.shape[-2:], self.padding, self.dilation, self.kernel_size, self.stride, strict=True)]
        if size != [1, 1]:
            return super()._conv_forward(input, weight, bias)
        columns = F.unfold(input, self.kernel_size, self.dilation, self.padding, self.stride)  # (B, C*kh*kw, 1)
        out = columns.flatten(1) @ weight.flatten(1).t()
        if bias is not None:
            out = out + bias
        return out[:, :, None, None]


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
