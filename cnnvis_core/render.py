"""Pictures from arrays: colormaps, heat-map overlays and PNG bytes.

Colormaps are sampled from plotly's colour scales (a dependency of the dashboard already),
so the PNGs the library writes use the same colours as the page's interactive heatmaps.
Everything returns ``uint8`` arrays (H×W×3) or PIL images and leaves its inputs untouched.
"""

from __future__ import annotations

import io
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from plotly import colors as plotly_colors

from .errors import InputError

#: colormaps offered by the dashboard (plotly colour-scale names)
COLORMAPS: tuple[str, ...] = ("viridis", "gray", "inferno", "magma", "jet", "turbo", "rdbu_r", "cividis")
#: colormaps meant for signed data centred on zero
DIVERGING: tuple[str, ...] = ("rdbu_r", "piyg", "brbg", "puor_r")

#: scales plotly lacks or defines differently (plotly's Greys is not linear)
_OWN_SCALES = {
    "gray": [[0, "rgb(0,0,0)"], [1, "rgb(255,255,255)"]],
    "grey": [[0, "rgb(0,0,0)"], [1, "rgb(255,255,255)"]],
    "jet": [[0, "rgb(0,0,131)"], [0.125, "rgb(0,60,170)"], [0.375, "rgb(5,255,255)"],
            [0.625, "rgb(255,255,0)"], [0.875, "rgb(250,0,0)"], [1, "rgb(128,0,0)"]],
}


@lru_cache(maxsize=32)
def colormap_lut(name: str) -> np.ndarray:
    """A 256×3 uint8 lookup table for the plotly colour scale ``name`` (``gray``, ``jet`` included)."""
    key = name.lower()
    scale = _OWN_SCALES.get(key)
    if scale is None:
        try:
            scale = plotly_colors.get_colorscale(key)
        except Exception as error:  # plotly raises PlotlyError for unknown names
            raise InputError(f"Unknown colormap {name!r}; try one of {', '.join(COLORMAPS)}.") from error
    samples = plotly_colors.sample_colorscale(scale, np.linspace(0, 1, 256).tolist(), colortype="tuple")
    parsed = [plotly_colors.unlabel_rgb(s) if isinstance(s, str) else s for s in samples]
    lut = np.asarray(parsed, dtype=np.float64)
    if lut.max() <= 1.0:
        lut = lut * 255.0
    return np.clip(lut + 0.5, 0, 255).astype(np.uint8)


def colorize(unit: np.ndarray, cmap: str = "viridis") -> np.ndarray:
    """Values in [0, 1] (any shape) → uint8 RGB (shape + (3,)) through the colormap's table."""
    index = np.clip(np.asarray(unit) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return colormap_lut(cmap)[index]


def overlay(image: Image.Image, heat: np.ndarray, alpha: float = 0.5, cmap: str = "jet") -> Image.Image:
    """Blend a heat map (values in [0, 1], any resolution) over ``image``.

    The map is resized bilinearly to the image's size, coloured, and mixed as
    ``(1 - alpha) · image + alpha · colour``. NaN in the map marks pixels it says nothing about
    (a photo's parts the model's crop left out, :meth:`cnnvis_core.view.Window.to_photo`):
    those keep the image's own colours, darkened by ``alpha / 2``, uncoloured.
    """
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"Opacity must be between 0 and 1, got {alpha}.")
    heat = np.asarray(heat, np.float32)
    unknown = np.isnan(heat)
    heat_img = Image.fromarray(np.clip(np.where(unknown, 0, heat) * 255 + 0.5, 0, 255).astype(np.uint8))
    heat_img = heat_img.resize(image.size, Image.Resampling.BILINEAR)
    coloured = colorize(np.asarray(heat_img, np.float32) / 255.0, cmap).astype(np.float32)
    base = np.asarray(image.convert("RGB"), np.float32)
    mixed = (1.0 - alpha) * base + alpha * coloured
    if unknown.any():
        outside = np.asarray(Image.fromarray(unknown).resize(image.size, Image.Resampling.NEAREST))
        mixed[outside] = base[outside] * (1.0 - alpha / 2)
    return Image.fromarray(np.clip(mixed + 0.5, 0, 255).astype(np.uint8))


