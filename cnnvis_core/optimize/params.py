"""How the image is parameterised: what the optimiser changes, and how that becomes an image.

Each maker returns ``(params, image_fn)``: ``params`` are the leaf tensors the optimiser
updates, ``image_fn()`` renders the ``(B, 3, H, W)`` RGB image from them. Item ``b`` of the
batch is initialised from its own generator ``generators[b]``, so an item starts the same
whether it is optimised alone or inside a batch.

* :func:`pixel_image` — the classic recipes: pixels in the model's normalised input space
  (``x = (image - mean) / std``), so a learning rate means what it meant in those recipes;
  unbounded while optimising, clipped when shown.
* :func:`fft_image` — Lucid's parameterisation (Olah et al., 2017, "Feature Visualization",
  Distill; Mordvintsev et al., 2018, "Differentiable Image Parameterizations"): a Fourier
  spectrum scaled by ``1/f`` (so all frequencies learn at a similar rate, which suppresses
  the high-frequency patterns plain pixels produce), colours decorrelated by the square root
  of ImageNet's colour covariance, and a sigmoid that keeps the image in ``[0, 1]``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

ImageFn = Callable[[], torch.Tensor]

#: square root of the RGB colour covariance of ImageNet, as measured for Lucid: its columns map
#: decorrelated channels to R, G, B
COLOR_CORRELATION_SQRT = torch.tensor([[0.26, 0.09, 0.02],
                                       [0.27, 0.00, -0.05],
                                       [0.27, -0.09, 0.03]])
#: scale of the rendered Fourier image (keeps the initial logits small, image near gray)
FFT_SCALE = 0.25


def _uniform(shape: Sequence[int], low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(tuple(shape), generator=generator) * (high - low) + low


def pixel_image(generators: Sequence[torch.Generator], size: tuple[int, int], mean: Sequence[float],
                std: Sequence[float], low: float = 0.0, high: float = 1.0,
                device: torch.device | str = "cpu") -> tuple[list[torch.Tensor], ImageFn]:
    """Pixels in normalised input space, started from uniform noise in ``[low, high]`` (image scale).

    ``params = (image - mean) / std``; ``image_fn() = params · std + mean`` (not clipped).
    """
    h, w = size
    m = torch.tensor(list(mean), dtype=torch.float32).view(1, 3, 1, 1).to(device)
    s = torch.tensor(list(std), dtype=torch.float32).view(1, 3, 1, 1).to(device)
    start = torch.stack([_uniform((3, h, w), low, high, g) for g in generators]).to(device)
    x = ((start - m) / s).requires_grad_(True)
    return [x], lambda: x * s + m


def pixel_params_from_image(image: torch.Tensor, mean: Sequence[float], std: Sequence[float]
                            ) -> tuple[list[torch.Tensor], ImageFn]:
    """Pixel parameters that render ``image`` (``(B, 3, H, W)``, image scale): for upscaling rounds."""
    m = torch.tensor(list(mean), dtype=torch.float32, device=image.device).view(1, 3, 1, 1)
    s = torch.tensor(list(std), dtype=torch.float32, device=image.device).view(1, 3, 1, 1)
    x = ((image.detach() - m) / s).requires_grad_(True)
    return [x], lambda: x * s + m


def frequency_scale(h: int, w: int, decay_power: float = 1.0) -> torch.Tensor:
    """``1 / max(f, 1/max(h, w))^decay`` on the ``rfft2`` grid, ``f = √(f_y² + f_x²)`` in cycles per pixel."""
    fy = torch.fft.fftfreq(h).view(h, 1)
    fx = torch.fft.rfftfreq(w).view(1, w // 2 + 1)
    f = torch.sqrt(fy ** 2 + fx ** 2).clamp_min(1.0 / max(h, w))
    return f.pow(-decay_power)


def decorrelated_to_rgb(t: torch.Tensor) -> torch.Tensor:
    """Map decorrelated colour channels ``(B, 3, H, W)`` to RGB: ``rgb = M̂ · t`` per pixel.

    ``M̂`` is :data:`COLOR_CORRELATION_SQRT` divided by its largest column norm, so that unit
    variance in every decorrelated channel gives at most unit variance per RGB channel.
    """
    m = COLOR_CORRELATION_SQRT.to(t.device, t.dtype)
    m = m / m.norm(dim=0).max()
    return torch.einsum("ij,bjhw->bihw", m, t)


def fft_image(generators: Sequence[torch.Generator], size: tuple[int, int], sd: float = 0.01,
              decay_power: float = 1.0, decorrelate: bool = True,
              device: torch.device | str = "cpu") -> tuple[list[torch.Tensor], ImageFn]:
    """Fourier-space image with decorrelated colour and a sigmoid (Lucid's default).

    ``params``: a spectrum ``S`` of shape ``(B, 3, H, W//2+1, 2)`` (real and imaginary parts),
    started as ``N(0, sd²)``. ``image_fn() = σ(M̂ · irfft2(S ⊙ scale, ortho) · FFT_SCALE)``
    with ``scale`` from :func:`frequency_scale`.
    """
    h, w = size
    spectrum = torch.stack([torch.randn((3, h, w // 2 + 1, 2), generator=g) * sd for g in generators])
    spectrum = spectrum.to(device).requires_grad_(True)
    scale = frequency_scale(h, w, decay_power).to(device)

    def image_fn() -> torch.Tensor:
        s = torch.view_as_complex(spectrum) * scale
        t = torch.fft.irfft2(s, s=(h, w), norm="ortho") * FFT_SCALE
        if decorrelate:
            t = decorrelated_to_rgb(t)
        return torch.sigmoid(t)

    return [spectrum], image_fn


def resize_images(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bicubic resize of ``(B, 3, H, W)`` images (each item on its own)."""
    return F.interpolate(images, size=size, mode="bicubic", align_corners=False)
