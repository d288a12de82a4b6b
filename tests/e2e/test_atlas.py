"""The unit atlas in a real browser: a unit page opened by URL (query parameters) on a fresh server
whose results folder holds a small demo result, the grid, and the static export opened from disk
with every picture loaded. Screenshots of the grid, a unit page and the export."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from cnnvis_core import Engine, atlas, jobs
from cnnvis_core.data import Dataset
from tests.e2e.browser import UI_TIMEOUT_MS, AppPage, import_expect
from tests.e2e.conftest import RUN_COUNTER_JS, VIEWPORT, running_server

pytestmark = pytest.mark.e2e
expect = import_expect()

K = 6
LAYERS = ["features.relu2", "features.relu7"]
#: every <img> of the document drawn: complete, with a decoded width
ALL_LOADED_JS = "() => [...document.images].every(i => i.complete && i.naturalWidth > 0)"


@pytest.fixture(scope="module")
def stored(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("atlas-results")
    jobs.dataset_examples(Engine.demo(device="cpu"), Dataset.demo(48), LAYERS, k=K, batch_size=16,
                          out=root / "examples")
    return root


@pytest.fixture(scope="module")
def atlas_url(chromium_ready, stored) -> Iterator[str]:
    """A fresh dashboard server whose results folder (CNNVIS_RESULTS) is ``stored``."""
    old = os.environ.get("CNNVIS_RESULTS")
    os.environ["CNNVIS_RESULTS"] = str(stored)
    try:
        with running_server("e2e-atlas-streamlit.log") as url:
            yield url
    finally:
        if old is None:
            os.environ.pop("CNNVIS_RESULTS", None)
        else:
            os.environ["CNNVIS_RESULTS"] = old


@pytest.fixture()
def page(browser):
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(UI_TIMEOUT_MS)
    context.add_init_script(RUN_COUNTER_JS)
    yield context.new_page()
    context.close()


def test_a_unit_page_opens_by_url_on_a_fresh_server_and_leads_to_the_grid(page, atlas_url, screenshots):
    app = AppPage(page, atlas_url).open("atlas?layer=features.relu7&channel=7")
    main = app.main()
    expect(main.get_by_role("heading", name="features.relu7 · channel 7")).to_be_visible()
    captions = main.get_by_test_id("stImageCaption").filter(has_text="#")
    expect(captions).to_have_count(K)
    expect(captions.first).to_contain_text("#1 · ")
    expect(main.get_by_role("heading", name="Kernel slices of features.conv7, filter 7")).to_be_visible()
    expect(main.get_by_test_id("stPlotlyChart")).to_have_count(2)  # the histogram and the logit view
    page.wait_for_function(ALL_LOADED_JS)
    app.screenshot(screenshots, "atlas-unit-page")

    app.act(main.get_by_role("button", name="← Grid").click)
    expect(main.get_by_test_id("stImageCaption").filter(has_text="channel 0 ·")).to_have_count(1)
    assert "channel=" not in page.url and "layer=features.relu7" in page.url
    page.wait_for_function(ALL_LOADED_JS)
    app.screenshot(screenshots, "atlas-grid")


def test_the_static_export_opens_from_disk_and_every_picture_loads(page, stored, tmp_path, screenshots):
    result = jobs.load(stored / "examples")
    site = tmp_path / "site"
    report = atlas.export(result, site, LAYERS, core=Engine.demo(device="cpu"))
    page.goto((site / "index.html").as_uri())
    links = page.get_by_role("link")
    expect(links).to_have_count(len(LAYERS))
    links.filter(has_text="features.relu7").click()
    expect(page.get_by_role("heading", name="features.relu7")).to_be_visible()
    expect(page.locator(".cell img")).to_have_count(128)
    page.wait_for_function(ALL_LOADED_JS)
    page.screenshot(path=str(screenshots / "atlas-export-grid.png"), full_page=True)
    page.locator("#c7 a").click()
    expect(page.get_by_role("heading", name="features.relu7 · channel 7")).to_be_visible()
    expect(page.locator(".examples img")).to_have_count(2 * K)  # each crop, and with the map
    page.wait_for_function(ALL_LOADED_JS)
    assert page.evaluate("() => document.images.length") == 2 * K + 1  # and the kernel slices
    page.screenshot(path=str(screenshots / "atlas-export-unit.png"), full_page=True)
    assert report.pages == 1 + 2 * 3 + 32 + 128