def to_png_bytes(image: Image.Image | np.ndarray, compress_level: int = 6) -> bytes:
    """PNG file contents of an image or a uint8 array (for download buttons); ``compress_level``
    is zlib's, 0 (none) to 9, Pillow's default 6."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(np.ascontiguousarray(image, np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=compress_level)
    return buffer.getvalue()


def color_bar(cmap: str, low: float, high: float, width: int = 256, label: str = "",
              text_size: int = 12, ends: tuple[str, str] | None = None) -> np.ndarray:
    """A horizontal colour scale as a uint8 RGB image ``width`` pixels wide: the colormap from
    ``low`` (left) to ``high`` (right) with both values printed under its ends, and ``label``
    (what the values are) between them; white background. Put it under a picture whose colours
    came from ``colorize(unit, cmap)`` with ``unit = (v − low) / (high − low)``, so a reader can
    read values back off the colours.

    ``ends`` replaces the two printed values with words (``("min", "max")`` for pictures whose
    tiles are each scaled on their own); a label too long to fit between the ends goes under them,
    on as many lines of the bar's width as it needs."""
    width = max(64, int(width))
    bar_height, gap = max(8, text_size), 3
    text = font(text_size)
    low_text, high_text = ends if ends is not None else (_number(low), _number(high))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    room = width - probe.textlength(low_text, font=text) - probe.textlength(high_text, font=text) - 2 * text_size
    below = _wrap(probe, label, text, width) if label and probe.textlength(label, font=text) > room else []
    bar = colorize(np.tile(np.linspace(0.0, 1.0, width, dtype=np.float32), (bar_height, 1)), cmap)
    canvas = Image.new("RGB", (width, bar_height + gap + (1 + len(below)) * (text_size + 4)), (255, 255, 255))
    canvas.paste(Image.fromarray(bar), (0, 0))
    draw = ImageDraw.Draw(canvas)
    top = bar_height + gap
    draw.text((0, top), low_text, fill=(0, 0, 0), font=text)
    draw.text((width, top), high_text, fill=(0, 0, 0), font=text, anchor="ra")
    for k, line in enumerate(below, start=1):
        draw.text((0, top + k * (text_size + 4)), line, fill=(60, 60, 60), font=text)
    if label and not below:
        draw.text((width // 2, top), label, fill=(60, 60, 60), font=text, anchor="ma")
    return np.asarray(canvas)


def _wrap(draw: ImageDraw.ImageDraw, text: str, face: ImageFont.ImageFont, width: int) -> list[str]:
    """``text`` broken at spaces into lines at most ``width`` pixels wide (a longer word alone)."""
    lines: list[str] = []
    for word in text.split():
        if lines and draw.textlength(f"{lines[-1]} {word}", font=face) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def with_color_bar(picture: np.ndarray, cmap: str, low: float, high: float, label: str = "", *,
                   text_size: int | None = None, width: int | None = None,
                   ends: tuple[str, str] | None = None) -> np.ndarray:
    """``picture`` (H×W×3 uint8) with :func:`color_bar` under it, as wide as the picture (or
    ``width`` pixels, left-aligned, on white); ``text_size`` defaults to a fortieth of the width,
    10 to 16 px (give it for a picture drawn at a multiple of its shown size)."""
    picture = np.asarray(picture, np.uint8)
    span = picture.shape[1] if width is None else min(int(width), picture.shape[1])
    size = text_size if text_size is not None else max(10, min(16, span // 40))
    bar = color_bar(cmap, low, high, span, label, text_size=size, ends=ends)
    full = max(picture.shape[1], bar.shape[1])    # the bar is at least 64 px wide

    def widen(part: np.ndarray) -> np.ndarray:
        extra = full - part.shape[1]
        return part if not extra else np.concatenate([part, np.full((part.shape[0], extra, 3), 255, np.uint8)], 1)
    pad = np.full((6, full, 3), 255, np.uint8)
    return np.concatenate([widen(picture), pad, widen(bar)])


def _number(value: float) -> str:
    return f"{value:.3g}"


@lru_cache(maxsize=8)
def font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's bundled TrueType font at ``size`` px (its bitmap font where FreeType is missing); text
    drawn at the size it is shown stays crisp."""
    try:
        return ImageFont.load_default(size=size)
    except (ImportError, TypeError):  # pragma: no cover - Pillow built without FreeType
        return ImageFont.load_default()
