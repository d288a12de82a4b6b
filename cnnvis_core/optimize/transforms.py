"""Transformation robustness and image penalties, one random draw per batch item.

Optimising an image so that the unit fires even after small random shifts, zooms and
rotations removes the high-frequency "adversarial" patterns plain gradient ascent finds
(Mordvintsev et al., 2015, "Inceptionism"; Olah et al., 2017, "Feature Visualization",
Distill). Every random choice for item ``b`` is drawn from ``generators[b]`` (never the global
RNG), so an item sees the same transforms whether it is optimised alone or in a batch, and a
seed gives the same pictures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

Generators = Sequence[torch.Generator]


def pad(images: torch.Tensor, width: int, value: float = 0.5) -> torch.Tensor:
    """Pad every side with ``width`` pixels of ``value`` (gray): the jitter then never shows a hard edge."""
    return F.pad(images, (width,) * 4, mode="constant", value=value) if width > 0 else images


def jitter(images: torch.Tensor, d: int, generators: Generators) -> torch.Tensor:
    """Random crop of size ``(H-d, W-d)`` per item: a shift by ``(dy, dx) ∈ {0…d}²``."""
    if d <= 0:
        return images
    h, w = images.shape[-2:]
    crops = []
    # split first: cropping the whole batch per item would make the backward build a batch-sized
    # zero gradient per item (quadratic in the batch size)
    for item, g in zip(images.split(1), generators):
        dy, dx = (int(v) for v in torch.randint(0, d + 1, (2,), generator=g))
        crops.append(item[:, :, dy:dy + h - d, dx:dx + w - d])
    return torch.cat(crops)


def affine_matrices(scales: torch.Tensor, angles_deg: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``(B, 2, 3)`` matrices for ``affine_grid``: zoom by ``s`` and rotate by ``θ`` about the centre.

    An output point ``p`` (pixel units from the centre) samples the input at ``R(-θ) p / s``;
    in ``affine_grid``'s normalised coordinates ``n = D⁻¹ p`` with ``D = diag(W/2, H/2)``,
    so ``θ_matrix = D⁻¹ R(-θ) D / s``.
    """
    a = angles_deg * (math.pi / 180.0)
    cos, sin = torch.cos(a) / scales, torch.sin(a) / scales
    rx, ry = w / 2.0, h / 2.0
    zero = torch.zeros_like(a)
    row0 = torch.stack([cos, sin * ry / rx, zero], 1)
    row1 = torch.stack([-sin * rx / ry, cos, zero], 1)
    return torch.stack([row0, row1], 1)


def random_affine(images: torch.Tensor, scale: tuple[float, float], degrees: float, generators: Generators,
                  fill: float = 0.5) -> torch.Tensor:
    """Per item, a zoom ``s ~ U(scale)`` and a rotation ``θ ~ U(-degrees, degrees)`` in one bilinear resampling.

    The image keeps its size; what comes in from outside is ``fill``.
    """
    lo, hi = float(scale[0]), float(scale[1])
    if lo == hi == 1.0 and degrees <= 0:
        return images
    draws = torch.stack([torch.rand(2, generator=g) for g in generators])
    scales = lo + (hi - lo) * draws[:, 0]
    angles = (2.0 * draws[:, 1] - 1.0) * float(degrees)
    h, w = images.shape[-2:]
    theta = affine_matrices(scales, angles, h, w).to(images.device, images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill


@dataclass(frozen=True)
class Robustness:
    """Lucid's standard transforms by default-off knobs: pad → jitter → zoom+rotate → jitter."""

    pad: int = 0
    jitter: int = 0
    scale: tuple[float, float] = (1.0, 1.0)
    degrees: float = 0.0
    jitter_after: int = 0

    def __call__(self, images: torch.Tensor, generators: Generators) -> torch.Tensor:
        x = pad(images, self.pad)
        x = jitter(x, self.jitter, generators)
        x = random_affine(x, self.scale, self.degrees, generators)
        return jitter(x, self.jitter_after, generators)


def box_blur(images: torch.Tensor, kernel: int) -> torch.Tensor:
    """Mean over a ``kernel × kernel`` window per channel (reflected edges), as ``cv2.blur``; ``kernel ≤ 1``: none."""
    if kernel <= 1:
        return images
    k = int(kernel)
    left, right = (k - 1) // 2, k // 2
    x = F.pad(images, (left, right, left, right), mode="reflect")
    weight = torch.full((images.shape[1], 1, k, k), 1.0 / (k * k), dtype=images.dtype, device=images.device)
    return F.conv2d(x, weight, groups=images.shape[1])


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation per item: ``mean |∂_y I| + mean |∂_x I|`` (Mahendran & Vedaldi, 2015)."""
    dy = (images[:, :, 1:, :] - images[:, :, :-1, :]).abs().flatten(1).mean(1)
    dx = (images[:, :, :, 1:] - images[:, :, :, :-1]).abs().flatten(1).mean(1)
    return dy + dx


def l2_penalty(images: torch.Tensor, centre: float = 0.5) -> torch.Tensor:
    """Mean squared distance of the pixels from gray per item: ``mean (I - 0.5)²`` (Simonyan et al., 2014)."""
    return (images - centre).pow(2).flatten(1).mean(1)
