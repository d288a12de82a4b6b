"""The dashboard shell, driven with Streamlit's AppTest."""

from __future__ import annotations

import io
import pytest
from streamlit.testing.v1 import AppTest

from cnnvis_core import Engine
from cnnvis_core.demo import CLASSES, sample
from dashboard.state import SAMPLE_SEED_START
from tests.apptest_helpers import open_app, rerun_default_page


@pytest.fixture()
def app() -> AppTest:
    at = open_app()
    assert not at.exception, at.exception
    return at


def _top1_text(at: AppTest) -> str:
    return next(m.value for m in at.markdown if m.value.startswith("**Top-1:**"))


def test_sample_image_gets_predictions_of_the_demo_model(app, demo_engine: Engine):
    app.selectbox(key="sample_index").set_value(3)
    rerun_default_page(app)
    assert not app.exception
    assert app.get("plotly_chart"), "the top-5 bar chart is missing"
    expected = demo_engine.predict(sample(SAMPLE_SEED_START + 3)[0], k=1)[0]
    assert expected.label in _top1_text(app)
    assert any("device: `cpu`" in c.value for c in app.caption)


def test_garbage_upload_shows_an_error_and_the_app_keeps_working(app, demo_engine: Engine):
    app.file_uploader(key="image_upload").set_value(("holiday.jpg", b"this is not an image", "image/jpeg"))
    rerun_default_page(app)
    assert not app.exception
    assert any("not an image" in e.value for e in app.error), [e.value for e in app.error]
    assert app.get("plotly_chart")  # the sample image is still analysed

    image, labels, _ = sample(SAMPLE_SEED_START + 7)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    app.file_uploader(key="image_upload").set_value(("shape.png", buffer.getvalue(), "image/png"))
    rerun_default_page(app)
    assert not app.exception and not app.error
    assert any("shape.png" in c.value for c in app.caption)
    assert demo_engine.predict(image, k=1)[0].label in _top1_text(app)
    assert CLASSES[labels[0]] in _top1_text(app)
