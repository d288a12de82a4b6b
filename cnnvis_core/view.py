"""The picture of what the model sees: its input tensor turned back into an RGB image.

A model's transform may resize and crop (torchvision's: resize to 232 or 256, centre crop
224), so maps computed on the input tensor (class activation maps, saliency) line up with
this picture, not with the uploaded image. :func:`tensor_to_image` undoes the transform's
normalisation when :func:`~cnnvis_core.normalization.find_normalization` finds it; otherwise
it stretches the tensor's range.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from .normalization import Stats, denormalize


def tensor_to_image(x: torch.Tensor, normalization: Stats | None) -> Image.Image:
    """A ``(1, 3, H, W)`` or ``(3, H, W)`` input tensor as an RGB PIL image of size ``W×H``."""
    t = x.detach().float().cpu()
    t = t if t.dim() == 4 else t.unsqueeze(0)
    if normalization is not None:
        t = denormalize(t, normalization)
    else:
        low, high = float(t.min()), float(t.max())
        t = (t - low) / (high - low) if high > low else torch.zeros_like(t)
    pixels = (t[0].clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(np.ascontiguousarray(pixels))
