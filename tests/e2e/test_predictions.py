"""The Predictions page and the sidebar's image choice, in a real browser."""

from __future__ import annotations

import re

import pytest

from cnnvis_core.demo import CLASSES
from tests.e2e.browser import AppPage, import_expect
from tests.e2e.images import big_photo_jpeg, blank_png, png_bytes, shape_image

pytestmark = pytest.mark.e2e
expect = import_expect()


def _expected_top1(engine, image) -> str:
    best = engine.predict(image, k=1)[0]
    return f"{best.label} — {best.probability:.1%}"


def test_sample_choice_and_upload_show_their_predictions(app: AppPage, demo_engine, screenshots):
    expect(app.main().get_by_test_id("stPlotlyChart")).to_be_visible()
    expect(app.main().get_by_text("Sample 1:", exact=False)).to_be_visible()
    first_src = app.image_srcs()

    app.select("Sample image", re.compile(r"^Sample 4: "))
    assert app.selected("Sample image").startswith("Sample 4: ")
    expect(app.main().get_by_text(re.compile(r"^Sample 4: .* · 128×128 px$"))).to_be_visible()
    assert app.image_srcs() != first_src, "the shown image did not change with the sample"

    image, label = shape_image(0)
    app.upload("Image", f"my {CLASSES[label]}.png", png_bytes(image), "image/png")
    expect(app.main().get_by_text(f"my {CLASSES[label]}.png · 128×128 px")).to_be_visible()
    expect(app.main().get_by_test_id("stPlotlyChart")).to_be_visible()
    # what the browser shows is what the model says about the uploaded pixels
    assert app.top1() == _expected_top1(demo_engine, image)
    bars = app.main().get_by_test_id("stPlotlyChart").inner_text()
    assert f"{demo_engine.predict(image, k=1)[0].probability:.1%}" in bars
    assert app.errors() == []
    app.screenshot(screenshots, "predictions-upload")


def test_bad_uploads_show_a_message_and_the_app_keeps_working(app: AppPage, demo_engine, screenshots):
    app.upload("Image", "holiday.jpg", b"this is not an image, just text", "image/jpeg")
    [message] = app.errors()
    assert message.startswith("holiday.jpg:") and "not an image" in message, message
    expect(app.main().get_by_test_id("stPlotlyChart")).to_be_visible()  # the sample is still shown
    expect(app.main().get_by_text(re.compile(r"^Sample 1: "))).to_be_visible()

    app.remove_upload("Image")
    app.upload("Image", "huge.png", blank_png(12_000, 12_000), "image/png")
    [message] = app.errors()
    assert message.startswith("huge.png:") and "too large" in message and "megapixels" in message, message
    assert "12000×12000" in message, message
    app.screenshot(screenshots, "predictions-huge-upload")

    app.remove_upload("Image")
    app.upload("Image", "big photo.jpg", big_photo_jpeg(6000, 4000), "image/jpeg")
    assert app.errors() == []
    expect(app.main().get_by_text("big photo.jpg · 2048×1365 px")).to_be_visible()
    expect(app.main().get_by_test_id("stAlertContentInfo").get_by_text(
        "Downscaled from 6000×4000 to 2048×1365 px.")).to_be_visible()

    image, _ = shape_image(1)
    app.remove_upload("Image")
    app.upload("Image", "shape.png", png_bytes(image), "image/png")
    assert app.errors() == []
    expect(app.main().get_by_text("shape.png · 128×128 px")).to_be_visible()
    assert app.top1() == _expected_top1(demo_engine, image)


def test_two_sessions_at_once_see_their_own_images(new_app, demo_engine):
    first, second = new_app().open(), new_app().open()
    uploads = {}
    for offset, tab in enumerate((first, second), start=2):
        image, label = shape_image(offset)
        uploads[tab] = (f"session {offset} {CLASSES[label]}.png", image)
    # both uploads are sent before either run is awaited, so the two sessions run side by side
    started = {tab: tab.runs_done() for tab in uploads}
    for tab, (name, image) in uploads.items():
        tab.page.locator('[data-testid="stFileUploaderDropzone"][aria-label="Image"] input[type=file]') \
            .set_input_files({"name": name, "mimeType": "image/png", "buffer": png_bytes(image)})
    for tab in uploads:
        tab.wait_for_run(started[tab])
    for tab, (name, image) in uploads.items():
        expect(tab.main().get_by_text(f"{name} · 128×128 px")).to_be_visible()
        assert tab.top1() == _expected_top1(demo_engine, image)
    # a rerun of one session does not pick up the other's image
    first.rerun()
    expect(first.main().get_by_text(f"{uploads[first][0]} · 128×128 px")).to_be_visible()
    assert first.top1() == _expected_top1(demo_engine, uploads[first][1])
