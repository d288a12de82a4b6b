"""Where a pixel of the model's input lies in the original image: the resize and crop of a transform.

A classifier's transform resizes the image (to a fixed size, or its shorter side to ``s``) and may
crop the centre; both are affine in each axis, ``x_in = a · x_orig + b``. :func:`view_of` reads
the steps with :func:`cnnvis_core.view.geometry_steps` (the same reading that lays a CAM over the
photo); a transform it cannot read is taken as a plain resize to the input size, and says so
(``exact=False``). A :class:`View` is plain data, so it travels in a result's manifest.
:meth:`View.to_original` maps a box of the input tensor back to the original image, so a crop of a
dataset example is cut from the file at its own resolution.

Sizes follow torchvision: a single size resizes the shorter side to it, the longer to
``int(size · long / short)``; a centre crop starts at ``round((H − h) / 2)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..view import Step, geometry_steps, resized

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class View:
    """The geometric steps of a transform (:data:`cnnvis_core.view.Step`: ``("resize", (target,
    max_size))`` and ``("crop", (h, w))``), in order; ``exact`` is False when the steps were
    assumed rather than read."""

    steps: tuple[Step, ...]
    exact: bool = True

    def sizes(self, size: tuple[int, int]) -> list[tuple[str, tuple[int, int], tuple[int, int]]]:
        """``[(step, (w, h) before, (w, h) after)]`` for an image of ``size = (w, h)``."""
        out = []
        for op, arg in self.steps:
            after = resized(size, *arg) if op == "resize" else (arg[1], arg[0])
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
        steps = [["resize", [list(arg[0]), arg[1]]] if op == "resize" else [op, list(arg)] for op, arg in self.steps]
        return {"steps": steps, "exact": self.exact}

    @classmethod
    def from_dict(cls, data: dict) -> View:
        return cls(tuple(_step(str(op), arg) for op, arg in data["steps"]), bool(data["exact"]))


def _step(op: str, arg: list) -> Step:
    """A step read back from JSON (also the older ``["resize", [s]]`` form, without ``max_size``)."""
    if op != "resize":
        return op, tuple(int(a) for a in arg)
    if all(isinstance(a, int) for a in arg):
        return op, (tuple(arg), None)
    return op, (tuple(int(t) for t in arg[0]), None if arg[1] is None else int(arg[1]))


def view_of(transform: object, input_size: tuple[int, int]) -> View:
    """The :class:`View` of a transform; a transform that cannot be read is assumed to resize to
    ``input_size = (h, w)`` (``exact=False``)."""
    steps = geometry_steps(transform)
    if steps is None:
        return View((("resize", ((int(input_size[0]), int(input_size[1])), None)),), exact=False)
    return View(tuple(steps))
