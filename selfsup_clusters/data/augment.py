"""Multi-view augmentation of whole uint8 batches with vectorised tensor ops.

Small datasets live in memory as one uint8 tensor (on the GPU when there is one); each step draws per-sample
random parameters and applies them to the whole batch at once, so there are no per-image PIL calls and no
worker processes competing with the model for the CPU cores.

One view = random resized crop + horizontal flip (one affine `grid_sample`), then with probability
`jitter_prob` brightness/contrast (and saturation on colour images) jitter in random order-free form, then
random grayscale (colour images), then normalisation. Images decoded from files (`like_files`: an image folder's
or CSV table's decoded cache) also get what the per-image pipeline of `loader.train_transform` applies to them: hue
jitter inside the colour jitter and, after the grayscale step, Gaussian blur with probability `blur_prob`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:  # type hints only: the schema sits above data (it imports evaluation's protocols)
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

    def views(self, images: torch.Tensor, generator: torch.Generator, part: tuple[int, int] = (0, 1),
              like_files: bool = False) -> list[torch.Tensor]:
        """`cfg.views` independently augmented views of a (B, C, H, W) uint8 batch.

        part=(i, n): the batch is the i-th of n equal slices of a global batch (one per rank under torchrun). The
        random parameters are drawn for the whole global batch and the slice's own are used, so a sample's views
        do not depend on the number of ranks.
        """
        return [self.view(images, generator, part, like_files) for _ in range(self.cfg.views)]

    def view(self, images: torch.Tensor, generator: torch.Generator, part: tuple[int, int] = (0, 1),
             like_files: bool = False) -> torch.Tensor:
        cfg, b, device = self.cfg, images.shape[0], images.device
        first, total = part[0] * b, part[1] * b

        def uniform(lo: float, hi: float) -> torch.Tensor:
            draws = torch.rand(total, generator=generator, device=generator.device)[first : first + b]
            return draws.to(device) * (hi - lo) + lo

        # The draws keep one order (crop, flip, jitter, grayscale, then the files' blur), so a batch's views
        # depend only on the generator.
        x = self._crop_and_flip(images, uniform)
        x = self._jitter(x, uniform, hue=like_files and x.shape[1] == 3)
        if x.shape[1] == 3:
            to_gray = (uniform(0, 1) < cfg.grayscale_prob).view(b, 1, 1, 1)
            x = torch.where(to_gray, _grayscale(x).expand_as(x), x)
        if like_files:
            blur = (uniform(0, 1) < cfg.blur_prob).view(b, 1, 1, 1)
            x = torch.where(blur, gaussian_blur(x, uniform(0.1, 2.0), blur_kernel_size(self.image_size)), x)
        return self.normalize(x)

    def _crop_and_flip(self, images: torch.Tensor, uniform) -> torch.Tensor:
        """Random resized crop and horizontal flip as one affine map from output to input coordinates in [-1, 1]."""
        cfg, b = self.cfg, images.shape[0]
        area = uniform(*cfg.crop_scale)
        log_ratio = uniform(math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1]))
        ratio = log_ratio.exp()
        w = (area * ratio).sqrt().clamp(max=1.0)  # crop width as a fraction of the image width
        h = (area / ratio).sqrt().clamp(max=1.0)
        cx = (uniform(-1, 1) * (1 - w))
        cy = (uniform(-1, 1) * (1 - h))
        flip = torch.where(uniform(0, 1) < cfg.flip_prob, -1.0, 1.0)
        theta = torch.zeros(b, 2, 3, device=images.device)
        theta[:, 0, 0] = w * flip
        theta[:, 0, 2] = cx
        theta[:, 1, 1] = h
        theta[:, 1, 2] = cy
        size = (b, images.shape[1], self.image_size, self.image_size)
        grid = F.affine_grid(theta, list(size), align_corners=False)
        return F.grid_sample(images.float().div_(255), grid, mode="bilinear", padding_mode="reflection",
                             align_corners=False)

    def _jitter(self, x: torch.Tensor, uniform, hue: bool) -> torch.Tensor:
        """Colour jitter, applied to a random subset of the batch: brightness, contrast, then saturation (and hue,
        when asked) on colour images."""
        cfg, b = self.cfg, x.shape[0]
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
        if hue:
            jittered = rotate_hue(jittered.clamp(0, 1), uniform(-cfg.hue, cfg.hue))
        return torch.where(jitter, jittered, x).clamp_(0, 1)


def blur_kernel_size(image_size: int) -> int:
    """Odd, about 10% of the image (SimCLR's blur)."""
    return max(3, int(0.1 * image_size) // 2 * 2 + 1)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Each image of (B, C, H, W) blurred with its own sigma (B,): one separable Gaussian kernel per image, as
    torchvision's GaussianBlur builds it (reflect padding), applied as a grouped convolution. Hand-written because
    torchvision's gaussian_blur takes one sigma per call."""
    b, c, h, w = x.shape
    half = (kernel_size - 1) / 2
    t = torch.linspace(-half, half, kernel_size, device=x.device)
    kernel = torch.exp(-0.5 * (t / sigma.view(b, 1)) ** 2)
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # (B*C, k)
    pad = kernel_size // 2
    flat = F.pad(x.reshape(1, b * c, h, w), (pad, pad, pad, pad), mode="reflect")
    flat = F.conv2d(flat, kernel.view(b * c, 1, 1, kernel_size), groups=b * c)
    flat = F.conv2d(flat, kernel.view(b * c, 1, kernel_size, 1), groups=b * c)
    return flat.view(b, c, h, w)


# RGB <-> YIQ (NTSC): Y is luma, (I, Q) the chroma plane.
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def rotate_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Each colour image of (B, 3, H, W) in [0, 1] with its hue turned by `shift` (B,) of a full turn (torchvision's
    hue_factor range, [-0.5, 0.5]), as a rotation of the YIQ chroma plane: luma is kept, and the whole batch is one
    batched 3x3 colour matrix. torchvision's adjust_hue shifts HSV hue instead (close, not identical), one factor
    per call."""
    to_yiq = _RGB_TO_YIQ.to(x.device)
    angle = shift.view(-1) * 2 * math.pi
    rotation = torch.zeros(len(angle), 3, 3, device=x.device)
    rotation[:, 0, 0] = 1
    rotation[:, 1, 1], rotation[:, 1, 2] = angle.cos(), -angle.sin()
    rotation[:, 2, 1], rotation[:, 2, 2] = angle.sin(), angle.cos()
    matrix = torch.linalg.inv(to_yiq) @ rotation @ to_yiq
    return torch.einsum("bij,bjhw->bihw", matrix, x)


def _grayscale(x: torch.Tensor) -> torch.Tensor:
    weights = torch.tensor([0.299, 0.587, 0.114], device=x.device).view(1, 3, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True)
