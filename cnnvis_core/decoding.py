"""Decoding large images within bounded memory, for :mod:`cnnvis_core.images`.

Three things keep a large upload from taking the server's memory:

- :func:`reduced` shrinks a decoded image by the largest whole factor that still leaves it at least
  ``REDUCING_GAP`` times the size it is wanted at, *strip by strip*: the mode conversion (a palette
  or 1-bit image to RGB, CMYK to RGB) is done on one strip at a time, never on the whole picture,
  and only the reduced copy is kept. (A JPEG is reduced cheaper still while it is decoded: Pillow's
  ``draft`` mode decodes it at 1/2, 1/4 or 1/8 scale.)
- :func:`one_large_decode` lets one large decode (over ``LARGE_PIXELS`` decoded pixels) run at a
  time in the process: four sessions uploading a 100-megapixel PNG at once peak at one decode's
  memory, not four.
- after a large decode, :func:`release_memory` hands the freed heap back to the operating system
  (glibc keeps freed blocks of the size of Pillow's image blocks in its arenas otherwise, so the
  process's resident size stayed at its high-water mark).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import math
import threading
from collections.abc import Iterator

from PIL import Image

__all__ = ["LARGE_PIXELS", "REDUCING_GAP", "one_large_decode", "reduced", "release_memory"]

#: decodes of more pixels than this run one at a time in the process (and return memory after)
LARGE_PIXELS = 16_000_000
#: a decoded image is box-reduced while it stays at least this many times its wanted size; the
#: final resampling (Lanczos) does the rest, so the result is as sharp as a full resampling
REDUCING_GAP = 2.0
#: pixels converted at once when a mode conversion is done strip by strip
STRIP_PIXELS = 4_000_000

_LARGE = threading.BoundedSemaphore(1)

#: the mode each mode is reduced in (a mode missing here is not reduced here: 16-bit and
#: premultiplied images go on at full size, as before)
_WORKING_MODES = {"1": "L", "L": "L", "LA": "LA", "P": "RGB", "PA": "RGBA", "RGB": "RGB", "RGBA": "RGBA",
                  "RGBX": "RGB", "CMYK": "RGB", "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB", "I": "I", "F": "F"}


def reduction_factor(size: tuple[int, int], target: tuple[int, int] | None, gap: float = REDUCING_GAP) -> int:
    """The whole factor by which an image of ``size`` can be box-reduced and stay at least ``gap``
    times ``target`` on both sides (1: no reduction)."""
    if target is None:
        return 1
    return max(1, int(min(size[0] / target[0], size[1] / target[1]) / gap))


def working_mode(im: Image.Image) -> str | None:
    """The mode ``im`` is reduced in (None: it is not reduced): transparency made an alpha channel."""
    mode = _WORKING_MODES.get(im.mode)
    if mode in ("L", "RGB") and im.has_transparency_data:
        return "RGBA"
    return mode


def reduced(im: Image.Image, target: tuple[int, int] | None, gap: float = REDUCING_GAP) -> Image.Image:
    """``im`` (decoded) box-reduced by :func:`reduction_factor` in its :func:`working_mode`, strip by
    strip; ``im`` itself when there is nothing to reduce (or its mode is not reduced here)."""
    factor = reduction_factor(im.size, target, gap)
    mode = working_mode(im)
    if factor < 2 or mode is None:
        return im
    width, height = im.size
    out = Image.new(mode, (math.ceil(width / factor), math.ceil(height / factor)))
    rows = factor * max(1, STRIP_PIXELS // (width * factor))
    for top in range(0, height, rows):
        strip = im.crop((0, top, width, min(height, top + rows)))
        if strip.mode != mode:
            strip = strip.convert(mode)
        out.paste(strip.reduce(factor), (0, top // factor))
    return out


@contextlib.contextmanager
def one_large_decode(pixels: int) -> Iterator[None]:
    """Hold the process's single large-decode turn while decoding ``pixels`` pixels (none is held
    for a smaller image); the memory is handed back after a large one."""
    if pixels <= LARGE_PIXELS:
        yield
        return
    with _LARGE:
        try:
            yield
        finally:
            release_memory()


def release_memory() -> bool:
    """Return the heap's free memory to the operating system (glibc's ``malloc_trim``); False where
    there is no such call (another C library, another system)."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


@functools.cache
def _malloc_trim():
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:
        return None
