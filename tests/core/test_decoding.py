"""Large images: decoded reduced, one large decode at a time (cnnvis_core.decoding, images)."""

from __future__ import annotations

import io
import struct
import threading
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from cnnvis_core import decoding, images
from cnnvis_core.images import load_image_with_notes


def bilevel_png(width: int, height: int) -> bytes:
    """A 1-bit PNG with vertical stripes, written row by row (a 9999×9999 one is a few kB)."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    row = b"\x00" + b"\xf0" * ((width + 7) // 8)
    packer = zlib.compressobj(9)
    body = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def encode(image: Image.Image, fmt: str = "PNG", **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def test_default_max_side_is_what_the_views_need():
    assert images.MAX_SIDE == 2048


def test_9999_px_image_decodes_to_the_max_side_aspect_kept_and_says_so():
    image, notes = load_image_with_notes(bilevel_png(9999, 6000))
    assert image.mode == "RGB" and image.size == (2048, 1229)  # 6000 × 2048 / 9999 = 1228.9
    assert notes == ["Downscaled from 9999×6000 to 2048×1229 px."]
    # stripes of 4 black, 4 white pixels average to mid grey, not to aliasing
    assert abs(float(np.asarray(image).mean()) - 127.5) < 3


def test_reduced_matches_a_full_resampling():
    rng = np.random.default_rng(0)
    smooth = np.kron(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8), np.ones((25, 25, 1), np.uint8))
    data = encode(Image.fromarray(smooth))  # 1500×1000
    image, _ = load_image_with_notes(data, max_side=300)
    reference = Image.fromarray(smooth).resize((300, 200), Image.Resampling.LANCZOS)
    difference = np.abs(np.asarray(image, np.int16) - np.asarray(reference, np.int16))
    assert image.size == (300, 200) and float(difference.mean()) < 2.0


def test_palette_transparency_survives_strip_reduction(monkeypatch):
    monkeypatch.setattr(decoding, "STRIP_PIXELS", 1_000)  # many strips
    palette = Image.new("P", (800, 400), 1)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.paste(0, (0, 0, 400, 400))  # left half: index 0, transparent
    image, notes = load_image_with_notes(encode(palette, transparency=0), max_side=100)
    assert image.size == (100, 50)
    assert image.getpixel((10, 25)) == (255, 255, 255)  # transparent → white
    assert image.getpixel((90, 25)) == (255, 0, 0)
    assert "Transparent areas were filled with white." in notes


def test_reduction_factor_leaves_the_gap():
    assert decoding.reduction_factor((9999, 9999), (2048, 2048)) == 2
    assert decoding.reduction_factor((2000, 1000), (300, 150)) == 3
    assert decoding.reduction_factor((500, 500), (400, 400)) == 1
    assert decoding.reduction_factor((500, 500), None) == 1


def test_exif_orientation_is_applied_to_the_reduced_image():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to show
    photo = Image.new("RGB", (1200, 600), (200, 30, 30))
    photo.paste((30, 30, 200), (0, 0, 600, 600))  # left half blue
    image, notes = load_image_with_notes(encode(photo, "PNG", exif=exif), max_side=200)
    assert image.size == (100, 200)
    assert notes == ["Downscaled from 600×1200 to 100×200 px."]
    top = image.getpixel((50, 20))
    assert top[2] > 150 and top[0] < 80  # the blue left half is on top once rotated


def test_large_decodes_run_one_at_a_time(monkeypatch):
    monkeypatch.setattr(decoding, "LARGE_PIXELS", 10_000)
    inside, most = [0], [0]
    real = decoding.reduced

    def watched(im, target, gap=decoding.REDUCING_GAP):
        inside[0] += 1
        most[0] = max(most[0], inside[0])
        time.sleep(0.05)
        inside[0] -= 1
        return real(im, target, gap)

    monkeypatch.setattr(decoding, "reduced", watched)
    data = bilevel_png(400, 300)
    results = []
    threads = [threading.Thread(target=lambda: results.append(load_image_with_notes(data, max_side=100)))
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4 and most[0] == 1


def test_small_decodes_do_not_wait_for_a_large_one():
    with decoding.one_large_decode(decoding.LARGE_PIXELS + 1):
        done = threading.Event()
        thread = threading.Thread(target=lambda: (load_image_with_notes(bilevel_png(64, 64)), done.set()))
        thread.start()
        assert done.wait(10), "a small image waited for the large-decode turn"
        thread.join()


@pytest.mark.skipif(not decoding.release_memory(), reason="no malloc_trim here (not glibc)")
def test_release_memory_is_callable_twice():
    assert decoding.release_memory() is True
