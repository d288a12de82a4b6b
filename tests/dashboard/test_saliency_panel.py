"""The gradients & deconvnet panel of the CAM page, driven with Streamlit's AppTest."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from tests.dashboard.apptest import open_app
from tests.dashboard.pages_13 import ok as _ok

PAGE = "pages/cam.py"


def _captions(at: AppTest) -> list[str]:
    return [c for image in at.get("image") for c in image.captions]


def _passes(at: AppTest) -> tuple[int, int]:
    return at.session_state["_engine"].counters.snapshot()


def test_saliency_panel_methods_views_and_reconstruction():
    at = open_app()
    at.switch_page(PAGE)
    at.session_state["cam_tab"] = "Gradients & deconvnet"  # a hidden tab computes nothing
    _ok(at)
    shown = _captions(at)
    for title in ("Gradient (Simonyan", "Guided backprop", "Guided Grad-CAM", "features.relu7 · channel 0"):
        assert any(title in c for c in shown), (title, shown)

    at.multiselect(key="saliency_methods").set_value(["deconvnet", "guided"])
    _ok(at)
    shown = _captions(at)
    assert any("Deconvnet" in c for c in shown) and not any("Gradient (Simonyan" in c for c in shown)
    passes = _passes(at)

    at.radio(key="saliency_view").set_value("signed")  # display only: from the cache
    _ok(at)
    at.radio(key="saliency_view").set_value("magnitude")
    _ok(at)
    at.selectbox(key="saliency_cmap").set_value("inferno")
    _ok(at)
    assert _passes(at) == passes, "changing the display must not run the model"

    at.selectbox(key="deconv_layer").set_value("features.conv3")
    at.toggle(key="deconv_top_only").set_value(True)
    _ok(at)
    at.button(key="deconv_strongest").click()
    _ok(at)
    channel = at.number_input(key="deconv_channel").value
    assert any(f"features.conv3 · channel {channel}" in c for c in _captions(at))
    assert any("strongest activation" in c for c in _captions(at))
    assert _passes(at)[1] > passes[1]  # the projection counts as a backward pass
