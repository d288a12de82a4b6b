"""The CAM page as issue 13 wants it: a method switch costs one map (the hidden tabs compute nothing),
settings kept across pages, the side-by-side row with the methods that apply and a progress bar,
the confirmation gone once given, the map over the photo itself, colour scales and file names."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from cnnvis_core import Engine
from tests.dashboard.pages_13 import away_and_back, ok, open_page, record_file_names

PAGE = "pages/cam.py"


def _passes(at: AppTest) -> tuple[int, int]:
    return at.session_state["_engine"].counters.snapshot()


def _captions(at: AppTest) -> list[str]:
    return [img.caption for image in at.get("image") for img in image.proto.imgs]


def _one_map_costs(method: str, image, target: int) -> tuple[int, int]:
    """The passes of ONE ``engine.cam`` call, on an engine of its own (warmed up first)."""
    engine = Engine.demo(device="cpu")
    engine.cam(image, "gradcam", None, target)
    before = engine.counters.snapshot()
    engine.cam(image, method, None, target)
    after = engine.counters.snapshot()
    return after[0] - before[0], after[1] - before[1]


def test_a_method_switch_costs_one_map_the_curves_only_when_their_tab_is_open():
    at = open_page(PAGE)
    assert not at.get("plotly_chart"), "the hidden deletion & insertion tab drew its curves"
    image, target = at.session_state["_image"].image, at.session_state["_engine"].predict(
        at.session_state["_image"].image, 1)[0][0]
    before = _passes(at)
    at.selectbox(key="cam_method").set_value("smoothgradcam++")
    ok(at)
    spent = tuple(now - then for now, then in zip(_passes(at), before))
    assert spent == _one_map_costs("smoothgradcam++", image, target), "a method switch cost more than its map"

    at.session_state["cam_tab"] = "Deletion & insertion"
    ok(at)
    assert at.get("plotly_chart"), "the curves are missing once their tab is open"
    assert _passes(at)[0] - before[0] - spent[0] > 0, "the curves ran no pass"
    at.session_state["cam_tab"] = "Class activation map"
    ok(at)
    before = _passes(at)
    at.selectbox(key="cam_method").set_value("gradcam")  # in the shared bundle already: no pass at all
    ok(at)
    assert _passes(at) == before


def test_settings_are_kept_when_another_page_was_shown():
    at = open_page(PAGE)
    at.multiselect(key="cam_compare").set_value(["gradcam", "layercam"])
    at.selectbox(key="cam_method").set_value("smoothgradcam++")
    at.selectbox(key="cam_layer").set_value("features.relu6")
    at.radio(key="cam_target").set_value(1)
    ok(at)
    at.number_input(key="cam_option_smoothgradcam++_n_samples").set_value(4)
    at.slider(key="cam_alpha").set_value(0.8)
    at.selectbox(key="cam_cmap").set_value("viridis")
    ok(at)
    away_and_back(at, PAGE)
    assert at.selectbox(key="cam_method").value == "smoothgradcam++"
    assert at.selectbox(key="cam_layer").value == "features.relu6"
    assert at.radio(key="cam_target").value == 1
    assert at.number_input(key="cam_option_smoothgradcam++_n_samples").value == 4
    assert at.slider(key="cam_alpha").value == 0.8
    assert at.selectbox(key="cam_cmap").value == "viridis"
    assert at.multiselect(key="cam_compare").value == ["gradcam", "layercam"]


def test_the_row_shows_the_methods_that_apply_and_says_why_cam_is_missing():
    at = open_page(PAGE)
    at.selectbox(key="cam_layer").set_value("features.relu6")
    ok(at)  # no error box: CAM is left out, not refused
    row = [c for c in _captions(at) if "·" not in c and not c.startswith(("On the photo", "Colour scale"))]
    assert row == ["Grad-CAM (Selvaraju et al. 2017)", "Grad-CAM++ (Chattopadhyay et al. 2018)",
                   "Layer-CAM (Jiang et al. 2021)"], row
    assert any(c.value.startswith("CAM is left out: it reads the final linear layer") for c in at.caption)
    assert not any("'gradcam'" in c.value or "'cam'" in c.value for c in at.caption)

    at.selectbox(key="cam_layer").set_value("auto")
    ok(at)
    assert "CAM (Zhou et al. 2016)" in _captions(at)
    assert not any(c.value.startswith("CAM is left out") for c in at.caption)


def test_a_masked_method_added_to_the_row_computes_under_a_progress_bar(monkeypatch):
    from dashboard import cam as glue

    bars: list[tuple[str, bool]] = []
    drawn = glue._progress_bar

    def watched(slot, key, stoppable):
        bars.append((key.method, stoppable))
        return drawn(slot, key, stoppable)

    monkeypatch.setattr(glue, "_progress_bar", watched)
    at = open_page(PAGE)
    at.selectbox(key="cam_layer").set_value("features.relu5")
    at.multiselect(key="cam_compare").set_value(["gradcam", "iscam"])
    ok(at)
    assert ("iscam", False) in bars, bars
    assert "IS-CAM (Naidu et al. 2020)" in _captions(at)
    assert not at.get("progress"), "the bar must go once the map is there"


def test_the_question_and_its_button_go_once_the_user_confirmed(monkeypatch):
    from dashboard import cam as glue

    monkeypatch.setattr(glue, "CONFIRM_PASSES", 16)  # Score-CAM's 32 passes on features.relu2 then ask first
    at = open_page(PAGE)
    at.multiselect(key="cam_compare").set_value(["gradcam"])
    at.selectbox(key="cam_method").set_value("scorecam")
    at.selectbox(key="cam_layer").set_value("features.relu2")
    ok(at)
    assert any("forward passes" in w.value for w in at.warning)
    [go] = [b for b in at.button if b.label.startswith("Compute anyway")]
    go.click()
    ok(at)
    assert any("Score-CAM" in c and "· layer features.relu2" in c for c in _captions(at))
    assert not any("forward passes" in w.value for w in at.warning), "the question stays above the map"
    assert not [b for b in at.button if b.label.startswith("Compute anyway")], "the button stays after the answer"


def _photo(index: int):
    """A 300×200 photo: a bright disc left of centre on a dark ground (the demo's kind of picture)."""
    yy, xx = np.mgrid[:200, :300]
    pixels = np.full((200, 300, 3), 30, np.uint8)
    pixels[(yy - 100) ** 2 + (xx - 110) ** 2 < 50**2] = (240, 200, 40)
    return Image.fromarray(pixels), [0], []


def test_the_map_over_the_photo_at_its_size_beside_the_model_input_with_scales_and_names(monkeypatch):
    import dashboard.state

    monkeypatch.setattr(dashboard.state, "sample_image", _photo)
    names = record_file_names(monkeypatch)
    at = open_page(PAGE)
    assert any(c.startswith("On the photo, 300×200 px: the map taken back through the model's resize")
               for c in _captions(at)), _captions(at)
    assert any(c.startswith("Grad-CAM (Selvaraju et al. 2017) · class") for c in _captions(at))
    assert sum(c.startswith("Colour scale") for c in _captions(at)) == 2  # the overlays' and the row's
    assert {"Overlay on the photo (PNG, 300×200)", "Overlay on the model input (PNG)"} <= {
        b.proto.label for b in at.get("download_button")}
    assert {"Sample_1_circle_gradcam_features.relu7_photo.png", "Sample_1_circle_gradcam_features.relu7.png",
            "Sample_1_circle_gradcam_features.relu7_raw.npy"} <= set(names), names


def test_a_transform_it_cannot_follow_leaves_the_map_over_the_model_input_with_a_caption(monkeypatch):
    import dashboard.cam
    import dashboard.state

    monkeypatch.setattr(dashboard.state, "sample_image", _photo)
    monkeypatch.setattr(dashboard.cam, "input_window", lambda transform, size: None)  # a RandomResizedCrop, say
    at = open_page(PAGE)
    assert not any(c.startswith("On the photo") for c in _captions(at))
    assert any(c.startswith("Grad-CAM (Selvaraju et al. 2017) · class") for c in _captions(at))
    assert any("cannot be laid over your photo" in c.value for c in at.caption)
    assert "Overlay (PNG)" in [b.proto.label for b in at.get("download_button")]


@pytest.mark.parametrize("cmap", ["jet", "viridis"])
def test_the_downloaded_overlays_carry_their_colour_scale(cmap):
    from cnnvis_core.cam import CamResult
    from dashboard import cam as glue
    from dashboard.state import ChosenImage

    photo, _, _ = _photo(0)
    chosen = ChosenImage(photo, "test:photo", "chelsea.jpg")
    engine = Engine.demo(device="cpu")
    view = engine.model_view(photo)
    result = CamResult(np.linspace(0, 1, 128 * 128, dtype=np.float32).reshape(128, 128), np.ones((16, 16)), 0,
                       "features.relu7", "gradcam")
    small = Image.open(io.BytesIO(glue.overlay_png(view, result, 0.5, cmap, scale=True)))
    assert small.width == 128 and small.height > 128 + 20
    window = glue.photo_window(engine, chosen)
    big = Image.open(io.BytesIO(glue.photo_overlay_file(chosen, window, result, 0.5, cmap)()))
    assert big.width == 300 and big.height > 200 + 20
    bar = np.asarray(big.convert("RGB"))[206 + 2]  # the scale's first row, under the picture and its margin
    assert np.abs(bar[0].astype(int) - bar[-1].astype(int)).sum() > 100, "no colour scale under the photo overlay"
    assert glue.file_stem(chosen, "gradcam++", "features.relu7") == "chelsea_gradcampp_features.relu7"
