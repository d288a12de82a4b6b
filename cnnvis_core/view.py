"""The picture of what the model sees: its input tensor turned back into an RGB image.

A model's transform may resize and crop (torchvision's: resize to 232 or 256, centre crop
224), so maps computed on the input tensor (class activation maps, saliency) line up with
this picture, not with the uploaded image. :func:`tensor_to_image` undoes the transform's
normalisation when :func:`~cnnvis_core.normalization.find_normalization` finds it; otherwise
it stretches the tensor's range. :func:`input_window` follows the transform's resize and crop
to find where that picture lies on the photo, so a map can also be laid over the photo itself
at its own resolution (:meth:`Window.to_photo`).
"""

from __future__ import annotations

from dataclasses import dataclass

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


# ---------------------------------------------------------------------------- back to the photo
#: transforms that leave the picture's geometry alone (type names, torchvision v1 and v2)
_NO_GEOMETRY = frozenset({"ToImage", "ToTensor", "PILToTensor", "ToPureTensor", "ToDtype", "ConvertImageDtype",
                          "Normalize", "Identity", "RGB", "Grayscale"})


@dataclass(frozen=True)
class Window:
    """Where the model's input lies on the photo it was made from.

    ``box`` = ``(left, top, right, bottom)`` in the photo's pixel coordinates (floats; a crop
    larger than the resized picture pads it, and the box then reaches outside the photo);
    ``photo_size`` = ``(width, height)`` of the photo. The transform's resizes and centre crops
    turn exactly this rectangle of the photo into the input tensor, so a map over the input
    (a class activation map) lies over this rectangle of the photo.
    """

    box: tuple[float, float, float, float]
    photo_size: tuple[int, int]

    @property
    def whole(self) -> bool:
        """Whether the model sees the whole photo (nothing cropped away)."""
        left, top, right, bottom = self.box
        width, height = self.photo_size
        return left <= 0.5 and top <= 0.5 and right >= width - 0.5 and bottom >= height - 0.5

    def to_photo(self, heat: np.ndarray) -> np.ndarray:
        """``heat`` (``h×w``, over the model's input) at the photo's resolution: float32
        ``height×width``, bilinear (pixel centres, like ``align_corners=False``), NaN where the
        photo lies outside the box (cropped away: the model never saw it)."""
        heat = np.asarray(heat, np.float32)
        width, height = self.photo_size
        left, top, right, bottom = self.box
        cols, col_in = _sampling(width, left, right, heat.shape[1])
        rows, row_in = _sampling(height, top, bottom, heat.shape[0])
        out = rows @ heat @ cols.T
        out[~row_in, :] = np.nan
        out[:, ~col_in] = np.nan
        return out


def _sampling(length: int, start: float, stop: float, source: int) -> tuple[np.ndarray, np.ndarray]:
    """``(length × source)`` bilinear weights reading a ``source``-long axis laid over
    ``[start, stop)`` at each photo pixel's centre, and which pixels fall inside."""
    centres = np.arange(length, dtype=np.float64) + 0.5
    inside = (centres >= start) & (centres < stop)
    position = np.clip((centres - start) / (stop - start) * source - 0.5, 0, source - 1)
    low = np.floor(position).astype(int)
    high = np.minimum(low + 1, source - 1)
    frac = (position - low).astype(np.float32)
    weights = np.zeros((length, source), np.float32)
    np.add.at(weights, (np.arange(length), low), 1 - frac)
    np.add.at(weights, (np.arange(length), high), frac)
    return weights, inside


def input_window(transform: object, photo_size: tuple[int, int]) -> Window | None:
    """The :class:`Window` of a photo of ``photo_size`` (width, height) under ``transform``, or
    None when the transform changes the geometry in a way this cannot follow.

    Understood: a torchvision weights preset (``ImageClassification``: resize the shorter side
    to ``resize_size``, centre crop ``crop_size``), and ``Compose`` (v1 or v2) of ``Resize``
    (an int or one value: the shorter side, with ``max_size``; two values: height and width),
    ``CenterCrop`` and steps that leave the geometry alone (``ToImage``, ``ToTensor``,
    ``ToDtype``, ``Normalize``…). Anything else (a random crop, a ``Lambda``, a custom
    function) gives None: the caller then shows the map on the model's input only.
    """
    steps = geometry_steps(transform)
    if steps is None:
        return None
    width, height = photo_size
    box = [0.0, 0.0, float(width), float(height)]  # the current picture's extent on the photo
    size = (width, height)  # the current picture's pixels
    for kind, value in steps:
        if kind == "resize":
            size = resized(size, *value)
        else:  # centre crop to (height, width), as torchvision computes it
            crop_h, crop_w = value
            top = round((size[1] - crop_h) / 2.0)
            left = round((size[0] - crop_w) / 2.0)
            scale_x, scale_y = (box[2] - box[0]) / size[0], (box[3] - box[1]) / size[1]
            box = [box[0] + left * scale_x, box[1] + top * scale_y,
                   box[0] + (left + crop_w) * scale_x, box[1] + (top + crop_h) * scale_y]
            size = (crop_w, crop_h)
    return Window((box[0], box[1], box[2], box[3]), (int(width), int(height)))


#: one geometric step: ``("resize", (target, max_size))`` (``target``: ``(s,)`` the shorter side,
#: ``(h, w)`` exact, ``()`` the longer side to ``max_size``) or ``("crop", (h, w))`` (centre)
Step = tuple[str, tuple]


def geometry_steps(transform: object, depth: int = 0) -> list[Step] | None:
    """The resizes and centre crops a transform applies, in order (see :data:`Step`); None if it
    does anything else (see :func:`input_window` for what is understood)."""
    name = type(transform).__name__
    if depth > 8:
        return None
    if hasattr(transform, "resize_size") and hasattr(transform, "crop_size"):  # torchvision weights preset
        return [("resize", (_sizes(transform.resize_size), None)), ("crop", _pair(transform.crop_size))]
    if name == "Compose":
        steps: list[Step] = []
        for child in getattr(transform, "transforms", ()):
            found = geometry_steps(child, depth + 1)
            if found is None:
                return None
            steps += found
        return steps
    if name == "Resize":
        return [("resize", (_sizes(transform.size), getattr(transform, "max_size", None)))]
    if name == "CenterCrop":
        return [("crop", _pair(transform.size))]
    return [] if name in _NO_GEOMETRY else None


def _sizes(size: object) -> tuple[int, ...]:
    if size is None:
        return ()
    return (int(size),) if isinstance(size, (int, np.integer)) else tuple(int(s) for s in size)


def _pair(size: object) -> tuple[int, int]:
    values = _sizes(size)
    return (values[0], values[0]) if len(values) == 1 else (values[0], values[1])


def resized(size: tuple[int, int], target: tuple[int, ...], max_size: int | None) -> tuple[int, int]:
    """``(width, height)`` after torchvision's ``Resize(target, max_size=max_size)``."""
    width, height = size
    if len(target) == 2:
        return target[1], target[0]
    short, long = (width, height) if width <= height else (height, width)
    if target:
        new_short, new_long = target[0], int(target[0] * long / short)
    else:  # size None: the longer side to max_size
        new_short, new_long = int(max_size * short / long), max_size
    if target and max_size is not None and new_long > max_size:
        new_short, new_long = int(max_size * new_short / new_long), max_size
    return (new_short, new_long) if width <= height else (new_long, new_short)
