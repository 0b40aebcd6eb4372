"""Multi-view augmentation of whole uint8 batches with vectorised tensor ops.

Small datasets live in memory as one uint8 tensor (on the GPU when there is one); each step draws per-sample
random parameters and applies them to the whole batch at once, so there are no per-image PIL calls and no
worker processes competing with the model for the CPU cores.

One view = random resized crop + horizontal flip (one affine `grid_sample`), then with probability
`jitter_prob` brightness/contrast (and saturation on colour images) jitter in random order-free form, then
random grayscale (colour images), then normalisation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from selfsup_clusters.config import AugmentConfig


class BatchAugment:
    def __init__(self, cfg: AugmentConfig, image_size: int, mean: tuple[float, ...], std: tuple[float, ...]):
        self.cfg = cfg
        self.image_size = image_size
        self.mean = torch.tensor(mean).view(1, -1, 1, 1)
        self.std = torch.tensor(std).view(1, -1, 1, 1)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """float images in [0, 1] -> normalised network input."""
        return (x - self.mean.to(x.device)) / self.std.to(x.device)

    def center(self, images: torch.Tensor) -> torch.Tensor:
        """The evaluation view: the whole image, resized to the network's size, normalised. uint8 in, float out."""
        x = images.float().div_(255)
        if x.shape[-1] != self.image_size:
            x = F.interpolate(x, size=self.image_size, mode="bilinear", align_corners=False, antialias=True)
        return self.normalize(x)

    def views(self, images: torch.Tensor, generator: torch.Generator,
              part: tuple[int, int] = (0, 1)) -> list[torch.Tensor]:
        """`cfg.views` independently augmented views of a (B, C, H, W) uint8 batch.

        part=(i, n): the batch is the i-th of n equal slices of a global batch (one per rank under torchrun). The
        random parameters are drawn for the whole global batch and the slice's own are used, so a sample's views
        do not depend on the number of ranks.
        """
        return [self.view(images, generator, part) for _ in range(self.cfg.views)]

    def view(self, images: torch.Tensor, generator: torch.Generator, part: tuple[int, int] = (0, 1)) -> torch.Tensor:
        cfg, b, device = self.cfg, images.shape[0], images.device
        first, total = part[0] * b, part[1] * b

        def uniform(lo: float, hi: float) -> torch.Tensor:
            draws = torch.rand(total, generator=generator, device=generator.device)[first : first + b]
            return draws.to(device) * (hi - lo) + lo

        # Random resized crop as an affine map from output to input coordinates in [-1, 1].
        area = uniform(*cfg.crop_scale)
        log_ratio = uniform(math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1]))
        ratio = log_ratio.exp()
        w = (area * ratio).sqrt().clamp(max=1.0)  # crop width as a fraction of the image width
        h = (area / ratio).sqrt().clamp(max=1.0)
        cx = (uniform(-1, 1) * (1 - w))
        cy = (uniform(-1, 1) * (1 - h))
        flip = torch.where(uniform(0, 1) < cfg.flip_prob, -1.0, 1.0)
        theta = torch.zeros(b, 2, 3, device=device)
        theta[:, 0, 0] = w * flip
        theta[:, 0, 2] = cx
        theta[:, 1, 1] = h
        theta[:, 1, 2] = cy
        size = (b, images.shape[1], self.image_size, self.image_size)
        grid = F.affine_grid(theta, list(size), align_corners=False)
        x = F.grid_sample(images.float().div_(255), grid, mode="bilinear", padding_mode="reflection",
                          align_corners=False)

        # Colour jitter, applied to a random subset of the batch.
        jitter = (uniform(0, 1) < cfg.jitter_prob).view(b, 1, 1, 1)
        brightness = uniform(1 - cfg.brightness, 1 + cfg.brightness).view(b, 1, 1, 1)
        contrast = uniform(1 - cfg.contrast, 1 + cfg.contrast).view(b, 1, 1, 1)
        jittered = x * brightness
        mean = jittered.mean(dim=(1, 2, 3), keepdim=True)
        jittered = (jittered - mean) * contrast + mean
        if x.shape[1] == 3:
            saturation = uniform(1 - cfg.saturation, 1 + cfg.saturation).view(b, 1, 1, 1)
            gray = _grayscale(jittered)
            jittered = (jittered - gray) * saturation + gray
        x = torch.where(jitter, jittered, x).clamp_(0, 1)
        if x.shape[1] == 3:
            to_gray = (uniform(0, 1) < cfg.grayscale_prob).view(b, 1, 1, 1)
            x = torch.where(to_gray, _grayscale(x).expand_as(x), x)
        return self.normalize(x)


def _grayscale(x: torch.Tensor) -> torch.Tensor:
    weights = torch.tensor([0.299, 0.587, 0.114], device=x.device).view(1, 3, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True)
