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
