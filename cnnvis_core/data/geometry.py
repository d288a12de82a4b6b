"""Where a pixel of the model's input lies in the original image: the resize and crop of a transform.

A classifier's transform resizes the image (to a fixed size, or its shorter side to ``s``) and may
crop the centre; both are affine in each axis, ``x_in = a · x_orig + b``. :func:`view_of` reads
the steps from the transform (torchvision's ``ImageClassification`` preset, ``Compose`` of v1 or
v2 ``Resize`` / ``CenterCrop`` and pixel-wise steps such as ``ToTensor`` and ``Normalize``); a
transform it cannot read is taken as a plain resize to the input size, and says so
(``exact=False``). :meth:`View.to_original` maps a box of the input tensor back to the original
image, so a crop of a dataset example is cut from the file at its own resolution.

Sizes follow torchvision: a single size resizes the shorter side to it, the longer to
``int(size · long / short)``; a centre crop starts at ``round((H − h) / 2)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

#: transform classes that move no pixel (by class name, v1 and v2 alike)
_PIXELWISE = frozenset({"ToImage", "ToTensor", "PILToTensor", "ToDtype", "ConvertImageDtype", "Normalize",
                        "ToPILImage", "ToPureTensor", "RGB", "Lambda"})

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class View:
    """The geometric steps of a transform: ``("resize", size)`` (``[s]``: shorter side, ``[h, w]``:
    exact) and ``("crop", [h, w])`` (centre), in order; ``exact`` is False when the steps were
    assumed rather than read."""

    steps: tuple[tuple[str, tuple[int, ...]], ...]
    exact: bool = True

    def sizes(self, size: tuple[int, int]) -> list[tuple[str, tuple[int, int], tuple[int, int]]]:
        """``[(step, (w, h) before, (w, h) after)]`` for an image of ``size = (w, h)``."""
        out = []
        for op, arg in self.steps:
            after = _resized(size, arg) if op == "resize" else (arg[-1], arg[0])
            out.append((op, size, after))
            size = after
        return out

    def affine(self, size: tuple[int, int]) -> tuple[float, float, float, float]:
        """``(ax, bx, ay, by)`` with ``x_in = ax · x + bx`` (same in y) for an image of ``size = (w, h)``."""
        ax, bx, ay, by = 1.0, 0.0, 1.0, 0.0
        for op, before, after in self.sizes(size):
            if op == "resize":
                sx, sy = after[0] / before[0], after[1] / before[1]
                ax, bx, ay, by = ax * sx, bx * sx, ay * sy, by * sy
            else:
                left, top = round((before[0] - after[0]) / 2.0), round((before[1] - after[1]) / 2.0)
                bx, by = bx - left, by - top
        return ax, bx, ay, by

    def to_original(self, box: Box, size: tuple[int, int]) -> Box:
        """``box = (left, top, right, bottom)`` of the input tensor (right/bottom exclusive) in an
        image of ``size = (w, h)``, clipped to it."""
        ax, bx, ay, by = self.affine(size)
        left, top, right, bottom = box
        x0, x1 = (left - bx) / ax, (right - bx) / ax
        y0, y1 = (top - by) / ay, (bottom - by) / ay
        w, h = size
        return (max(0, int(np.floor(x0))), max(0, int(np.floor(y0))),
                min(w, int(np.ceil(x1))), min(h, int(np.ceil(y1))))

    def apply(self, image: Image.Image, resample: Image.Resampling = Image.Resampling.BILINEAR) -> Image.Image:
        """The image (or a mask as an ``L`` image, with ``NEAREST``) resized and cropped as the model sees it."""
        for op, _before, after in self.sizes(image.size):
            if op == "resize":
                image = image.resize(after, resample)
            else:
                left, top = round((image.width - after[0]) / 2.0), round((image.height - after[1]) / 2.0)
                image = image.crop((left, top, left + after[0], top + after[1]))
        return image

    def as_dict(self) -> dict:
        return {"steps": [[op, list(arg)] for op, arg in self.steps], "exact": self.exact}

    @classmethod
    def from_dict(cls, data: dict) -> View:
        return cls(tuple((str(op), tuple(int(a) for a in arg)) for op, arg in data["steps"]), bool(data["exact"]))


def _resized(size: tuple[int, int], arg: Sequence[int]) -> tuple[int, int]:
    w, h = size
    if len(arg) == 2:
        return int(arg[1]), int(arg[0])
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = int(arg[0]), int(int(arg[0]) * long / short)
    return (new_short, new_long) if w <= h else (new_long, new_short)


def _as_size(size: object) -> tuple[int, ...]:
    if isinstance(size, int):
        return (size,)
    return tuple(int(s) for s in size)


def _steps(transform: object) -> list[tuple[str, tuple[int, ...]]] | None:
    """The geometric steps of ``transform``, or None when one of its parts is unknown."""
    name = type(transform).__name__
    if name == "ImageClassification":  # torchvision's preset: resize the shorter side, then crop
        return [("resize", _as_size(transform.resize_size)), ("crop", _as_square(_as_size(transform.crop_size)))]
    if hasattr(transform, "transforms") and isinstance(transform.transforms, (list, tuple)):
        steps: list[tuple[str, tuple[int, ...]]] = []
        for part in transform.transforms:
            inner = _steps(part)
            if inner is None:
                return None
            steps += inner
        return steps
    if name == "Resize":
        return [("resize", _as_size(transform.size))]
    if name == "CenterCrop":
        return [("crop", _as_square(_as_size(transform.size)))]
    if name in _PIXELWISE:
        return []
    return None


def _as_square(size: tuple[int, ...]) -> tuple[int, int]:
    return (size[0], size[0]) if len(size) == 1 else (size[0], size[1])


def view_of(transform: object, input_size: tuple[int, int]) -> View:
    """The :class:`View` of a transform; a transform that cannot be read is assumed to resize to
    ``input_size = (h, w)`` (``exact=False``)."""
    steps = _steps(transform)
    if steps is None:
        return View((("resize", (int(input_size[0]), int(input_size[1]))),), exact=False)
    return View(tuple(steps))
