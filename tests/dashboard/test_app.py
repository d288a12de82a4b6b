"""The dashboard shell, driven with Streamlit's AppTest."""

from __future__ import annotations

import io

import pytest
from streamlit.testing.v1 import AppTest

from cnnvis_core import Engine
from cnnvis_core.demo import CLASSES, sample
from dashboard.state import SAMPLE_SEED_START, plain
from tests.dashboard.apptest import open_app


@pytest.fixture()
def app() -> AppTest:
    at = open_app()
    assert not at.exception, at.exception
    return at


def _top1_text(at: AppTest) -> str:
    return next(m.value for m in at.markdown if m.value.startswith("**Top-1:**"))


def test_sample_image_gets_predictions_of_the_demo_model(app, demo_engine: Engine):
    app.selectbox(key="sample_index").set_value(3)
    app.run()
    assert not app.exception
    assert app.get("plotly_chart"), "the top-5 bar chart is missing"
    expected = demo_engine.predict(sample(SAMPLE_SEED_START + 3)[0], k=1)[0]
    assert expected.label in _top1_text(app)
    assert any("device: `cpu`" in c.value for c in app.caption)


def test_garbage_upload_shows_an_error_and_the_app_keeps_working(app, demo_engine: Engine):
    app.file_uploader(key="image_upload").set_value(("holiday.jpg", b"this is not an image", "image/jpeg"))
    app.run()
    assert not app.exception
    assert any("not an image" in e.value for e in app.error), [e.value for e in app.error]
    assert app.get("plotly_chart")  # the sample image is still analysed

    image, labels, _ = sample(SAMPLE_SEED_START + 7)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    app.file_uploader(key="image_upload").set_value(("shape.png", buffer.getvalue(), "image/png"))
    app.run()
    assert not app.exception and not app.error
    assert any(plain("shape.png") in c.value for c in app.caption)
    assert demo_engine.predict(image, k=1)[0].label in _top1_text(app)
    assert CLASSES[labels[0]] in _top1_text(app)


@pytest.fixture()
def offline(monkeypatch, tmp_path):
    """No network and an empty TORCH_HOME: pretrained downloads fail as they do offline, and the
    download server does not answer the availability probe."""
    import urllib.error

    import torchvision.models._api as api

    from cnnvis_core import zoo

    def refuse(*args, **kwargs):
        raise urllib.error.URLError("offline (test)")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(api, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(zoo, "download_reachable", lambda *args, **kwargs: False)


def test_torchvision_offline_starts_with_random_weights_and_says_why_before_any_load(app, offline):
    """Pretrained weights that are neither cached nor downloadable: the toggle starts off (random
    weights work), and turning it on says so at once, in the sidebar's words, without a load."""
    app.radio(key="model_source").set_value("torchvision architecture")
    app.run()
    app.selectbox(key="arch").set_value("mobilenet_v3_small")
    app.run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    assert app.toggle(key="pretrained").value is False
    assert any("not in the cache" in c.value for c in app.sidebar.caption), [c.value for c in app.sidebar.caption]
    assert app.get("plotly_chart")
    assert any("random weights" in c.value for c in app.caption)

    app.toggle(key="pretrained").set_value(True)
    app.run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    warnings = [w.value for w in app.warning]
    assert any("mobilenet_v3_small" in w and "turn off *Pretrained weights*" in w for w in warnings), warnings
    assert not any("weights=None" in w for w in warnings), warnings
    assert not any("Choose a model" in i.value for i in app.info)  # the page says why, not "choose"


def _weights_upload(app: AppTest, name: str, data: bytes) -> None:
    app.radio(key="model_source").set_value("Weights file")
    app.run()
    app.selectbox(key="arch").set_value("squeezenet1_0")
    app.run()
    app.file_uploader(key="weights_file").set_value((name, data, "application/octet-stream"))
    app.run()


def test_uploaded_weights_file_is_used_and_a_malicious_pickle_is_refused(app, tmp_path):
    import pathlib

    import torch
    import torchvision

    model = torchvision.models.squeezenet1_0(num_classes=5)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    _weights_upload(app, "five_classes.pth", buffer.getvalue())
    assert not app.exception and not app.error
    assert "class " in _top1_text(app)  # a 5-class head: generic class names
    assert any(plain("five_classes.pth") in c.value for c in app.caption)

    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (pathlib.Path.touch, (marker,))

    evil = io.BytesIO()
    torch.save({"fc.weight": Exploit()}, evil)
    app.file_uploader(key="weights_file").set_value(("evil.pth", evil.getvalue(), "application/octet-stream"))
    app.run()
    assert not app.exception
    assert any("not executed" in e.value.lower() or "refused" in e.value.lower() for e in app.error), \
        [e.value for e in app.error]
    assert not marker.exists()


@pytest.mark.parametrize("page", ["pages/layers.py", "pages/kernels.py", "pages/dead.py", "pages/cam.py",
                                  "pages/optimize.py", "pages/jobs.py"])
def test_a_page_requested_before_the_navigation_ran_still_gets_the_frame(app, page):
    """AppTest runs every request as a fresh server would, where a page asked for by URL runs alone
    until app.py has called st.navigation (see tests/apptest_helpers.py): the page must still show
    app.py's sidebar, with the model chosen, and its own header once."""
    app.switch_page(page).run()
    assert not app.exception, app.exception
    assert [t.value for t in app.sidebar.title] == ["cnnvis"]
    assert any("Demo model" in str(w.value) for w in app.sidebar.radio), [w.value for w in app.sidebar.radio]
    assert len(app.header) == 1, [h.value for h in app.header]


def test_each_run_of_the_app_takes_a_turn_and_gives_it_back(app, monkeypatch):
    """Page runs are admitted in turn (``cnnvis_core.priority.PAGE_TURNS``), and a run that waited
    its whole patience still draws its page."""
    from cnnvis_core import priority

    class Counting(priority.Turns):
        taken = 0

        def _admit(self) -> float:
            Counting.taken += 1
            return super()._admit()

    turns = Counting(slots=1, patience=0.2)
    monkeypatch.setattr(priority, "PAGE_TURNS", turns)
    app.run()
    assert Counting.taken == 1 and turns.running() == 0
    with turns.turn():  # another session's run holds the only slot
        app.selectbox(key="sample_index").set_value(2)
        app.run()
    assert Counting.taken == 3 and turns.running() == 0  # the other session's turn, and the app's
    assert not app.exception and app.get("plotly_chart")
