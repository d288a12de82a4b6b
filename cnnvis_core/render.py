"""Pictures from arrays: colormaps, heat-map overlays and PNG bytes.

Colormaps are sampled from plotly's colour scales (a dependency of the dashboard already),
so the PNGs the library writes use the same colours as the page's interactive heatmaps.
Everything returns ``uint8`` arrays (H×W×3) or PIL images and leaves its inputs untouched.
"""

from __future__ import annotations

import io
from functools import lru_cache

import numpy as np
from PIL import Image
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
