"""What a rerun encodes: a slider move or a page shown again costs one JPEG of the picture that
changed, not a PNG encoding followed by Streamlit's decoding and JPEG re-encoding of it, and the
files to download are made only when clicked."""

from __future__ import annotations

import io

import pytest
from PIL import Image, JpegImagePlugin, PngImagePlugin

from tests.dashboard.apptest import open_app
from tests.dashboard.pages_13 import ok


@pytest.fixture
def encodings(monkeypatch) -> dict[str, int]:
    """How many PNG and JPEG files Pillow writes from now on (Streamlit encodes through Pillow too)."""
    counts = {"PNG": 0, "JPEG": 0}
    for name, module in (("PNG", PngImagePlugin), ("JPEG", JpegImagePlugin)):
        original = module._save

        def counting(*args, _original=original, _name=name, **kwargs):
            counts[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(module, "_save", counting)
        monkeypatch.setitem(Image.SAVE, name, counting)
    return counts


def _suffixes(at) -> list[str]:
    """The file types of the pictures the last run shows (their media URLs end with them)."""
    return [img.url.rsplit(".", 1)[-1] for element in at.get("image") for img in element.proto.imgs]


def test_an_opacity_move_encodes_one_jpeg_per_overlay_and_no_png(encodings):
    at = open_app()
    at.switch_page("pages/cam.py")
    ok(at)
    overlays = sum(1 for e in at.get("image") for img in e.proto.imgs if "Colour scale" not in img.caption)
    encodings.update(PNG=0, JPEG=0)
    at.slider(key="cam_alpha").set_value(0.8)
    ok(at)
    assert encodings["PNG"] == 0, "a slider move wrote a PNG (a download made before its click, or a re-encode)"
    assert 0 < encodings["JPEG"] <= overlays, encodings
    assert "jpg" in _suffixes(at) and set(_suffixes(at)) <= {"jpg", "png"}


def test_the_predictions_page_shown_again_encodes_nothing(encodings):
    at = open_app()  # the Predictions page, the sample image
    ok(at)
    encodings.update(PNG=0, JPEG=0)
    ok(at)
    assert encodings == {"PNG": 0, "JPEG": 0}, encodings


def test_a_large_upload_is_shown_at_most_page_wide_and_a_transparent_one_as_png():
    from dashboard import predictions
    from dashboard.state import ChosenImage

    photo = Image.new("RGB", (3000, 2000), (200, 30, 30))
    shown = Image.open(io.BytesIO(predictions.shown_photo(ChosenImage(photo, "test:wide", "wide.jpg"))))
    assert shown.format == "JPEG" and shown.size == (predictions.SHOWN_WIDTH, round(2000 * 1460 / 3000))
    clear = Image.new("RGBA", (200, 100), (0, 0, 0, 0))
    shown = Image.open(io.BytesIO(predictions.shown_photo(ChosenImage(clear, "test:clear", "clear.png"))))
    assert shown.format == "PNG"
