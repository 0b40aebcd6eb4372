"""Backbones from timm by name, with a small-image stem option and projection heads."""

from __future__ import annotations

import timm
import torch
from torch import nn

from selfsup_clusters.config import ModelConfig
from selfsup_clusters.errors import UserError


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
    return model


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
