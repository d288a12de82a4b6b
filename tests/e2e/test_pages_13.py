"""Issue 13 in a real browser: a fresh server's first paint, pictures shown at the size they are
drawn (labels never enlarged) with their colour scales, and downloads named after the upload."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.core.test_pictures_13 import bar_rows
from tests.e2e.browser import AppPage, import_expect
from tests.e2e.images import png_bytes, shape_image

pytestmark = pytest.mark.e2e
expect = import_expect()

#: what Streamlit's folder-based page list would show: the file names of app.py and pages/
FILE_NAMES = {"app"} | {path.stem for path in (Path(__file__).resolve().parents[2] / "pages").glob("*.py")}

#: records, from the document's first moment, every text of a navigation link ever painted
NAV_RECORDER_JS = """
(() => {
  window.__cnnvisNavSeen = [];
  const look = () => {
    for (const a of document.querySelectorAll('[data-testid=stSidebarNav] a, [data-testid=stTopNav] a')) {
      const text = a.innerText.trim().split('\\n').pop().trim();
      if (!window.__cnnvisNavSeen.includes(text)) window.__cnnvisNavSeen.push(text);
    }
  };
  new MutationObserver(look).observe(document, {subtree: true, childList: true, characterData: true});
})();
"""


def _download(app: AppPage, label: str) -> tuple[str, bytes]:
    """Click the download button ``label``: (suggested file name, contents)."""
    with app.page.expect_download() as info:
        app.act(app.main().get_by_role("button", name=label).click)
    download = info.value
    return download.suggested_filename, Path(download.path()).read_bytes()


def _shown_sizes(app: AppPage) -> list[tuple[int, int]]:
    """``(pixels drawn, pixels shown)`` across each picture of the main area."""
    return [tuple(app.images().nth(i).evaluate("i => [i.naturalWidth, i.clientWidth]"))
            for i in range(app.images().count())]


def test_a_fresh_server_never_paints_the_list_of_page_files(browser, screenshots):
    """Issue 13 item 6: the root URL of a freshly started server showed Streamlit's folder-based
    page list (app, cam, dead…) until the first run ended; now the first paint is the app's own
    navigation or nothing."""
    from tests.e2e.browser import RUN_COUNTER_JS, UI_TIMEOUT_MS
    from tests.e2e.conftest import VIEWPORT, running_server
    from tests.e2e.test_pages import registered_pages

    with running_server("e2e-streamlit-cold-root.log") as url:
        context = browser.new_context(viewport=VIEWPORT)
        context.set_default_timeout(UI_TIMEOUT_MS)
        context.add_init_script(RUN_COUNTER_JS)
        context.add_init_script(NAV_RECORDER_JS)
        try:
            page = context.new_page()
            page.goto(url, wait_until="commit")
            page.get_by_test_id("stApp").wait_for()
            page.screenshot(path=str(screenshots / "fresh-server-first-paint.png"))
            app = AppPage(page, url)
            app.wait_idle()
            seen = page.evaluate("window.__cnnvisNavSeen")
            assert not FILE_NAMES & set(seen), f"file names were painted as the navigation: {seen}"
            assert page.get_by_test_id("stSidebarNav").count() == 0
            assert app.nav_links() == [title for _, title in registered_pages()]
            app.screenshot(screenshots, "fresh-server-after-first-run")
        finally:
            context.close()


def test_layer_grid_and_files_are_named_after_the_upload_and_carry_their_scale(app: AppPage, screenshots):
    """Items 13, 14, 16: the grid is shown at exactly the size it is drawn (its labels, drawn with a
    real font at that size, are never enlarged), large enough to read, with its colour scale in
    the page and in the PNG; files are named after the upload and the layer; the .npz note is
    plain text."""
    image, _ = shape_image(5)
    app.upload("Image", "chelsea.png", png_bytes(image), "image/png")
    app.go_to("Layer browser")
    app.select("Layer", re.compile(r"^features\.relu7 · "), search="relu7")
    app.select("Per page", "16")
    expect(app.main().get_by_test_id("stImageCaption")).to_contain_text("channels 1–16 of 128")
    [(drawn, shown)] = _shown_sizes(app)
    assert drawn == shown >= 480, (drawn, shown)            # 16 maps came out 202 px wide, then enlarged

    name, data = _download(app, "Grid (PNG)")
    assert name == "chelsea_features.relu7_p1.png"
    grid = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert grid.shape[1] == drawn and grid.shape[0] >= 600 and bar_rows(grid, "viridis"), grid.shape
    name, _ = _download(app, "Activations (.npy)")
    assert name == "chelsea_features.relu7.npy"
    name, data = _download(app, "Activations (.npz)")
    assert name == "chelsea_features.relu7.npz"
    note = str(np.load(io.BytesIO(data))["note"])
    assert "image: chelsea.png" in note and "layer: features.relu7 (ReLU" in note, note
    assert "model: Demo model" in note and "weights: bundled demo weights" in note and "{" not in note, note
    app.screenshot(screenshots, "layers-relu7-16-maps-with-scale")


def test_kernel_pictures_are_shown_at_their_drawn_size_with_axes_and_scales(app: AppPage, screenshots):
    app.go_to("Kernels")
    expect(app.main().get_by_test_id("stImageCaption").first).to_contain_text("inputs R, G, B")
    [(drawn, shown)] = _shown_sizes(app)
    assert drawn == shown, (drawn, shown)                    # was drawn 363 px wide, shown 763
    assert app.main().get_by_role("combobox", name="Colormap").count() == 0   # RGB tiles: no colormap

    app.choose_radio("View", "One filter, per input channel")
    [(drawn, shown)] = _shown_sizes(app)
    assert drawn == shown <= 400, (drawn, shown)             # three 3×3 slices, not a page of them
    app.screenshot(screenshots, "kernels-one-filter")

    app.choose_radio("View", "All kernels")
    expect(app.main().get_by_test_id("stImageCaption").first).to_contain_text("rows: filters, columns: inputs")
    name, data = _download(app, "Kernels (PNG)")
    assert name == "demonet_features.conv1_kernels_p1.png"
    assert bar_rows(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")), "gray")
    app.screenshot(screenshots, "kernels-all-with-axes")
