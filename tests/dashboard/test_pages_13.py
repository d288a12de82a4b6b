"""Issue 13 on the Predictions, Layer browser, Kernels and Dead channels pages and the sidebar,
driven with Streamlit's AppTest: settings kept across pages, messages that name the user's file
and speak the sidebar's words, what the models' answers mean, 16-bit images, charts."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from cnnvis_core.demo import CLASSES
from dashboard.state import plain
from tests.dashboard.apptest import open_app

PREDICTIONS, LAYERS, KERNELS, DEAD = "pages/predictions.py", "pages/layers.py", "pages/kernels.py", "pages/dead.py"


def _ok(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    return at


def _go(at: AppTest, page: str) -> AppTest:
    at.switch_page(page)
    return _ok(at)


def _away_and_back(at: AppTest, page: str) -> AppTest:
    """Leave ``page`` for two runs of other pages (each drops what it does not draw), come back."""
    for other in (PREDICTIONS if page != PREDICTIONS else KERNELS, DEAD if page != DEAD else LAYERS):
        _go(at, other)
    return _go(at, page)


def _figure(at: AppTest, index: int = 0) -> dict:
    return json.loads(at.get("plotly_chart")[index].proto.spec)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


# ---------------------------------------------------------------------------- item 5: settings stay
#: per page, batches of ``(widget kind, key): value`` set one run after another (a layer first: the
#: other widgets depend on it)
SETTINGS = {
    LAYERS: [{("selectbox", "layer_name"): "features.relu7"},
             {("radio", "layer_view_maps"): "One channel", ("selectbox", "layer_cmap"): "magma"},
             {("number_input", "layer_channel"): 9}],
    KERNELS: [{("selectbox", "kernel_layer"): "features.conv5"},
              {("radio", "kernel_view"): "All kernels", ("radio", "kernel_scaling"): "shared"},
              {("selectbox", "kernel_cmap_shared"): "piyg", ("number_input", "kernel_page"): 3}],
}


@pytest.mark.parametrize("page", list(SETTINGS))
def test_layer_browser_and_kernels_keep_their_settings_across_pages(page):
    at = _go(open_app(), page)
    for batch in SETTINGS[page]:
        for (kind, key), value in batch.items():
            getattr(at, kind)(key=key).set_value(value)
        _ok(at)
    _away_and_back(at, page)
    kept = {key: getattr(at, kind)(key=key).value for batch in SETTINGS[page] for kind, key in batch}
    assert kept == {key: value for batch in SETTINGS[page] for (_, key), value in batch.items()}


def test_dead_channels_keep_epsilon_also_when_switching_to_my_uploads():
    at = open_app()
    at.switch_page(DEAD)
    at.session_state["dead_count"] = 4
    _ok(at)
    at.number_input(key="dead_eps").set_value(0.25)
    at.multiselect(key="dead_kinds").set_value(["ReLU"])
    _ok(at)
    at.radio(key="dead_source").set_value("uploads")       # no uploads yet: the page stops early
    _ok(at)
    assert at.number_input(key="dead_eps").value == 0.25
    _away_and_back(at, DEAD)
    assert at.radio(key="dead_source").value == "uploads"
    assert at.number_input(key="dead_eps").value == 0.25
    at.radio(key="dead_source").set_value("demo")
    _ok(at)
    assert at.slider(key="dead_count").value == 4
    assert at.number_input(key="dead_eps").value == 0.25
    assert at.multiselect(key="dead_kinds").value == ["ReLU"]


def test_predictions_and_the_sidebar_keep_the_image_and_the_model_choice():
    at = _go(open_app(), PREDICTIONS)
    at.selectbox(key="sample_index").set_value(3)
    at.radio(key="model_source").set_value("torchvision architecture")
    _ok(at)
    at.selectbox(key="arch").set_value("squeezenet1_0")
    at.toggle(key="pretrained").set_value(False)
    _ok(at)
    at.radio(key="model_source").set_value("Demo model (offline)")   # the architecture is not drawn now
    _ok(at)
    top1 = next(m.value for m in at.markdown if m.value.startswith("**Top-1:**"))
    _away_and_back(at, PREDICTIONS)
    assert at.selectbox(key="sample_index").value == 3
    assert next(m.value for m in at.markdown if m.value.startswith("**Top-1:**")) == top1
    at.radio(key="model_source").set_value("torchvision architecture")
    _ok(at)
    assert at.selectbox(key="arch").value == "squeezenet1_0"
    assert at.toggle(key="pretrained").value is False


# ---------------------------------------------------------------------------- items 8 and 9: messages
@pytest.fixture()
def offline(monkeypatch, tmp_path):
    import urllib.error

    import torchvision.models._api as api

    from cnnvis_core import zoo

    def refuse(*args, **kwargs):
        raise urllib.error.URLError("offline (test)")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(api, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(zoo, "download_reachable", lambda *args, **kwargs: False)
    return tmp_path / "torch"


def test_a_refused_weights_file_is_named_and_the_page_says_the_model_failed():
    import torch
    import torchvision

    whole = io.BytesIO()
    torch.save(torchvision.models.squeezenet1_0(num_classes=3), whole)   # a whole pickled model
    at = _go(open_app(), PREDICTIONS)
    at.radio(key="model_source").set_value("Weights file")
    at.run()
    assert any("Upload a weights file" in i.value for i in at.info)
    at.selectbox(key="arch").set_value("squeezenet1_0")
    at.file_uploader(key="weights_file").set_value(("resnet_full.pt", whole.getvalue(), "application/octet-stream"))
    at.run()
    assert not at.exception
    name = plain("resnet_full.pt")  # a user's file name is shown as text: its markup characters escaped
    [error] = [e.value for e in at.error]
    assert f"The weights file {name} contains Python objects" in error and "in-memory" not in error, error
    [warning] = [w.value for w in at.warning]              # the page: the model failed, and why
    assert warning.startswith(f"The model (squeezenet1_0 with {name}) could not be loaded:"), warning
    assert f"{name} contains Python objects" in warning
    assert not any("Choose a model" in i.value for i in at.info)


def test_unreadable_cached_weights_are_explained_in_the_sidebars_words(offline):
    import os

    import torchvision

    url = torchvision.models.get_model_weights("squeezenet1_0")["DEFAULT"].url
    cache = offline / "hub" / "checkpoints" / os.path.basename(url)
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"half a download")                   # cached, so it counts as available
    at = _go(open_app(), LAYERS)
    at.radio(key="model_source").set_value("torchvision architecture")
    at.run()
    assert at.toggle(key="pretrained").value is False     # resnet18's weights are not cached here
    at.selectbox(key="arch").set_value("squeezenet1_0")
    at.toggle(key="pretrained").set_value(True)
    at.run()
    [error] = [e.value for e in at.error]
    assert str(cache) in error and "turn off *Pretrained weights*" in error and "choose *Weights file*" in error
    assert "weights=None" not in error and "pass weights" not in error, error
    [warning] = [w.value for w in at.warning]
    assert "could not be loaded" in warning and not any("Choose a model" in i.value for i in at.info)


# ---------------------------------------------------------------------------- item 12: what answers mean
def test_predictions_say_what_the_demo_model_and_random_weights_know(offline):
    at = _go(open_app(), PREDICTIONS)
    [note] = [i.value for i in at.info]
    assert f"knows {len(CLASSES)} drawn shapes only" in note and "means nothing" not in note
    photo = Image.fromarray((np.random.default_rng(0).random((96, 128, 3)) * 255).astype(np.uint8))
    at.file_uploader(key="image_upload").set_value(("astronaut.png", _png(photo), "image/png"))
    _ok(at)
    assert any("drawn shapes only" in i.value and "means nothing" in i.value for i in at.info)

    at.radio(key="model_source").set_value("torchvision architecture")
    _ok(at)
    at.selectbox(key="arch").set_value("squeezenet1_0")      # offline: random weights by default
    _ok(at)
    assert any("structure, not knowledge" in i.value for i in at.info), [i.value for i in at.info]


def test_the_output_layer_shows_class_names_no_colormap_and_the_caveat():
    at = _go(open_app(), LAYERS)
    at.selectbox(key="layer_name").set_value("fc")
    _ok(at)
    axis = _figure(at)["layout"]["xaxis"]
    assert axis["ticktext"] == list(CLASSES) and axis.get("tickangle") == 0
    assert "layer_cmap" not in [s.key for s in at.selectbox]  # bars: a colormap would change nothing
    assert any("drawn shapes only" in i.value for i in at.info)


# ---------------------------------------------------------------------------- item 17: 16-bit images
def test_a_16_bit_image_is_stretched_from_its_true_range_and_the_note_says_how():
    values = np.linspace(1000, 17320, 64 * 48).reshape(48, 64).astype(np.uint16)
    at = _go(open_app(), PREDICTIONS)
    at.file_uploader(key="image_upload").set_value(("scan16.png", _png(Image.fromarray(values)), "image/png"))
    _ok(at)
    low, high = at.session_state["_image"].image.convert("L").getextrema()
    assert (low, high) == (0, 255)                          # divided by 257 it peaked at 67
    notes = [i.value for i in at.info]
    assert any("16-bit" in n and "1000–17320" in n and "stretched to 0–255" in n for n in notes), notes


# ---------------------------------------------------------------------------- item 18: charts and controls
def test_charts_reach_100_percent_keep_labels_level_and_show_only_useful_controls():
    at = _go(open_app(), PREDICTIONS)
    figure = _figure(at)
    assert figure["layout"]["xaxis"]["range"] == [0, 1] and figure["layout"]["xaxis"]["ticktext"][-1] == "100%"
    assert figure["data"][0]["textangle"] == 0

    _go(at, KERNELS)                                        # RGB filters: their own colours, no colormap
    assert at.radio(key="kernel_view_rgb").value == "RGB filters"
    assert not [s for s in at.selectbox if s.key and s.key.startswith("kernel_cmap")]
    at.radio(key="kernel_view_rgb").set_value("One filter, per input channel")
    _ok(at)
    assert [s.key for s in at.selectbox if s.key and s.key.startswith("kernel_cmap")] == ["kernel_cmap_each"]
    assert "under each: R, G, B" in at.get("image")[0].captions[0]

    _go(at, LAYERS)
    at.selectbox(key="layer_name").set_value("features.relu7")
    at.radio(key="layer_view_maps").set_value("Sum & max")
    _ok(at)
    captions = [c for image in at.get("image") for c in image.captions]
    assert "Mean & sum" not in at.radio(key="layer_view_maps").options
    assert len(captions) == 2 and "channel sum" in captions[0] and "maximum over channels" in captions[1]
    assert len({url for image in at.get("image") for url in image.value}) == 2   # two different pictures

    at.switch_page(DEAD)
    at.session_state["dead_count"] = 4
    _ok(at)
    bars = _figure(at)["data"][0]
    assert bars["orientation"] == "h"                      # layer names read horizontally
