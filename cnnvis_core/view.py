"""The picture of what the model sees: its input tensor turned back into an RGB image.

A model's transform may resize and crop (torchvision's: resize to 232 or 256, centre crop
224), so maps computed on the input tensor (class activation maps, saliency) line up with
this picture, not with the uploaded image. :func:`tensor_to_image` undoes the transform's
normalisation when it can find it (``Normalize`` in a ``Compose``, or the ``mean``/``std`` of
torchvision's ``ImageClassification`` presets); otherwise it stretches the tensor's range.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image


def find_normalization(transform: object, depth: int = 0) -> tuple[Sequence[float], Sequence[float]] | None:
    """``(mean, std)`` of the normalisation inside ``transform``, or None."""
    if transform is None or depth > 4:
        return None
    mean, std = getattr(transform, "mean", None), getattr(transform, "std", None)
    if _triple(mean) and _triple(std):
        return tuple(float(m) for m in mean), tuple(float(s) for s in std)
    for child in getattr(transform, "transforms", ()) or ():
        found = find_normalization(child, depth + 1)
        if found is not None:
            return found
    return None


def _triple(values: object) -> bool:
    try:
        return len(values) == 3 and all(float(v) == float(v) for v in values)  # type: ignore[arg-type]
    except TypeError:
        return False


def tensor_to_image(x: torch.Tensor, normalization: tuple[Sequence[float], Sequence[float]] | None) -> Image.Image:
    """A ``(1, 3, H, W)`` or ``(3, H, W)`` input tensor as an RGB PIL image of size ``W×H``."""
    t = x.detach().float().cpu()
    t = t[0] if t.dim() == 4 else t
    if normalization is not None:
        mean, std = (torch.tensor(v).view(3, 1, 1) for v in normalization)
        t = t * std + mean
    else:
        low, high = float(t.min()), float(t.max())
        t = (t - low) / (high - low) if high > low else torch.zeros_like(t)
    pixels = (t.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(np.ascontiguousarray(pixels))
