"""The layer browser, kernel viewer and dead-channel pages, driven with Streamlit's AppTest."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from tests.dashboard.apptest import open_app


def _open(page: str) -> AppTest:
    at = open_app()
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def _forwards(at: AppTest) -> int:
    return at.session_state["_engine"].counters.snapshot()[0]


def _captions(at: AppTest) -> list[str]:
    return [c for image in at.get("image") for c in image.captions]


def _ok(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    return at


def test_layer_browser_runs_the_model_once_for_every_view():
    at = _open("pages/layers.py")
    forwards = _forwards(at)
    assert at.get("image") and "features.conv1" in _captions(at)[0]

    at.selectbox(key="layer_name").set_value("features.relu7")
    _ok(at)
    assert any("features.relu7" in c and "of 128" in c and "page 1/2" in c for c in _captions(at))

    at.radio(key="layer_order").set_value("mean")
    at.selectbox(key="layer_per_page").set_value(32)
    _ok(at)
    at.number_input(key="layer_page").set_value(4)
    at.selectbox(key="layer_cmap").set_value("magma")
    at.radio(key="layer_scaling").set_value("layer")
    _ok(at)
    assert any("channels 97–128 of 128" in c and "page 4/4" in c and "strongest first" in c for c in _captions(at))
    assert [b.label for b in at.get("download_button")] == ["Grid (PNG)", "Activations (.npy)", "Activations (.npz)"]

    at.radio(key="layer_view_maps").set_value("One channel")
    _ok(at)
    assert at.selectbox(key="layer_cmap").value == "magma"     # kept across views
    at.number_input(key="layer_channel").set_value(5)
    _ok(at)
    assert at.get("plotly_chart") and [m.label for m in at.metric] == ["Min", "Mean", "Max", "Zeros"]

    at.radio(key="layer_view_maps").set_value("Sum & max")
    _ok(at)
    assert len(_captions(at)) == 2 and all("features.relu7" in c for c in _captions(at))

    at.radio(key="layer_view_maps").set_value("Channels")
    _ok(at)
    assert any("page 4/4" in c for c in _captions(at)), "the page of channels was not kept"

    at.radio(key="layer_view_maps").set_value("All layers")
    _ok(at)
    assert at.get("image") and at.multiselect(key="overview_kinds").value

    at.radio(key="layer_view_maps").set_value("Statistics")
    _ok(at)
    assert at.get("plotly_chart")

    at.selectbox(key="layer_name").set_value("fc")        # a vector: values, not an error
    _ok(at)
    assert at.get("plotly_chart") and any("fc" in c.value for c in at.caption)

    assert _forwards(at) == forwards, "changing the view must not run the model again"


@pytest.mark.parametrize("layer", ["features.conv1", "features.conv5"])
def test_kernel_viewer_pictures_scalings_and_charts(layer):
    at = _open("pages/kernels.py")
    forwards = _forwards(at)
    at.selectbox(key="kernel_layer").set_value(layer)
    _ok(at)
    rgb = layer == "features.conv1"
    view_key = "kernel_view_rgb" if rgb else "kernel_view"
    first_view = at.radio(key=view_key).value
    assert first_view == ("RGB filters" if rgb else "One filter, per input channel")
    assert layer in _captions(at)[0]
    assert len(at.get("plotly_chart")) == 2                 # histogram and norms
    n_out = {"features.conv1": 16, "features.conv5": 128}[layer]
    flag = at.slider(key=f"kernel_flag:{layer}")
    assert flag.value == max(1, n_out // 10), "each layer starts by flagging a tenth of its filters"
    assert any(c.value.startswith("Smallest L1 norms: filter") for c in at.caption)

    at.radio(key="kernel_scaling").set_value("shared")
    _ok(at)
    assert "symmetric" in _captions(at)[0]

    at.radio(key=view_key).set_value("All kernels")
    _ok(at)
    at.selectbox(key="kernel_per_page").set_value(64)
    _ok(at)
    n_kernels = {"features.conv1": 16 * 3, "features.conv5": 128 * 64}[layer]
    pages = -(-n_kernels // 64)
    assert f"page 1/{pages}" in _captions(at)[0]
    at.number_input(key="kernel_page").set_value(pages)
    _ok(at)
    assert f"page {pages}/{pages}" in _captions(at)[0] and layer in _captions(at)[0]
    assert at.get("download_button")
    assert _forwards(at) == forwards, "kernels are weights: no forward pass"


def test_dead_channel_page_lists_charts_and_verifies():
    at = open_app()
    at.switch_page("pages/dead.py")
    at.session_state["dead_count"] = 4
    at.run()
    assert not at.exception, at.exception
    assert at.get("plotly_chart")
    at.number_input(key="dead_eps").set_value(1e6)          # every channel is below this
    _ok(at)
    metrics = {m.label: m.value for m in at.metric}
    assert int(metrics["Dead channels"]) > 0
    assert "Largest logit change" in metrics and "Top-1 class changed" in metrics
    assert at.dataframe and [b.label for b in at.get("download_button")] == ["Dead channels (CSV)",
                                                                             "Dead channels (JSON)"]
    forwards = _forwards(at)
    at.multiselect(key="dead_kinds").set_value(["ReLU"])
    _ok(at)
    at.number_input(key="dead_eps").set_value(1e6)
    _ok(at)
    assert _forwards(at) == forwards, "the same images and ε must come from the cache"
    at.number_input(key="dead_eps").set_value(0.0)          # a new ε: only the check may run
    _ok(at)
    assert _forwards(at) - forwards in (0, 2), "a new ε must not run the peak pass again (1 forward per batch)"


def test_dead_channel_page_with_uploads_skips_a_bad_file_names_it_and_uses_the_rest():
    """Issue 13 item 7: one unreadable file among five images is left out, named with its reason,
    and the check runs on the other four (before, it blocked the whole check, unnamed)."""
    import io
    import json

    from cnnvis_core.demo import sample
    at = open_app()
    at.switch_page("pages/dead.py").run()
    at.radio(key="dead_source").set_value("uploads")
    _ok(at)
    assert any("Upload one or more" in i.value for i in at.info)
    files = []
    for k, name in enumerate(("astronaut.png", "chelsea.png", "coffee.png", "rocket.png")):
        buffer = io.BytesIO()
        sample(7 + k)[0].save(buffer, "PNG")
        files.append((name, buffer.getvalue(), "image/png"))
    files.insert(2, ("notes.jpg", b"not an image at all", "image/jpeg"))
    at.file_uploader(key="dead_uploads").set_value(files)
    _ok(at)                                                     # no st.error: the bad file is a warning
    [warning] = [w.value for w in at.warning]
    assert warning.startswith("Skipped notes\\.jpg:") and "not an image" in warning, warning  # name: plain()
    assert any("other 4 of 5 files" in c.value for c in at.caption), [c.value for c in at.caption]
    assert {m.label for m in at.metric} >= {"Dead channels"}
    [chart] = at.get("plotly_chart")
    assert "(4 images," in json.loads(chart.proto.spec)["layout"]["title"]["text"]
    at.file_uploader(key="dead_uploads").set_value([files[2]])   # nothing readable: said, and stops
    at.run()
    assert not at.exception
    assert any("None of the uploaded files" in e.value for e in at.error), [e.value for e in at.error]


def test_dead_page_helpers_name_the_quietest_channel_and_judge_the_check():
    import numpy as np

    from cnnvis_core.pruning import ChannelPeaks, PruningCheck
    from dashboard.dead import quietest, verdict
    peaks = ChannelPeaks(("a", "b", "c"), ("Conv2d", "ReLU", "ReLU"),
                         (np.array([0.5, 0.1]), np.array([3.0, 0.7, 0.2]), np.array([0.4])), images=4)
    assert quietest(peaks, ["ReLU"]) == ("b", 2, 0.2)
    assert quietest(peaks, ["Conv2d", "ReLU"]) == ("a", 1, 0.1)
    assert quietest(peaks, ["Linear"]) is None
    assert peaks.dead(0.2).as_dict() == {"a": (1,), "b": (2,)}    # the hint's promise: ε = that peak

    def check(change: float, changed: int) -> PruningCheck:
        return PruningCheck(change, changed > 0, changed, 10, 20.0, 3, 2)
    assert verdict(check(0.0, 0))[0] == "success"
    assert verdict(check(1e-4, 0))[0] == "success"             # below 1e-5 of the largest |logit| (20)
    level, sentence = verdict(check(1.0, 0))
    assert level == "info" and "up to 1," in sentence and "|logit| 20" in sentence
    level, sentence = verdict(check(4.0, 3))
    assert level == "warning" and "3 of 10" in sentence and "up to 4," in sentence
