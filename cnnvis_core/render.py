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
    ``(1 - alpha) · image + alpha · colour``.
    """
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"Opacity must be between 0 and 1, got {alpha}.")
    heat_img = Image.fromarray(np.clip(np.asarray(heat, np.float32) * 255 + 0.5, 0, 255).astype(np.uint8))
    heat_img = heat_img.resize(image.size, Image.Resampling.BILINEAR)
    coloured = colorize(np.asarray(heat_img, np.float32) / 255.0, cmap).astype(np.float32)
    base = np.asarray(image.convert("RGB"), np.float32)
    mixed = (1.0 - alpha) * base + alpha * coloured
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
              text_size: int = 12) -> np.ndarray:
    """A horizontal colour scale as a uint8 RGB image ``width`` pixels wide: the colormap from
    ``low`` (left) to ``high`` (right) with both values printed under its ends, and ``label``
    (what the values are) between them; white background. Put it under a picture whose colours
    came from ``colorize(unit, cmap)`` with ``unit = (v − low) / (high − low)``, so a reader can
    read values back off the colours."""
    width = max(64, int(width))
    bar_height, gap = max(8, text_size), 3
    text = _text_font(text_size)
    bar = colorize(np.tile(np.linspace(0.0, 1.0, width, dtype=np.float32), (bar_height, 1)), cmap)
    canvas = Image.new("RGB", (width, bar_height + gap + text_size + 4), (255, 255, 255))
    canvas.paste(Image.fromarray(bar), (0, 0))
    draw = ImageDraw.Draw(canvas)
    top = bar_height + gap
    low_text, high_text = _number(low), _number(high)
    draw.text((0, top), low_text, fill=(0, 0, 0), font=text)
    draw.text((width, top), high_text, fill=(0, 0, 0), font=text, anchor="ra")
    if label:
        draw.text((width // 2, top), label, fill=(60, 60, 60), font=text, anchor="ma")
    return np.asarray(canvas)


def with_color_bar(picture: np.ndarray, cmap: str, low: float, high: float, label: str = "") -> np.ndarray:
    """``picture`` (H×W×3 uint8) with :func:`color_bar` under it, as wide as the picture."""
    width = picture.shape[1]
    bar = color_bar(cmap, low, high, width, label, text_size=max(10, min(16, width // 40)))
    pad = np.full((6, width, 3), 255, np.uint8)
    return np.concatenate([np.asarray(picture, np.uint8), pad, bar])


def _number(value: float) -> str:
    return f"{value:.3g}"


@lru_cache(maxsize=8)
def _text_font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's bundled TrueType font at ``size`` px, drawn at the size it is shown (crisp)."""
    try:
        return ImageFont.load_default(size=size)
    except (ImportError, TypeError):  # pragma: no cover - Pillow built without FreeType
        return ImageFont.load_default()
