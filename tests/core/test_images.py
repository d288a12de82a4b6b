"""Tests of cnnvis_core.images: every fixture is built in memory or under tmp_path."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from cnnvis_core.errors import CnnvisError, InputError
from cnnvis_core.images import (
    MAX_PIXELS,
    SUPPORTED_FORMATS,
    UPLOAD_EXTENSIONS,
    image_digest,
    load_image,
    load_image_with_notes,
)

RED = (220, 30, 40)


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def close(actual, expected, tol: int = 12) -> bool:
    return all(abs(a - e) <= tol for a, e in zip(actual, expected))


def png_with_header_size(width: int, height: int) -> bytes:
    """A tiny PNG whose IHDR claims ``width``×``height`` (the pixel data stays 1×1)."""
    data = bytearray(encode(Image.new("L", (1, 1)), "PNG"))
    ihdr = 8 + 4  # signature, then the chunk length; IHDR type and data follow
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr : ihdr + 17]))
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", crc)
    return bytes(data)


def test_constants():
    assert {"JPEG", "MPO", "PNG", "WEBP", "BMP", "GIF", "TIFF"} == set(SUPPORTED_FORMATS)
    assert "jpg" in UPLOAD_EXTENSIONS and "tiff" in UPLOAD_EXTENSIONS
    assert not any(ext.startswith(".") for ext in UPLOAD_EXTENSIONS)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF"])
def test_formats_round_trip(fmt):
    image, notes = load_image_with_notes(encode(Image.new("RGB", (40, 30), RED), fmt))
    assert image.mode == "RGB" and image.size == (40, 30)
    assert close(image.getpixel((20, 15)), RED, tol=20)  # GIF quantises, JPEG is lossy
    assert notes == []


def test_exif_orientation_is_applied():
    raw = Image.new("RGB", (40, 20), (0, 0, 255))
    raw.paste(RED, (0, 0, 10, 10))  # red top-left corner in the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90° clockwise
    image = load_image(encode(raw, "JPEG", exif=exif, quality=95))
    assert image.size == (20, 40)
    assert close(image.getpixel((17, 2)), RED, tol=30)  # top-left went to top-right
    assert close(image.getpixel((2, 2)), (0, 0, 255), tol=30)


def test_animated_gif_uses_first_frame():
    colours = ((255, 0, 0), (0, 255, 0), (0, 0, 255))
    frames = [Image.new("RGB", (16, 16), colour) for colour in colours]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    image, notes = load_image_with_notes(data)
    assert close(image.getpixel((8, 8)), (255, 0, 0), tol=2)
    assert "Used the first of 3 frames." in notes


def test_animated_webp_uses_first_frame():
    frames = [Image.new("RGB", (16, 16), colour) for colour in ((0, 0, 255), (0, 255, 0))]
    data = encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    image, notes = load_image_with_notes(data)
    assert close(image.getpixel((8, 8)), (0, 0, 255), tol=2)
    assert "Used the first of 2 frames." in notes


def test_mode_l():
    image = load_image(encode(Image.new("L", (8, 8), 100), "PNG"))
    assert image.mode == "RGB" and image.getpixel((0, 0)) == (100, 100, 100)


def test_mode_la_is_composited_over_white():
    image, notes = load_image_with_notes(encode(Image.new("LA", (8, 8), (0, 0)), "PNG"))
    assert image.getpixel((0, 0)) == (255, 255, 255)
    assert "Transparent areas were filled with white." in notes


def test_mode_p():
    palette = Image.new("RGB", (8, 8), RED).convert("P", palette=Image.Palette.ADAPTIVE)
    image = load_image(encode(palette, "PNG"))
    assert Image.open(io.BytesIO(encode(palette, "PNG"))).mode == "P"
    assert close(image.getpixel((0, 0)), RED, tol=20)


def test_mode_p_with_transparency():
    palette = Image.new("P", (8, 8), 1)
    palette.putpalette([0, 0, 0, *RED] + [0] * 762)
    palette.putpixel((0, 0), 0)
    image, notes = load_image_with_notes(encode(palette, "PNG", transparency=0))
    assert image.getpixel((0, 0)) == (255, 255, 255)
    assert image.getpixel((4, 4)) == RED
    assert "Transparent areas were filled with white." in notes


def test_rgba_transparent_pixel_becomes_white():
    rgba = Image.new("RGBA", (8, 8), (*RED, 255))
    rgba.putpixel((0, 0), (0, 0, 0, 0))
    rgba.putpixel((1, 0), (0, 0, 0, 128))
    image, notes = load_image_with_notes(encode(rgba, "PNG"))
    assert image.getpixel((0, 0)) == (255, 255, 255)
    assert close(image.getpixel((1, 0)), (127, 127, 127), tol=2)
    assert image.getpixel((4, 4)) == RED
    assert "Transparent areas were filled with white." in notes


def test_opaque_rgba_has_no_note():
    image, notes = load_image_with_notes(encode(Image.new("RGBA", (8, 8), (*RED, 255)), "PNG"))
    assert image.getpixel((0, 0)) == RED and notes == []


def test_cmyk():
    image = load_image(encode(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "TIFF"))
    assert image.mode == "RGB" and close(image.getpixel((0, 0)), (255, 0, 0), tol=2)


@pytest.mark.parametrize(("value", "expected"), [(65535, 255), (32896, 128), (0, 0)])
def test_16_bit_grayscale_png_is_scaled_not_clipped(value, expected):
    data = encode(Image.fromarray(np.full((8, 8), value, np.uint16)), "PNG")
    image, notes = load_image_with_notes(data)
    assert image.getpixel((0, 0)) == (expected,) * 3
    assert notes == [f"Converted from 16-bit grayscale: a constant {value}, scaled from the full range 0–65535."]


def test_32_bit_integer_and_float_modes():
    ints = Image.fromarray(np.array([[0, 65535]], np.int32))
    assert load_image(encode(ints, "TIFF")).getpixel((1, 0)) == (255, 255, 255)
    floats = Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32))
    image, notes = load_image_with_notes(encode(floats, "TIFF"))
    assert [image.getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]
    assert any("floating-point" in note for note in notes)


def test_decompression_bomb_refused_by_pil_is_input_error():
    data = png_with_header_size(20000, 20000)  # PIL itself raises DecompressionBombError
    with pytest.raises(InputError, match="400 megapixels"):
        load_image(data)


def test_header_over_max_pixels_refused_before_decoding():
    data = png_with_header_size(12000, 9000)  # 108 MP: below PIL's own error threshold
    message = r"12000×9000 px = 108 megapixels, over the limit of 100 megapixels"
    with pytest.raises(InputError, match=message):
        load_image(data)
    assert MAX_PIXELS < 12000 * 9000


def test_max_pixels_keyword():
    with pytest.raises(InputError, match="megapixels"):
        load_image(encode(Image.new("RGB", (100, 100)), "PNG"), max_pixels=1000)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_large_image_is_downscaled_keeping_aspect(fmt):
    data = encode(Image.new("RGB", (300, 200), RED), fmt)
    image, notes = load_image_with_notes(data, max_side=64)
    assert image.size == (64, 43)
    assert close(image.getpixel((30, 20)), RED, tol=20)
    assert "Downscaled from 300×200 to 64×43 px." in notes


def test_downscale_note_uses_displayed_orientation():
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(Image.new("RGB", (300, 200)), "JPEG", exif=exif)
    image, notes = load_image_with_notes(data, max_side=64)
    assert image.size == (43, 64)
    assert "Downscaled from 200×300 to 43×64 px." in notes


RANDOM_BYTES = np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes()


@pytest.mark.parametrize("data", [b"hello, this is plain text\n" * 10, RANDOM_BYTES])
def test_not_an_image(data):
    with pytest.raises(InputError, match=r"not an image.*JPEG, PNG"):
        load_image(data)


def test_unsupported_format_is_named():
    with pytest.raises(InputError, match=r"ICO images are not supported.*JPEG"):
        load_image(encode(Image.new("RGB", (16, 16)), "ICO"))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_file(fmt):
    noise = np.random.default_rng(1).integers(0, 256, (64, 64, 3), np.uint8)
    data = encode(Image.fromarray(noise), fmt)
    with pytest.raises(InputError, match="truncated or damaged"):
        load_image(data[: len(data) // 2])


def test_empty_input():
    with pytest.raises(InputError, match="The file is empty"):
        load_image(b"")
    with pytest.raises(InputError, match="The file is empty"):
        load_image(io.BytesIO())


def test_missing_path(tmp_path):
    missing = tmp_path / "nope.png"
    with pytest.raises(InputError, match=r"nope\.png"):
        load_image(missing)
    with pytest.raises(InputError, match=r"nope\.png"):
        load_image(str(missing))


def test_oversized_bytes_refused(tmp_path, monkeypatch):
    import cnnvis_core.images as images

    monkeypatch.setattr(images, "MAX_BYTES", 100)
    path = tmp_path / "big.bin"
    path.write_bytes(b"x" * 200)
    for source in (path, b"x" * 200, io.BytesIO(b"x" * 200)):
        with pytest.raises(InputError, match="over the limit"):
            load_image(source)


def test_all_source_kinds(tmp_path):
    data = encode(Image.new("RGB", (12, 10), RED), "PNG")
    path = tmp_path / "red.png"
    path.write_bytes(data)
    stream = io.BytesIO(data)
    stream.read()  # already consumed, as a Streamlit UploadedFile may be
    for source in (path, str(path), data, bytearray(data), stream):
        image = load_image(source)
        assert image.mode == "RGB" and image.size == (12, 10) and image.getpixel((0, 0)) == RED
        assert image.info["cnnvis_notes"] == []


def test_result_is_detached_and_loaded(tmp_path):
    path = tmp_path / "red.png"
    Image.new("RGB", (12, 10), RED).save(path)
    image = load_image(path)
    path.unlink()
    assert type(image) is Image.Image and image.getpixel((5, 5)) == RED


@pytest.mark.parametrize("source", [b"", b"not an image", png_with_header_size(20000, 20000)])
def test_errors_are_cnnvis_errors(source):
    with pytest.raises(CnnvisError):
        load_image(source)
    with pytest.raises(ValueError):
        load_image(source)


def test_image_digest():
    red, blue = Image.new("RGB", (4, 4), RED), Image.new("RGB", (4, 4), (0, 0, 255))
    assert image_digest(red) == image_digest(Image.new("RGB", (4, 4), RED))
    assert image_digest(red) != image_digest(blue)
    assert image_digest(red) != image_digest(red.convert("L"))
    assert image_digest(b"abc") == image_digest(bytearray(b"abc")) != image_digest(b"abd")
    assert len(image_digest(b"abc")) == 16
    int(image_digest(red), 16)
