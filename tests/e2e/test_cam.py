"""Class activation maps in a real browser: the opacity slider redraws the overlay without a model pass."""

from __future__ import annotations

import re

import numpy as np
import pytest

from cnnvis_core.cam import TITLES
from tests.e2e.browser import UI_TIMEOUT_MS, AppPage, import_expect

pytestmark = pytest.mark.e2e
expect = import_expect()

OPACITY = "Opacity of the map"


def test_opacity_changes_the_overlay_but_runs_no_model_pass(app: AppPage, screenshots):
    app.go_to("Class activation maps")
    expect(app.main().get_by_role("heading", name="Class activation maps")).to_be_visible()
    title = TITLES["gradcam++"]
    app.select("Method", title)
    assert app.selected("Method") == title
    overlay = app.main().get_by_test_id("stImage").filter(
        has=app.page.get_by_test_id("stImageCaption").get_by_text(re.compile(rf"^{re.escape(title)} · class ")))
    expect(overlay).to_have_count(1)

    app.rerun()  # everything the page shows is computed (and cached) now; the sidebar counts it
    forward, backward = app.model_passes()
    assert backward >= 1, "the page drew a gradient-based map, yet the counter shows no backward pass"
    slider = app.slider(OPACITY)
    start = float(slider.input_value())
    before = np.asarray(app.image_pixels(overlay.locator("img")), dtype=np.float32)

    app.nudge_slider(OPACITY, 4)
    assert float(slider.input_value()) == pytest.approx(start + 4 * 0.05)
    expect(slider).to_have_attribute("aria-valuetext", f"{start + 4 * 0.05:.2f}")
    after = np.asarray(app.image_pixels(overlay.locator("img")), dtype=np.float32)
    assert after.shape == before.shape
    change = np.abs(after - before).mean()
    assert change > 2.0, f"the overlay barely changed ({change:.2f} grey levels on average)"

    app.rerun()  # the fragment's reruns show in the sidebar at the next full run
    assert app.model_passes() == (forward, backward), "moving the opacity ran the model"
    app.screenshot(screenshots, "cam-gradcampp-opacity")


def test_a_masked_method_runs_under_a_progress_bar_then_shows_its_map(app: AppPage, screenshots):
    """IS-CAM: 10 masked forward passes per channel (1,280 on the demo's last layer, a second or two
    here) under a progress bar with the time left; the bar goes when the map comes."""
    app.go_to("Class activation maps")
    title = TITLES["iscam"]
    box = app.page.get_by_role("combobox", name="Method", exact=True)
    box.click()
    app.page.get_by_role("listbox", name="Method").get_by_role("option", name=title, exact=True).first.click()
    bar = app.main().get_by_test_id("stProgress")
    expect(bar).to_be_visible()
    expect(bar).to_contain_text(re.compile(r"masked forward passes"))
    bar.screenshot(path=str(screenshots / "cam-iscam-progress.png"))  # the bar alone, while it runs
    overlay = app.main().get_by_test_id("stImageCaption").get_by_text(re.compile(rf"^{re.escape(title)} · class "))
    expect(overlay).to_have_count(1, timeout=UI_TIMEOUT_MS)  # the whole computation: seconds, more on a busy machine
    app.wait_idle()
    expect(bar).to_have_count(0)
    app.assert_no_exception()


def test_stop_ends_a_masked_map_and_keeps_it_stopped_until_asked_again(app: AppPage, screenshots):
    """SS-CAM: 35 noisy masks per channel (4,480 passes on the demo's last layer, several seconds).
    Stop interrupts it: the bar goes, the page says so and shows no map, a rerun does not start it
    again; "Compute it again" does, and the map comes."""
    app.go_to("Class activation maps")
    title = TITLES["sscam"]
    app.select("Method", title)
    app.main().get_by_role("button", name=re.compile(r"^Compute anyway")).click()
    bar = app.main().get_by_test_id("stProgress")
    expect(bar).to_be_visible()
    app.main().get_by_role("button", name="Stop", exact=True).click()
    stopped = app.main().get_by_text(re.compile(rf"^{re.escape(title)}: stopped before its map was complete"))
    expect(stopped).to_be_visible()
    app.wait_idle()
    expect(bar).to_have_count(0)
    overlay = app.main().get_by_test_id("stImageCaption").get_by_text(re.compile(rf"^{re.escape(title)} · class "))
    expect(overlay).to_have_count(0)
    app.screenshot(screenshots, "cam-sscam-stopped")

    app.rerun()
    expect(stopped).to_be_visible()
    expect(bar).to_have_count(0)

    app.main().get_by_role("button", name="Compute it again").click()
    expect(bar).to_be_visible()
    expect(overlay).to_have_count(1, timeout=UI_TIMEOUT_MS * 2)  # 4,480 passes: seconds, more on a busy machine
    app.wait_idle()
    expect(stopped).to_have_count(0)
    app.assert_no_exception()

