"""Contact sheets: many small pictures laid out as ONE image, each tile optionally titled.

A layer with 512 channels or a conv with 262 144 kernels is shown as one PNG, not as hundreds
of widgets. Tiles are ``uint8`` RGB arrays of one size; small ones (a 3×3 kernel, a 7×7 map)
are enlarged by an integer factor with nearest-neighbour sampling so each value stays a crisp
square. The layout matches torchvision's ``make_grid``: row-major, ``ncols`` tiles per row,
``padding`` pixels between tiles and around the border.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .errors import InputError
from .render import font, to_png_bytes, with_color_bar

#: colour of the gaps between tiles (light gray, distinct from every colormap's ends)
BACKGROUND = (236, 236, 236)


@dataclass(frozen=True)
class Style:
    """How a sheet is drawn to be shown: the pictures' functions that take a ``style`` fit the
    sheet to about ``width`` displayed pixels, label it with ``text``-pixel type (a real font,
    drawn at that size, never enlarged afterwards), print each tile's value range where tiles
    are scaled on their own, and put a colour scale under the sheet.

    Every length is in displayed pixels and drawn ``scale`` times larger (2: sharp on
    high-density screens when the picture is shown ``scale`` times smaller; see :attr:`shown`).
    Tiles are enlarged by whole factors (each value stays a crisp square) to at least
    ``min_tile`` and, while there is room, up to ``max_tile`` displayed pixels.
    """

    width: int = 1000
    scale: int = 1
    min_tile: int = 40
    max_tile: int = 128
    text: int = 12
    padding: int = 2

    def px(self, length: int) -> int:
        """``length`` displayed pixels in drawn pixels."""
        return int(length) * self.scale

    def shown(self, sheet: np.ndarray) -> int:
        """The width to show ``sheet`` at (displayed pixels)."""
        return max(1, sheet.shape[1] // self.scale)


def fit_grid(n: int, tile_hw: tuple[int, int], width: int, min_tile: int, max_tile: int, padding: int,
             ncols: int | None = None) -> tuple[int, int]:
    """``(factor, cols)`` for a sheet of ``n`` tiles of ``tile_hw`` pixels about ``width`` pixels
    wide: columns ⌈√n⌉ (or ``ncols``) but no more than fit; tiles enlarged by the smallest whole
    factor that makes them ``min_tile`` pixels, then, with room to spare, by up to
    ``max_tile / side``."""
    h, w = tile_hw
    factor = enlarge_factor(min(h, w), min_tile)
    _, cols = grid_shape(n, ncols)
    cols = max(1, min(cols, (width - padding) // (w * factor + padding)))
    room = (width - padding) // cols - padding
    return max(factor, min(room // w, max_tile // max(1, min(h, w)))), cols


def scale_under(sheet: np.ndarray, style: Style, cmap: str, low: float, high: float, label: str,
                ends: tuple[str, str] | None = None) -> np.ndarray:
    """``sheet`` with its colour scale under it (:func:`~cnnvis_core.render.with_color_bar`) in the
    style's type, at most 600 displayed pixels wide; ``ends`` names the ends in words (``("min",
    "max")`` for tiles scaled on their own) instead of ``low`` and ``high``."""
    return with_color_bar(sheet, cmap, low, high, label, text_size=style.px(style.text), width=style.px(600),
                          ends=ends)


def value_range(low: float, high: float) -> str:
    """A tile's value range as printed under it: ``-0.52 to 1.3`` (ASCII: Pillow's bundled font
    has no dashes or arrows)."""
    return f"{low:.2g} to {high:.2g}"


def grid_shape(n: int, ncols: int | None = None) -> tuple[int, int]:
    """``(rows, cols)`` of a sheet of ``n`` tiles: ``ncols`` per row (⌈√n⌉ by default)."""
    if n < 1:
        raise InputError("A sheet needs at least one tile.")
    cols = max(1, min(int(ncols or math.ceil(math.sqrt(n))), n))
    return math.ceil(n / cols), cols


def enlarge_factor(size: int, min_size: int) -> int:
    """The smallest integer factor that makes a side of ``size`` pixels at least ``min_size``."""
    return max(1, math.ceil(min_size / max(1, size)))


def enlarge(tiles: np.ndarray, factor: int) -> np.ndarray:
    """Repeat every pixel of ``(N, H, W, …)`` tiles ``factor`` times along H and W (nearest)."""
    if factor == 1:
        return tiles
    return tiles.repeat(factor, axis=1).repeat(factor, axis=2)


def layout(tiles: np.ndarray, ncols: int | None = None, padding: int = 2,
           background: tuple[int, int, int] = BACKGROUND, cell: tuple[int, int] | None = None) -> np.ndarray:
    """``(N, h, w, 3)`` uint8 tiles → one ``(rows·(H+p)+p, cols·(W+p)+p, 3)`` uint8 image, where
    ``(H, W) = cell`` (default ``(h, w)``; a larger cell leaves room under or beside each tile).

    Tile ``k`` sits at row ``k // cols``, column ``k % cols``, its top-left pixel at
    ``(p + row·(H+p), p + col·(W+p))``; the rest is ``background``. The tiles are copied once,
    straight into the sheet (through a 5-D view of it).
    """
    if tiles.ndim != 4 or tiles.shape[3] != 3:
        raise InputError(f"Sheet tiles must be (N, h, w, 3), got {tiles.shape}.")
    n, h, w, _ = tiles.shape
    ch, cw = cell if cell is not None else (h, w)
    if ch < h or cw < w:
        raise InputError(f"A sheet cell {ch}×{cw} cannot hold tiles of {h}×{w}.")
    rows, cols = grid_shape(n, ncols)
    sheet = np.empty((rows * (ch + padding) + padding, cols * (cw + padding) + padding, 3), np.uint8)
    sheet[:] = np.asarray(background, np.uint8)
    # cell (r, c) = rows p + r·(H+p) … and columns p + c·(W+p) …: split both axes of the body
    cells = sheet[padding:, padding:].reshape(rows, ch + padding, cols, cw + padding, 3)
    full = (n // cols) * cols
    if full:
        cells[: n // cols, :h, :, :w] = tiles[:full].reshape(n // cols, cols, h, w, 3).transpose(0, 2, 1, 3, 4)
    if n > full:
        cells[n // cols, :h, : n - full, :w] = tiles[full:].transpose(1, 0, 2, 3)
    return sheet


def tile_origin(k: int, tile_hw: tuple[int, int], ncols: int, padding: int) -> tuple[int, int]:
    """``(top, left)`` pixel of tile ``k`` in a sheet made by :func:`layout`."""
    row, col = divmod(k, ncols)
    return padding + row * (tile_hw[0] + padding), padding + col * (tile_hw[1] + padding)


def sheet_png(sheet: np.ndarray) -> bytes:
    """PNG file contents of a sheet, lossless, with zlib's fastest level: a 512-tile sheet
    (1336×1681) encodes about 3× faster than at Pillow's default level for ~10 % more bytes,
    which matters because pages re-encode a sheet whenever the user changes the view."""
    return to_png_bytes(sheet, compress_level=1)


def titled_sheet(tiles: np.ndarray, titles: Sequence[Sequence[str]], ncols: int | None = None,
                 padding: int = 4, size: int = 11,
                 background: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    """Tiles with a caption strip of one or more text lines under each (a page of subplots),
    on ``background`` (white; keep it light, the text is dark); the strip is
    ``lines · (size + 3) + 2`` pixels high.

    ``titles[k]`` holds the lines under tile ``k``; lines too wide for the tile are shortened
    with an ellipsis in the middle so both ends of a layer name stay readable.
    """
    n, h, w, _ = tiles.shape
    lines = max((len(t) for t in titles), default=0)
    strip = lines * (size + 3) + 2
    _, cols = grid_shape(n, ncols)
    sheet = Image.fromarray(layout(tiles, cols, padding, background, cell=(h + strip, w)))
    draw = ImageDraw.Draw(sheet)
    face = font(size)
    for k, title in enumerate(titles):
        top, left = tile_origin(k, (h + strip, w), cols, padding)
        for j, line in enumerate(title):
            text = _fit(draw, str(line), face, w)
            draw.text((left, top + h + 1 + j * (size + 3)), text, fill=(30, 30, 30), font=face)
    return np.asarray(sheet)


def axis_sheet(tiles: np.ndarray, ncols: int, row_labels: Sequence[str], col_labels: Sequence[str],
               row_title: str, col_title: str, padding: int = 2, size: int = 11,
               background: tuple[int, int, int] = BACKGROUND) -> np.ndarray:
    """Tiles laid out as by :func:`layout` with labelled axes: ``col_title`` and one label over
    each column on top, ``row_title`` and one label per row on the left (a matrix of kernels,
    filters × inputs), on white. Column labels too close to fit are thinned to every k-th."""
    _, h, w, _ = tiles.shape
    grid = layout(tiles, ncols, padding, background)
    face = font(size)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line = size + 4
    left = int(max([probe.textlength(str(t), font=face) for t in (*row_labels, row_title)] + [0])) + size
    top = 2 * line + 2
    width = max(left + grid.shape[1], int(probe.textlength(col_title, font=face)) + left)
    canvas = Image.new("RGB", (width, top + grid.shape[0]), (255, 255, 255))
    canvas.paste(Image.fromarray(grid), (left, top))
    draw = ImageDraw.Draw(canvas)
    ink = (30, 30, 30)
    draw.text((left, 0), col_title, fill=ink, font=face)
    draw.text((0, line), row_title, fill=ink, font=face)
    widest = max([probe.textlength(str(t), font=face) for t in col_labels] + [1])
    every = max(1, math.ceil((widest + size // 2) / (w + padding)))
    for k, text in enumerate(col_labels[:ncols]):
        if k % every == 0:
            _, x = tile_origin(k, (h, w), ncols, padding)
            draw.text((left + x + w // 2, line), str(text), fill=ink, font=face, anchor="ma")
    for r, text in enumerate(row_labels):
        y, _ = tile_origin(r * ncols, (h, w), ncols, padding)
        draw.text((left - size // 2, top + y + h // 2), str(text), fill=ink, font=face, anchor="rm")
    return np.asarray(canvas)


def _fit(draw: ImageDraw.ImageDraw, text: str, face: ImageFont.ImageFont, width: int) -> str:
    if draw.textlength(text, font=face) <= width:
        return text
    keep = len(text)
    while keep > 3:
        keep -= 1
        head, tail = text[: (keep + 1) // 2], text[len(text) - keep // 2:]
        candidate = f"{head}…{tail}"
        if draw.textlength(candidate, font=face) <= width:
            return candidate
    return text[:3]
