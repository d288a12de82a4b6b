"""The kernel viewer in a real browser: switching the scaling redraws the kernels."""

from __future__ import annotations

import pytest

from tests.e2e.browser import AppPage, import_expect

pytestmark = pytest.mark.e2e
expect = import_expect()

EACH = "each kernel on its own (shape)"
SHARED = "one symmetric scale for the layer (sign and strength)"


def test_switching_the_scaling_redraws_the_kernels(app: AppPage, screenshots):
    app.go_to("Kernels")
    expect(app.main().get_by_role("heading", name="Kernels")).to_be_visible()
    caption = app.main().get_by_test_id("stImageCaption").first
    expect(caption).to_contain_text(EACH)
    [picture] = app.image_srcs()
    before = app.image_pixels(app.images().first)

    app.choose_radio("Scaling", SHARED)
    expect(caption).to_contain_text(SHARED)
    [new_picture] = app.image_srcs()
    assert new_picture != picture, "the kernel picture was not replaced"
    after = app.image_pixels(app.images().first)
    assert after.size != before.size or after.tobytes() != before.tobytes(), "the kernels look the same"
    app.screenshot(screenshots, "kernels-shared-scale")
