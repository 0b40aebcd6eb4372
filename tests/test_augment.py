"""In-memory augmentation (data/augment.py BatchAugment): views differ, the identity reproduces the centre view,
crops stay inside the image, and flip, jitter and grayscale happen at their configured rates."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from selfsup_clusters.config import AugmentConfig
from selfsup_clusters.data.augment import BatchAugment

IDENTITY = {"crop_scale": (1.0, 1.0), "crop_ratio": (1.0, 1.0), "flip_prob": 0.0, "jitter_prob": 0.0,
            "grayscale_prob": 0.0}
N = 4000  # samples for the rate checks: a rate's standard error is at most 0.5 / sqrt(N) = 0.008
TOLERANCE = 0.035  # over 4 standard errors


def images(n: int, channels: int = 1, size: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(seed))


def augment(channels: int = 1, size: int = 8, **settings) -> BatchAugment:
    return BatchAugment(AugmentConfig(**settings), size, (0.5,) * channels, (0.25,) * channels)


def per_sample_equal(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-5) -> torch.Tensor:
    return ((a - b).abs().flatten(1).amax(dim=1) <= atol)


def test_two_views_of_a_sample_differ():
    batch = images(64, size=16)
    first, second = augment(size=16).views(batch, torch.Generator().manual_seed(0))
    assert not per_sample_equal(first, second, atol=1e-3).any()  # every sample's two views differ


def test_identity_settings_reproduce_the_centre_view():
    for channels in (1, 3):
        batch = images(32, channels=channels, size=12)
        aug = augment(channels=channels, size=12, **IDENTITY)
        center = aug.center(batch)
        for view in aug.views(batch, torch.Generator().manual_seed(1)):
            torch.testing.assert_close(view, center, atol=1e-5, rtol=0)


def test_crops_stay_inside_the_image_with_the_configured_area(monkeypatch):
    thetas = []
    real = F.affine_grid

    def spy(theta, size, align_corners=None):
        thetas.append(theta.detach().clone())
        return real(theta, size, align_corners=align_corners)

    monkeypatch.setattr(F, "affine_grid", spy)
    aug = augment(crop_scale=(0.2, 1.0), crop_ratio=(0.5, 2.0))
    aug.view(images(N), torch.Generator().manual_seed(2))
    (theta,) = thetas
    w, h = theta[:, 0, 0].abs(), theta[:, 1, 1]  # fractions of the image's width and height
    cx, cy = theta[:, 0, 2], theta[:, 1, 2]
    assert (theta[:, 0, 1] == 0).all() and (theta[:, 1, 0] == 0).all()  # no rotation or shear
    eps = 1e-6
    assert ((cx.abs() + w) <= 1 + eps).all() and ((cy.abs() + h) <= 1 + eps).all()  # inside [-1, 1]
    assert (w > 0).all() and (h > 0).all() and (w * h <= 1.0 + eps).all() and (w * h >= 0.2 * 0.5 - eps).all()
    # Crops cover the whole allowed range of positions (not all centred).
    assert (cx / (1 - w).clamp_min(1e-6)).abs().max() > 0.9


def test_crops_stay_inside_the_image_as_seen_in_the_pixels():
    # A horizontal ramp: a crop inside the image sees a monotone ramp; one reaching outside would see it folded
    # back by the reflection padding.
    size = 32
    ramp = (torch.arange(size) * 8).view(1, 1, 1, size).expand(N // 4, 1, size, size).to(torch.uint8)
    view = augment(size=size, flip_prob=0.0, jitter_prob=0.0, crop_scale=(0.05, 1.0)).view(
        ramp, torch.Generator().manual_seed(3))
    steps = view[:, 0, size // 2].diff(dim=1)
    assert (steps >= -1e-4).all()


def flipped_rate(flip_prob: float) -> float:
    batch = images(N)
    aug = augment(**{**IDENTITY, "flip_prob": flip_prob})
    view, center = aug.view(batch, torch.Generator().manual_seed(4)), aug.center(batch)
    flipped = per_sample_equal(view, center.flip(-1))
    assert (flipped | per_sample_equal(view, center)).all()  # each view is the image or its mirror image
    return flipped.float().mean().item()


@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
def test_flips_happen_with_the_configured_probability(p):
    assert flipped_rate(p) == pytest.approx(p, abs=TOLERANCE)


@pytest.mark.parametrize("p", [0.0, 0.3, 0.8])
def test_colour_jitter_happens_with_the_configured_probability(p):
    batch = images(N)
    aug = augment(**{**IDENTITY, "jitter_prob": p})
    view, center = aug.view(batch, torch.Generator().manual_seed(5)), aug.center(batch)
    assert (1 - per_sample_equal(view, center).float().mean().item()) == pytest.approx(p, abs=TOLERANCE)


def test_jitter_factors_stay_in_their_configured_range():
    # Brightness alone on a mid-grey image (no clamping): the factor is the pixel ratio.
    grey = torch.full((N, 1, 4, 4), 100, dtype=torch.uint8)
    aug = augment(size=4, **{**IDENTITY, "jitter_prob": 1.0, "brightness": 0.4, "contrast": 0.0})
    x = aug.view(grey, torch.Generator().manual_seed(6)) * 0.25 + 0.5  # undo the normalisation
    factor = x[:, 0, 0, 0] / (100 / 255)
    assert factor.min() >= 0.6 - 1e-4 and factor.max() <= 1.4 + 1e-4
    assert factor.min() < 0.65 and factor.max() > 1.35  # the whole range is used
    assert factor.mean().item() == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize("p", [0.0, 0.2, 0.6])
def test_grayscale_happens_with_the_configured_probability_on_colour_images(p):
    batch = images(N, channels=3)
    aug = augment(channels=3, **{**IDENTITY, "grayscale_prob": p})
    view = aug.view(batch, torch.Generator().manual_seed(7))
    gray = per_sample_equal(view[:, :1].expand_as(view), view)  # all three channels equal
    assert gray.float().mean().item() == pytest.approx(p, abs=TOLERANCE)
    assert math.isclose(p, 0.0) or gray.any()
