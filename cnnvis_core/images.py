"""Loading user images safely into plain RGB :class:`PIL.Image.Image` objects.

:func:`load_image_with_notes` accepts a path, raw bytes or a binary file-like object (such as
Streamlit's ``UploadedFile``) and returns a fully decoded RGB image together with notes, meant
for a person, about what was changed on the way: downscaling, frame selection, transparency,
bit depth. Everything that makes an input unusable (not an image, unsupported format, too large,
truncated) raises :class:`~cnnvis_core.errors.InputError` with a readable message.

The pixel count is checked from the header before any pixel is decoded. Pillow's global
settings are never changed: its own decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``) still
applies on top of ``max_pixels``, and truncated files stay errors.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import struct
import warnings
import zlib
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

from . import decoding
from .errors import InputError

__all__ = [
    "MAX_BYTES", "MAX_PIXELS", "MAX_SIDE", "SUPPORTED_FORMATS", "UPLOAD_EXTENSIONS",
    "image_digest", "load_image", "load_image_with_notes",
]

SUPPORTED_FORMATS: tuple[str, ...] = ("JPEG", "MPO", "PNG", "WEBP", "BMP", "GIF", "TIFF")
UPLOAD_EXTENSIONS: list[str] = ["jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"]
MAX_PIXELS = 100_000_000
#: the longest side an image is kept at (larger ones are decoded reduced to it): what the views need;
#: the model needs far less. The environment variable ``CNNVIS_MAX_SIDE`` sets another.
MAX_SIDE = int(os.environ.get("CNNVIS_MAX_SIDE") or 2048)
MAX_BYTES = 50 * 1024 * 1024

Source = Union[str, "os.PathLike[str]", bytes, bytearray, BinaryIO]

_FORMATS_TEXT = "JPEG, PNG, WebP, BMP, GIF and TIFF"
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error)
_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")  # in PIL's DecompressionBombError message
_DAMAGED = "The file looks truncated or damaged"
#: EXIF orientation → the transposition that shows the picture upright (as ``ImageOps.exif_transpose``)
_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
              5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}
_SWAPS = {Image.Transpose.TRANSPOSE, Image.Transpose.ROTATE_270, Image.Transpose.TRANSVERSE, Image.Transpose.ROTATE_90}


def load_image_with_notes(
    source: Source, *, max_pixels: int = MAX_PIXELS, max_side: int = MAX_SIDE
) -> tuple[Image.Image, list[str]]:
    """Load ``source`` as a detached RGB image; also return notes on what was changed.

    ``source`` is a path, bytes or a binary file-like object (read from its start). Images
    with more than ``max_pixels`` pixels are refused; those whose longest side exceeds
    ``max_side`` are downscaled, aspect ratio kept, and decoded reduced (a JPEG at 1/2, 1/4 or 1/8
    scale, anything else box-reduced strip by strip right after decoding; see
    :mod:`cnnvis_core.decoding`, which also lets one large decode run at a time). Only the first
    frame of an animation is used, the EXIF orientation is applied and alpha is composited over
    white. 16-bit and 32-bit integer images are stretched from their true range, their own
    min..max, to 0..255 (a 12-bit sensor's 1000..17320 would be nearly black divided by 257); a
    constant one is scaled by the full 16-bit range. Float ("F") images are read as 0..1 or 0..255 when they fit, else
    stretched from their own min..max. The note says which. Raises :class:`InputError` for
    unusable input.
    """
    data = _read_source(source)
    notes: list[str] = []
    with _open(data, max_pixels) as im:
        _check_format(im)
        _check_pixels(im.size, max_pixels)
        original = im.size
        target = _fit(original, max_side)
        image, transpose = _decode(im, target, notes)
    if target is not None and image.size != target:
        image = image.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
    if transpose is not None:
        image = image.transpose(transpose)
        if transpose in _SWAPS:
            original, target = original[::-1], target[::-1] if target else None
    if target is not None:
        notes.append(f"Downscaled from {_dims(original)} to {_dims(target)} px.")
    return image, notes


def _decode(im: Image.Image, target: tuple[int, int] | None, notes: list[str]
            ) -> tuple[Image.Image, Image.Transpose | None]:
    """``im`` decoded (its first frame) as a new RGB image, reduced towards ``target`` on the way,
    and the transposition its EXIF orientation asks for. ``im`` is closed inside the large-decode
    turn, so that its memory goes before the next large decode starts."""
    try:
        _select_first_frame(im, notes)
        if target is not None and im.format in ("JPEG", "MPO"):
            im.draft("RGB", target)  # decode at 1/2, 1/4 or 1/8 scale: much cheaper
    except _DECODE_ERRORS as error:
        raise InputError(f"{_DAMAGED} and cannot be decoded ({error}).") from error
    with decoding.one_large_decode(im.width * im.height):
        try:
            im.load()
            transpose = _orientation(im, notes)  # after load: a PNG's EXIF may follow its pixels
            small = decoding.reduced(im, target)
        except _DECODE_ERRORS as error:
            raise InputError(f"{_DAMAGED} and cannot be decoded ({error}).") from error
        image = small if small is not im and small.mode == "RGB" else _to_rgb(small, notes)
        del small
        im.close()  # the full-size pixels go now, inside the large-decode turn
    return image, transpose


def load_image(source: Source, **kw: int) -> Image.Image:
    """Like :func:`load_image_with_notes`, but return only the image.

    The notes are stored in ``image.info["cnnvis_notes"]``.
    """
    image, notes = load_image_with_notes(source, **kw)
    image.info["cnnvis_notes"] = notes
    return image


def image_digest(image_or_bytes: Image.Image | bytes | bytearray | memoryview) -> str:
    """Return a short stable digest (16 hex chars of sha256) for use as a cache key.

    Raw bytes are hashed as they are; an image by its mode, size and pixel bytes.
    """
    item = image_or_bytes
    digest = hashlib.sha256()
    if isinstance(item, Image.Image):
        digest.update(f"{item.mode}:{item.width}x{item.height}:".encode())
        digest.update(item.tobytes())
    elif isinstance(item, (bytes, bytearray, memoryview)):
        digest.update(item)
    else:
        raise TypeError(f"image_digest expects a PIL image or bytes, not {type(item).__name__}.")
    return digest.hexdigest()[:16]


def _read_source(source: Source) -> bytes:
    """Return the bytes of ``source``, refusing missing, empty and oversized inputs."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif isinstance(source, (str, os.PathLike)):
        data = _read_path(Path(source))
    elif hasattr(source, "read"):
        if getattr(source, "seekable", lambda: False)():
            source.seek(0)  # as PIL does; an UploadedFile may have been read before
        data = source.read(MAX_BYTES + 1)
        if not isinstance(data, (bytes, bytearray)):
            raise InputError("The file must be opened in binary mode ('rb').")
    else:
        kind = type(source).__name__
        raise InputError(f"Cannot read an image from a {kind}; give a path, bytes or a file.")
    if not data:
        raise InputError("The file is empty (0 bytes); choose an image file.")
    _check_bytes(len(data))
    return bytes(data)


def _check_bytes(size: int) -> None:
    if size > MAX_BYTES:
        limit = MAX_BYTES / 2**20
        raise InputError(f"The file is {size / 2**20:.1f} MB, over the limit of {limit:.0f} MB.")


def _read_path(path: Path) -> bytes:
    """Read a file from disk, checking its size first."""
    if not path.exists():
        raise InputError(f"No such file: '{path}'.")
    if not path.is_file():
        raise InputError(f"'{path}' is not a file.")
    try:
        _check_bytes(path.stat().st_size)
        return path.read_bytes()
    except OSError as error:
        raise InputError(f"Cannot read '{path}': {error.strerror or error}.") from error


def _open(data: bytes, max_pixels: int) -> Image.Image:
    """Open (but do not decode) ``data``, turning PIL's refusals into :class:`InputError`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # we check ourselves
            return Image.open(io.BytesIO(data))
    except UnidentifiedImageError as error:
        message = f"This file is not an image, or not one that can be read: use {_FORMATS_TEXT}."
        raise InputError(message) from error
    except Image.DecompressionBombError as error:
        match = _BOMB_PIXELS.search(str(error))
        size = f"{_mp(int(match.group(1)))} megapixels" if match else "too many pixels"
        limit = min(max_pixels, 2 * (Image.MAX_IMAGE_PIXELS or max_pixels))
        message = f"The image is too large: {size}, over the limit of {_mp(limit)} megapixels."
        raise InputError(message) from error
    except _DECODE_ERRORS as error:
        raise InputError(f"{_DAMAGED} and cannot be opened ({error}).") from error


def _check_format(im: Image.Image) -> None:
    if im.format not in SUPPORTED_FORMATS:
        raise InputError(f"{im.format} images are not supported; use {_FORMATS_TEXT}.")


def _check_pixels(size: tuple[int, int], max_pixels: int) -> None:
    pixels = size[0] * size[1]
    if pixels > max_pixels:
        raise InputError(
            f"The image is too large: {_dims(size)} px = {_mp(pixels)} megapixels, "
            f"over the limit of {_mp(max_pixels)} megapixels."
        )


def _select_first_frame(im: Image.Image, notes: list[str]) -> None:
    frames = getattr(im, "n_frames", 1)
    if frames > 1:
        im.seek(0)
        notes.append(f"Used the first of {frames} frames.")


def _orientation(im: Image.Image, notes: list[str]) -> Image.Transpose | None:
    """The transposition the EXIF orientation asks for (None: none), read before decoding."""
    try:
        value = im.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # noqa: BLE001 - malformed EXIF of any kind must not make a readable image unusable
        notes.append("Ignored unreadable EXIF orientation data.")
        return None
    return _TRANSPOSE.get(value)


def _to_rgb(im: Image.Image, notes: list[str]) -> Image.Image:
    """Convert any PIL mode to a new RGB image; alpha is composited over white.

    Integer ("I") and float ("F") images are scaled by :func:`_scale_to_uint8`.
    """
    if im.mode.startswith("I;16") or im.mode in ("I", "F"):
        values, how = _scale_to_uint8(np.asarray(im, dtype=np.float64), im.mode)
        kind = {"I": "32-bit integer", "F": "floating-point"}.get(im.mode, "16-bit")
        notes.append(f"Converted from {kind} grayscale: {how}.")
        return _gray_to_rgb(values)
    if im.has_transparency_data:
        rgba = (im.convert("LA") if im.mode == "La" else im).convert("RGBA")  # no La→RGBA in PIL
        if rgba.getchannel("A").getextrema()[0] < 255:
            notes.append("Transparent areas were filled with white.")
            rgba = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
        return rgba.convert("RGB")
    return im.convert("RGB")  # also copies an RGB image, detaching it from the file


def _scale_to_uint8(values: np.ndarray, mode: str) -> tuple[np.ndarray, str]:
    """Map integer ("I;16…", "I") or float ("F") pixel values to 0..255 and say how.

    Integers are stretched from their own min..max, the true range of the data (a constant
    image, which has none, is divided by 257 as a 16-bit one). "F" values within 0..1 are
    multiplied by 255 and within 0..255 kept; other floats are stretched from their own min..max.
    NaN and infinities count as 0.
    """
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if mode == "F":
        for top, factor in ((1, 1 / 255), (255, 1.0)):
            if low >= 0 and high <= top:
                return values / factor, f"values read as 0–{top}"
    elif high <= low:
        level = min(max(low, 0.0), 65535.0)
        return np.full_like(values, level / 257.0), f"a constant {low:g}, scaled from the full range 0–65535"
    stretched = (values - low) * (255.0 / max(high - low, 1e-12))
    return stretched, f"values {low:g}–{high:g} (their own range) stretched to 0–255"


def _gray_to_rgb(values: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8)).convert("RGB")


def _fit(size: tuple[int, int], max_side: int) -> tuple[int, int] | None:
    """The size that brings the longest side down to ``max_side``, or None if it already fits."""
    longest = max(size)
    if longest <= max_side:
        return None
    scale = max_side / longest
    width, height = (max(1, min(max_side, round(side * scale))) for side in size)
    return width, height


def _dims(size: tuple[int, int]) -> str:
    return f"{size[0]}×{size[1]}"


def _mp(pixels: int) -> str:
    return f"{pixels / 1e6:.3g}"

