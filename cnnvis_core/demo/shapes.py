"""Procedural data set of the demo model: coloured shapes on cluttered, textured backgrounds.

Every sample is drawn from its seed alone (``numpy.random.default_rng``), so a sample is
reproducible anywhere and seeds split the data cleanly: training uses seeds below
:data:`HELD_OUT_SEED_START`, tests and the dashboard's sample images use seeds from there on.

A sample is a 128×128 RGB image, the class index of each object and one boolean mask per
object (the ground truth that the CAM tests point into). The background is low-frequency
colour noise plus a random texture (stripes, checks or grain) and clutter (lines, dots,
arcs) that never forms one of the classes' shapes; objects get a colour that stands out from
the background under them, a gentle shading, random position, size and rotation.
"""

from __future__ import annotations

import colorsys
import math

import numpy as np
from PIL import Image, ImageDraw

SIZE = 128
CLASSES: tuple[str, ...] = (
    "circle", "square", "triangle", "star", "cross", "ring", "heart", "arrow",
)
HELD_OUT_SEED_START = 1_000_000_000
_SUPERSAMPLE = 4

Point = tuple[float, float]


def _regular(n: int, start: float = -math.pi / 2) -> list[Point]:
    return [(math.cos(start + 2 * math.pi * i / n), math.sin(start + 2 * math.pi * i / n)) for i in range(n)]


def _star(points: int = 5, inner: float = 0.45) -> list[Point]:
    out = []
    for i in range(2 * points):
        r = 1.0 if i % 2 == 0 else inner
        a = -math.pi / 2 + math.pi * i / points
        out.append((r * math.cos(a), r * math.sin(a)))
    return out


def _cross(w: float = 0.4) -> list[Point]:
    return [(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1), (-w, w), (-1, w), (-1, -w), (-w, -w)]


def _heart(n: int = 64) -> list[Point]:
    """The classic heart curve x = 16 sin³t, y = −(13 cos t − 5 cos 2t − 2 cos 3t − cos 4t),
    centred on its bounding box and scaled into the unit disc."""
    t = [2 * math.pi * i / n for i in range(n)]
    xs = [16 * math.sin(a) ** 3 for a in t]
    ys = [-(13 * math.cos(a) - 5 * math.cos(2 * a) - 2 * math.cos(3 * a) - math.cos(4 * a)) for a in t]
    cy = (max(ys) + min(ys)) / 2
    scale = max(math.hypot(x, y - cy) for x, y in zip(xs, ys)) / 0.95
    return [(x / scale, (y - cy) / scale) for x, y in zip(xs, ys)]


def _arrow() -> list[Point]:
    return [(-1, -0.22), (0.15, -0.22), (0.15, -0.62), (1, 0), (0.15, 0.62), (0.15, 0.22), (-1, 0.22)]


# Each shape: a list of (polygon in the unit disc, fill value). Fill 0 cuts a hole.
_SHAPES: dict[str, list[tuple[list[Point], int]]] = {
    "circle": [(_regular(64), 255)],
    "square": [([(x * 0.8, y * 0.8) for x, y in _regular(4, math.pi / 4)], 255)],
    "triangle": [([(x, y * 1.0 + 0.15) for x, y in _regular(3)], 255)],
    "star": [(_star(), 255)],
    "cross": [(_cross(), 255)],
    "ring": [(_regular(64), 255), ([(0.55 * x, 0.55 * y) for x, y in _regular(64)], 0)],
    "heart": [(_heart(), 255)],
    "arrow": [(_arrow(), 255)],
}


def _transform(poly: list[Point], cx: float, cy: float, r: float, angle: float, scale: float) -> list[Point]:
    c, s = math.cos(angle), math.sin(angle)
    return [((cx + r * (c * x - s * y)) * scale, (cy + r * (s * x + c * y)) * scale) for x, y in poly]


