"""The layer browser in a real browser: picking a layer redraws its grid without running the model."""

from __future__ import annotations

import re

import pytest

from tests.e2e.browser import AppPage, import_expect

pytestmark = pytest.mark.e2e
expect = import_expect()


def test_picking_a_layer_changes_the_grid_and_runs_no_model_pass(app: AppPage, screenshots):
    app.go_to("Layer browser")
    expect(app.main().get_by_role("heading", name="Layer browser")).to_be_visible()
    first_layer = app.selected("Layer")
    assert first_layer.startswith("features.conv1 · Conv2d · "), first_layer
    [grid] = app.image_srcs()
    expect(app.main().get_by_test_id("stImageCaption")).to_contain_text("features.conv1 (Conv2d)")
    before = app.image_pixels(app.images().first)
    passes = app.model_passes()

    app.select("Layer", re.compile(r"^features\.relu3 · ReLU · 64×32×32$"), search="relu3")
    expect(app.main().get_by_test_id("stImageCaption")).to_contain_text(
        "features.relu3 (ReLU) · channels 1–64 of 64")
    [new_grid] = app.image_srcs()
    assert new_grid != grid, "the grid image was not replaced"
    after = app.image_pixels(app.images().first)
    assert after.size != before.size or after.tobytes() != before.tobytes(), "the grid looks the same"
    assert app.model_passes() == passes, "changing the layer ran the model again"
    app.screenshot(screenshots, "layers-relu3")
