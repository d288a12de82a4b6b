"""Class activation maps in a real browser (issue 13): a masked method added to the side-by-side row
computes under a progress bar, and an uploaded photo gets its overlay at its own size, with its colour
scale, in a file named after it."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from PIL import Image

from cnnvis_core.cam import TITLES
from tests.e2e.browser import UI_TIMEOUT_MS, AppPage, import_expect

pytestmark = pytest.mark.e2e
expect = import_expect()


def _add_to_row(app: AppPage, title: str) -> None:
    box = app.page.get_by_role("combobox", name="Methods to compare", exact=True)
    box.click()
    box.fill(title.split(" (")[0])
    app.page.get_by_role("option", name=title, exact=True).first.click()


def test_a_masked_method_added_to_the_row_computes_under_a_progress_bar(app: AppPage, screenshots):
    """IS-CAM on features.relu5: 1,280 masked passes, a second or more; the bar shows while they run,
    above the list of methods (whose menu, open while the user picks, covers what is below it),
    then the map comes in the row."""
    app.go_to("Class activation maps")
    app.select("Layer", "features.relu5", search="relu5")
    title = TITLES["iscam"]
    _add_to_row(app, title)
    bar = app.main().get_by_test_id("stProgress").filter(has_text=re.compile(r"masked forward passes"))
    expect(bar).to_be_visible(timeout=UI_TIMEOUT_MS)
    menu_top = app.page.get_by_role("combobox", name="Methods to compare", exact=True).bounding_box()["y"]
    assert bar.first.bounding_box()["y"] < menu_top, "the bar is under the list, where its open menu covers it"
    app.page.screenshot(path=str(screenshots / "cam-row-iscam-progress.png"))
    row_map = app.main().get_by_test_id("stImageCaption").get_by_text(title, exact=True)
    expect(row_map).to_have_count(1, timeout=UI_TIMEOUT_MS * 2)
    app.wait_idle()
    expect(bar).to_have_count(0)


def _photo() -> bytes:
    """A 320×200 photo: a bright disc on a dark ground."""
    yy, xx = np.mgrid[:200, :320]
    pixels = np.full((200, 320, 3), 30, np.uint8)
    pixels[(yy - 100) ** 2 + (xx - 120) ** 2 < 55**2] = (240, 200, 40)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


def test_the_overlay_on_an_uploaded_photo_downloads_at_its_size_with_its_scale(app: AppPage, screenshots):
    app.upload("Image", "chelsea.png", _photo(), "image/png")
    app.go_to("Class activation maps")
    on_photo = app.main().get_by_test_id("stImageCaption").get_by_text(re.compile(r"^On the photo, 320×200 px"))
    expect(on_photo).to_have_count(1)
    expect(app.main().get_by_test_id("stImageCaption").get_by_text(re.compile(r"^Colour scale"))).to_have_count(2)
    app.screenshot(screenshots, "cam-photo-overlay")
    button = app.main().get_by_role("button", name="Overlay on the photo (PNG, 320×200)")
    with app.page.expect_download() as download:
        button.click()
    assert download.value.suggested_filename == "chelsea_gradcam_features.relu7_photo.png"
    picture = Image.open(download.value.path())
    assert picture.width == 320 and picture.height > 220, picture.size  # the photo, then its colour scale
    scale = np.asarray(picture.convert("RGB"))[200 + 6 + 2].astype(int)
    assert np.abs(scale[2] - scale[-3]).sum() > 100, "no colour scale under the picture"
    app.remove_upload("Image")