def shape_alpha(name: str, cx: float, cy: float, r: float, angle: float, size: int = SIZE) -> np.ndarray:
    """Anti-aliased coverage (float32 in [0, 1], H×W) of one shape centred at (cx, cy), radius r."""
    big = Image.new("L", (size * _SUPERSAMPLE, size * _SUPERSAMPLE), 0)
    draw = ImageDraw.Draw(big)
    for poly, fill in _SHAPES[name]:
        draw.polygon(_transform(poly, cx, cy, r, angle, _SUPERSAMPLE), fill=fill)
    small = big.resize((size, size), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


def _smooth_noise(rng: np.random.Generator, cells: int, channels: int, size: int = SIZE) -> np.ndarray:
    grid = rng.random((cells, cells, channels)).astype(np.float32)
    img = Image.fromarray((grid * 255).astype(np.uint8).squeeze())
    up = np.asarray(img.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32) / 255.0
    return up.reshape(size, size, channels)


def _texture(rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """A grayscale texture in [-1, 1]: stripes, checks, grain or nothing."""
    kind = rng.integers(4)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    if kind == 0:
        a, f = rng.uniform(0, math.pi), rng.uniform(0.15, 0.8)
        return np.sin(f * (xx * math.cos(a) + yy * math.sin(a)))
    if kind == 1:
        p = int(rng.integers(4, 16))
        return ((xx // p + yy // p) % 2) * 2.0 - 1.0
    if kind == 2:
        return rng.uniform(-1, 1, (size, size)).astype(np.float32)
    return np.zeros((size, size), np.float32)


def _background(rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """Muted colour noise + texture, float32 H×W×3 in [0, 1]."""
    base = _smooth_noise(rng, int(rng.integers(2, 7)), 3, size)
    gray = base.mean(axis=2, keepdims=True)
    base = gray + rng.uniform(0.2, 0.9) * (base - gray)
    bg = base + rng.uniform(0.03, 0.18) * _texture(rng, size)[..., None]
    return np.clip(bg, 0, 1)


def _clutter(rng: np.random.Generator, img: Image.Image, count: int) -> None:
    """Lines, dots and arcs in random colours: distractors that are no class's shape."""
    draw = ImageDraw.Draw(img)
    for _ in range(count):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        kind = rng.integers(3)
        x0, y0 = rng.uniform(0, img.width, 2)
        if kind == 0:
            x1, y1 = x0 + rng.normal(0, 30), y0 + rng.normal(0, 30)
            draw.line([(x0, y0), (x1, y1)], fill=colour, width=int(rng.integers(1, 4)))
        elif kind == 1:
            rad = rng.uniform(1.5, 4)
            draw.ellipse([x0 - rad, y0 - rad, x0 + rad, y0 + rad], fill=colour)
        else:
            rad = rng.uniform(6, 18)
            start = rng.uniform(0, 360)
            draw.arc([x0 - rad, y0 - rad, x0 + rad, y0 + rad], start, start + rng.uniform(40, 160),
                     fill=colour, width=int(rng.integers(1, 3)))


def _object_colour(rng: np.random.Generator, under: np.ndarray) -> np.ndarray:
    """A colour (RGB in [0, 1]) at least a clear distance from the mean background under the object."""
    for _ in range(30):
        h, s, v = rng.random(), rng.uniform(0.35, 1.0), rng.uniform(0.25, 1.0)
        colour = np.array(colorsys.hsv_to_rgb(h, s, v), np.float32)
        if np.linalg.norm(colour - under) > 0.45:
            return colour
    return np.where(under > 0.5, 0.05, 0.95).astype(np.float32)


def _place(rng: np.random.Generator, radii: list[float], size: int = SIZE) -> list[tuple[float, float]]:
    """Centres keeping every object inside the image and apart from the others."""
    for _ in range(200):
        centres = [tuple(rng.uniform(r + 2, size - r - 2, 2)) for r in radii]
        if all(math.dist(centres[i], centres[j]) > radii[i] + radii[j] + 4
               for i in range(len(radii)) for j in range(i)):
            return centres
    raise RuntimeError("could not place the objects apart")  # pragma: no cover - radii are chosen to fit


def _paint(rng: np.random.Generator, canvas: np.ndarray, alpha: np.ndarray) -> None:
    """Composite one shaded object of a contrasting colour onto the canvas (in place)."""
    inside = alpha > 0.5
    colour = _object_colour(rng, canvas[inside].mean(axis=0))
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) / SIZE
    a = rng.uniform(0, 2 * math.pi)
    shade = 1.0 + rng.uniform(0, 0.25) * (math.cos(a) * (xx - 0.5) + math.sin(a) * (yy - 0.5))
    obj = np.clip(colour[None, None, :] * shade[..., None], 0, 1)
    canvas[:] = canvas * (1 - alpha[..., None]) + obj * alpha[..., None]


def render(rng: np.random.Generator, n_objects: int = 1) -> tuple[Image.Image, list[int], list[np.ndarray]]:
    """Draw one sample from ``rng``: see :func:`sample`."""
    if n_objects < 1 or n_objects > len(CLASSES):
        raise ValueError(f"n_objects must be between 1 and {len(CLASSES)}, got {n_objects}")
    labels = [int(c) for c in rng.choice(len(CLASSES), size=n_objects, replace=False)]
    low, high = (0.17, 0.36) if n_objects == 1 else (0.13, 0.22)
    radii = [float(rng.uniform(low, high) * SIZE) for _ in labels]
    centres = _place(rng, radii)
    bg = Image.fromarray((_background(rng) * 255).astype(np.uint8))
    _clutter(rng, bg, int(rng.integers(4, 16)))
    canvas = np.asarray(bg, np.float32) / 255.0
    masks = []
    for label, r, (cx, cy) in zip(labels, radii, centres):
        alpha = shape_alpha(CLASSES[label], cx, cy, r, rng.uniform(0, 2 * math.pi))
        _paint(rng, canvas, alpha)
        masks.append(alpha > 0.5)
    image = Image.fromarray((canvas * 255 + 0.5).astype(np.uint8))
    if rng.random() < 0.3:  # a few thin distractors over the objects too
        _clutter(rng, image, int(rng.integers(1, 3)))
    return image, labels, masks


def sample(seed: int, n_objects: int = 1) -> tuple[Image.Image, list[int], list[np.ndarray]]:
    """The sample of one seed: ``(image, labels, masks)``.

    ``image`` is a 128×128 RGB PIL image, ``labels`` the class index (into :data:`CLASSES`) of
    each object, ``masks`` one boolean 128×128 array per object (True on the object). With
    several objects, they are of different classes and do not overlap. The same
    ``(seed, n_objects)`` always gives the same sample.
    """
    return render(np.random.default_rng([int(seed), int(n_objects)]), n_objects)


def class_names() -> list[str]:
    """The class names, in label order."""
    return list(CLASSES)


