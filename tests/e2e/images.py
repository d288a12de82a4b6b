"""Files a person might upload, made in memory for the browser tests."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

from cnnvis_core.demo import sample
from dashboard.state import SAMPLE_SEED_START

#: seeds for uploads: held out from training, and apart from the sidebar's own sample images
UPLOAD_SEED_START = SAMPLE_SEED_START + 1_000


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def jpeg_bytes(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def shape_image(offset: int) -> tuple[Image.Image, int]:
    """A demo-generator image of a seed no test or page uses otherwise, with its class index."""
    image, labels, _ = sample(UPLOAD_SEED_START + offset)
    return image, labels[0]


def blank_png(width: int, height: int) -> bytes:
    """A valid, all-black 1-bit PNG of any size, built row by row (a 12000×12000 one is ~20 kB)."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (struct.pack(">I", len(payload)) + kind + payload
                + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF))

    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte "none", then the packed bits
    packer = zlib.compressobj(9)
    data = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1 bit, grayscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def big_photo_jpeg(width: int = 6000, height: int = 4000) -> bytes:
    """A large but acceptable photo-sized JPEG (smooth colour ramps, so it stays small)."""
    x = np.linspace(0, 255, width, dtype=np.float32)
    y = np.linspace(0, 255, height, dtype=np.float32)
    pixels = np.stack([np.broadcast_to(x, (height, width)), np.broadcast_to(y[:, None], (height, width)),
                       np.full((height, width), 128, np.float32)], axis=-1)
    return jpeg_bytes(Image.fromarray(pixels.astype(np.uint8)), quality=80)


def bomb_png(width: int, height: int, rows_per_block: int = 500) -> bytes:
    """A valid all-black 1-bit PNG of any size in a few milliseconds (30000×30000: ~110 kB, 900
    megapixels when decoded): one block of zero rows is compressed once and repeated, each copy
    after a full flush (so it stands alone); the stream's Adler-32 of n zero bytes is (n << 16) | 1."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (struct.pack(">I", len(payload)) + kind + payload
                + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF))

    row_bytes = 1 + (width + 7) // 8  # filter byte "none", then the packed bits
    blocks, rest = divmod(height, rows_per_block)
    packer = zlib.compressobj(9)
    parts = [packer.compress(b"\0" * (row_bytes * rows_per_block)) + packer.flush(zlib.Z_FULL_FLUSH)
             for _ in range(min(blocks, 2))]  # the zlib header, then a copy that depends on nothing before it
    parts += parts[-1:] * (blocks - len(parts))
    if rest:
        parts.append(packer.compress(b"\0" * (row_bytes * rest)) + packer.flush(zlib.Z_FULL_FLUSH))
    if not parts:
        parts.append(packer.flush(zlib.Z_FULL_FLUSH))
    total = row_bytes * height
    stream = b"".join(parts) + b"\x03\x00" + struct.pack(">I", ((total % 65521) << 16) | 1)  # empty final block
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1 bit, grayscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", stream) + chunk(b"IEND", b"")


def zip_bytes() -> bytes:
    """A small zip archive (a zip renamed ``.png`` is a classic disguise)."""
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("readme.txt", "not an image")
    return buffer.getvalue()


#: an SVG whose script would mark the page (``window.__cnnvis_pwned``) if it ever ran
SCRIPT_SVG = (b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10" onload="window.__cnnvis_pwned=1">'
              b'<script>window.__cnnvis_pwned = 1; fetch("http://127.0.0.1:9/svg")</script></svg>')
#: an HTML page with a script, for the same purpose
SCRIPT_HTML = (b"<!doctype html><html><body><script>window.__cnnvis_pwned = 1;</script>"
               b"<img src=x onerror='window.__cnnvis_pwned=1'></body></html>")
