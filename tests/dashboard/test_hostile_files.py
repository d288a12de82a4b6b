"""Hostile files through the sidebar's uploaders (issue 16, items 7 and 10), driven with AppTest.

Each file gets a message naming it and saying why, and the next interaction works. The library's
own cases are in tests/core/test_images.py, test_zoo.py and test_loaders.py; the malicious pickle
through the sidebar is in test_app.py; the browser versions are in tests/e2e/test_hostile_files.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from cnnvis_core import images
from cnnvis_core.demo import sample
from dashboard.state import SAMPLE_SEED_START, plain
from tests.dashboard.apptest import open_app
from tests.e2e.images import SCRIPT_HTML, SCRIPT_SVG, bomb_png, png_bytes, zip_bytes

MARKDOWN_NAME = "**bold** [link](https://example.com) ![px](http://127.0.0.1:9/t.png).png"


@pytest.fixture(scope="module")
def app() -> AppTest:
    at = open_app()
    assert not at.exception, at.exception
    return at


def _errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def _upload_image(at: AppTest, name: str, data: bytes) -> None:
    at.file_uploader(key="image_upload").set_value((name, data, "image/png"))
    at.run()
    assert not at.exception, at.exception


def _next_interaction_works(at: AppTest, index: int) -> None:
    """The upload removed and a sample chosen: the page analyses it, with no message left."""
    at.file_uploader(key="image_upload").set_value(None)
    at.selectbox(key="sample_index").set_value(index)
    at.run()
    assert not at.exception and not at.error, _errors(at)
    assert at.get("plotly_chart"), "the predictions chart is missing"
    assert any(c.value.startswith(f"Sample {index + 1}\\:") for c in at.caption), [c.value for c in at.caption]


@pytest.mark.parametrize(("name", "data", "why"), [
    ("bomb.png", bomb_png(30_000, 30_000), "too large"),
    ("archive.png", zip_bytes(), "not an image"),
    ("empty.png", b"", "empty (0 bytes)"),
    ("drawing.png", SCRIPT_SVG, "not an image"),
    ("page.jpg", SCRIPT_HTML, "not an image"),
    ("huge.png", b"\0" * (150 * 2**20), "150.0 MB, over the limit of 50 MB"),
], ids=["bomb", "zip", "empty", "svg", "html", "150MB"])
def test_a_hostile_image_is_named_with_why_and_the_app_keeps_working(app, name, data, why):
    _upload_image(app, name, data)
    [message] = _errors(app)
    assert message.startswith(f"{plain(name)}: ") and why in message, message
    assert app.get("plotly_chart"), "the sample image is no longer analysed"
    _next_interaction_works(app, 2)


def test_an_image_named_with_markdown_is_shown_as_plain_text(app):
    image = sample(SAMPLE_SEED_START + 5)[0]
    _upload_image(app, MARKDOWN_NAME, png_bytes(image))
    assert not app.error, _errors(app)
    [caption] = [c.value for c in app.caption if "128×128 px" in c.value]
    assert caption == f"{plain(MARKDOWN_NAME)} · 128×128 px"
    assert "](" not in caption and "https://" not in caption  # nothing left for markdown to link
    _upload_image(app, MARKDOWN_NAME.replace(".png", " broken.png"), b"\x89PNG\r\n\x1a\n broken")
    [message] = _errors(app)
    assert message.startswith(plain(MARKDOWN_NAME.replace(".png", " broken.png")) + ": "), message
    _next_interaction_works(app, 3)


def _safetensors(arch: str) -> bytes:
    import torchvision
    from safetensors.torch import save

    model = getattr(torchvision.models, arch)()
    return save({key: value.contiguous() for key, value in model.state_dict().items()})


@pytest.mark.parametrize(("name", "make", "why"), [
    ("mobilenet.safetensors", lambda: _safetensors("mobilenet_v3_small"), "do not fit squeezenet1_0"),
    ("cut **short**.safetensors", lambda: _safetensors("squeezenet1_0")[:2_000_000], "not a readable safetensors"),
], ids=["wrong-architecture", "truncated"])
def test_a_bad_weights_file_is_named_with_why_and_the_app_keeps_working(name, make, why):
    at = open_app()
    at.radio(key="model_source").set_value("Weights file")
    at.run()
    at.selectbox(key="arch").set_value("squeezenet1_0")
    at.run()
    at.file_uploader(key="weights_file").set_value((name, make(), "application/octet-stream"))
    at.run()
    assert not at.exception, at.exception
    [message] = _errors(at)
    assert plain(name) in message and why in message, message
    assert name not in message or plain(name) == name, "the file name reached markdown unescaped"
    warnings = [w.value for w in at.warning]
    assert any("could not be loaded" in w and plain(name) in w for w in warnings), warnings  # the page says so
    at.radio(key="model_source").set_value("Demo model (offline)")
    at.run()
    assert not at.exception and not at.error, _errors(at)
    assert at.get("plotly_chart")


def test_a_150_mb_file_reaches_the_app_which_says_why_it_is_refused():
    """Streamlit refuses files over ``server.maxUploadSize`` in the browser, with its own words on
    the file's chip; a 150 MB image must stay under it, so that the app's own message names it."""
    config = (Path(__file__).resolve().parents[2] / ".streamlit" / "config.toml").read_text()
    [limit] = [int(mb) for mb in re.findall(r"^maxUploadSize\s*=\s*(\d+)", config, re.M)]
    assert limit > 150 > images.MAX_BYTES / 2**20
    at = open_app()
    [uploader] = [u for u in at.get("file_uploader") if u.proto.label == "Image"]
    assert uploader.proto.max_upload_size_mb in (0, limit)  # no lower limit of its own
    assert f"up to {images.MAX_BYTES // 2**20} MB" in uploader.proto.help


def test_download_names_of_an_upload_named_with_markdown_are_plain_file_names():
    from PIL import Image

    from dashboard import cam, layers
    from dashboard.state import ChosenImage

    chosen = ChosenImage(Image.new("RGB", (4, 4)), "upload:x", MARKDOWN_NAME)
    for stem in (chosen.stem, cam.file_stem(chosen, "gradcam++", "features.relu7"),
                 layers.file_stem(chosen, "features.relu7")):
        assert re.fullmatch(r"[A-Za-z0-9._-]+", stem), stem  # (a "/" in a name keeps only what follows it)
