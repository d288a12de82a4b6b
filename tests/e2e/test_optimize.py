"""Filter optimisation in a real browser: a tiny run ends with its images and the passes it cost."""

from __future__ import annotations

import re

import numpy as np
import pytest

from tests.e2e.browser import RUN_TIMEOUT_MS, AppPage, import_expect

pytestmark = pytest.mark.e2e
expect = import_expect()

STEPS = 12


def _set_number(app: AppPage, label: str, value: int) -> None:
    field = app.page.get_by_role("spinbutton", name=label, exact=True)
    field.fill(str(value))
    app.act(lambda: field.press("Enter"))
    expect(field).to_have_value(str(value))


def test_a_tiny_optimisation_shows_its_images(app: AppPage, screenshots):
    app.go_to("Filter optimisation")
    expect(app.main().get_by_role("heading", name="Filter optimisation")).to_be_visible()
    layer = app.selected("Layer")
    app.main().get_by_text("Custom settings", exact=True).click()
    _set_number(app, "Steps", STEPS)
    _set_number(app, "Image size", 32)
    forward, backward = app.model_passes()

    app.page.get_by_role("button", name=re.compile(r"^Optimise 1 image")).click()
    done = app.main().get_by_text(re.compile(rf"^Done: {STEPS} steps"))
    expect(done).to_be_visible(timeout=RUN_TIMEOUT_MS)
    app.wait_idle()

    result = app.main().get_by_test_id("stImage").filter(
        has=app.page.get_by_test_id("stImageCaption").get_by_text(re.compile(r"^channel 0 · activation ")))
    expect(result).to_have_count(1)
    pixels = np.asarray(app.image_pixels(result.locator("img")), dtype=np.float32)
    assert pixels.std() > 1.0, "the optimised image is flat"
    expect(app.main().get_by_test_id("stDownloadButton").filter(has_text="PNG")).to_have_count(1)
    expect(app.main().get_by_text(f"Channel (mean of its map) · {layer.split(' · ')[0]} · 1 unit(s)",
                                  exact=False)).to_be_visible()
    app.rerun()  # the sidebar's counters as of now
    new_forward, new_backward = app.model_passes()
    assert new_backward - backward >= STEPS, (backward, new_backward)
    assert new_forward - forward >= STEPS, (forward, new_forward)
    app.screenshot(screenshots, "optimize-tiny-run")
