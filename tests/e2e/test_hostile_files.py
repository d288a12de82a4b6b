"""Hostile files through the browser (issue 16, items 7 and 10): each gets a message naming the file,
no script or markup in it ever runs or renders, and the app keeps working.

The AppTest versions (every hostile image, both bad safetensors) are in
tests/dashboard/test_hostile_files.py; the library's cases in tests/core.
"""

from __future__ import annotations

import io
import pathlib
import re

import pytest

from tests.e2e.browser import AppPage, import_expect
from tests.e2e.images import SCRIPT_HTML, SCRIPT_SVG, bomb_png, png_bytes, shape_image, zip_bytes

pytestmark = pytest.mark.e2e
expect = import_expect()

MARKDOWN_NAME = "**bold** [link](https://example.com) ![px](http://127.0.0.1:9/t.png).png"
#: what :func:`dashboard.state.plain` puts into web addresses so that markdown cannot link them
WORD_JOINER = "\u2060"
IMAGE_DROPZONE = '[data-testid="stFileUploaderDropzone"][aria-label="Image"] input[type=file]'


def _watch_requests(app: AppPage) -> list[str]:
    """The URLs the page asks for from now on (a markdown image would be fetched)."""
    urls: list[str] = []
    app.page.on("request", lambda request: urls.append(request.url))
    return urls


def _one_error(app: AppPage) -> str:
    [message] = app.errors()
    return message.replace(WORD_JOINER, "")


def _still_works(app: AppPage, offset: int) -> None:
    """A good upload after the bad ones: its predictions are shown, with no message."""
    image, _ = shape_image(offset)
    app.upload("Image", "fine.png", png_bytes(image), "image/png")
    assert app.errors() == []
    expect(app.main().get_by_text("fine.png · 128×128 px")).to_be_visible()
    expect(app.main().get_by_test_id("stPlotlyChart")).to_be_visible()


def test_hostile_images_are_named_with_why_and_nothing_in_them_runs(app: AppPage, tmp_path, screenshots):
    requests = _watch_requests(app)
    cases = [("bomb.png", bomb_png(30_000, 30_000), "too large"), ("archive.png", zip_bytes(), "not an image"),
             ("empty.png", b"", "empty (0 bytes)"), ("drawing.png", SCRIPT_SVG, "not an image"),
             ("page.jpg", SCRIPT_HTML, "not an image")]
    for name, data, why in cases:
        app.upload("Image", name, data, "image/png")
        message = _one_error(app)
        assert message.startswith(f"{name}: ") and why in message, message
        expect(app.main().get_by_test_id("stPlotlyChart")).to_be_visible()  # the sample is still analysed
        app.remove_upload("Image")
    assert app.page.evaluate("window.__cnnvis_pwned") is None, "a script from an upload ran"
    assert not [url for url in requests if "127.0.0.1:9/" in url], "an upload made the browser fetch something"

    huge = tmp_path / "huge.png"  # 150 MB: under Streamlit's limit (200 MB), over the loader's (50 MB)
    with open(huge, "wb") as f:
        f.truncate(150 * 2**20)
    app.act(lambda: app.page.locator(IMAGE_DROPZONE).set_input_files(str(huge)))
    message = _one_error(app)
    assert message.startswith("huge.png: ") and "150.0 MB, over the limit of 50 MB" in message, message
    app.screenshot(screenshots, "hostile-150MB-upload")
    app.remove_upload("Image")
    _still_works(app, 11)


def test_a_file_name_is_text_not_markdown(new_app, screenshots):
    app = new_app()
    requests = _watch_requests(app)
    app.open()
    image, _ = shape_image(12)
    app.upload("Image", MARKDOWN_NAME, png_bytes(image), "image/png")
    caption = app.main().get_by_test_id("stCaptionContainer").filter(has_text="128×128 px")
    expect(caption).to_be_visible()
    assert caption.inner_text().replace(WORD_JOINER, "") == f"{MARKDOWN_NAME} · 128×128 px"

    app.remove_upload("Image")
    app.upload("Image", MARKDOWN_NAME, b"\x89PNG\r\n\x1a\n and then nothing", "image/png")
    assert _one_error(app).startswith(f"{MARKDOWN_NAME}: "), app.errors()

    app.go_to("Dead channels")
    app.choose_radio("Images", "My uploads")
    zone = app.page.locator('[data-testid="stFileUploaderDropzone"][aria-label="Images"] input[type=file]')
    app.act(lambda: zone.set_input_files([
        {"name": "good.png", "mimeType": "image/png", "buffer": png_bytes(shape_image(13)[0])},
        {"name": MARKDOWN_NAME, "mimeType": "image/png", "buffer": b"not an image"}]))
    warning = app.main().get_by_test_id("stAlertContentWarning").filter(has_text="Skipped")
    expect(warning).to_be_visible()
    text = warning.get_by_test_id("stMarkdownContainer").inner_text().replace(WORD_JOINER, "").strip()
    assert text.startswith(f"Skipped {MARKDOWN_NAME}: "), text
    app.screenshot(screenshots, "hostile-markdown-name")

    links = app.page.locator('a[href*="example.com"], a[href*="127.0.0.1:9"]')
    pictures = app.page.locator('img[src*="127.0.0.1:9"], img[src*="example.com"]')
    assert links.count() == 0 and pictures.count() == 0, "a file name became a link or an image"
    assert app.page.locator("strong", has_text="bold").count() == 0, "a file name became bold text"
    assert not [url for url in requests if "127.0.0.1:9/" in url], "the browser fetched an address from a file name"


def _safetensors(arch: str) -> bytes:
    import torchvision
    from safetensors.torch import save

    model = getattr(torchvision.models, arch)()
    return save({key: value.contiguous() for key, value in model.state_dict().items()})


def _evil_pth(marker: pathlib.Path) -> bytes:
    """A ``torch.save`` file whose unpickling would create ``marker``."""
    import torch

    class Exploit:
        def __reduce__(self):
            return (pathlib.Path.touch, (marker,))

    buffer = io.BytesIO()
    torch.save({"fc.weight": Exploit()}, buffer)
    return buffer.getvalue()


def test_hostile_weights_files_are_named_with_why_and_never_run(app: AppPage, tmp_path):
    marker = tmp_path / "pwned"
    app.choose_radio("Model", "Weights file")
    other = _safetensors("mobilenet_v3_small")
    cases = [("evil.pth", _evil_pth(marker), re.compile(r"refused|not executed", re.I)),
             ("mobilenet.safetensors", other, re.compile("do not fit resnet18")),
             ("cut.safetensors", other[:2_000_000], re.compile("not a readable safetensors"))]
    label = "State dict (.pth, .pt, .safetensors)"
    for name, data, why in cases:
        app.upload(label, name, data, "application/octet-stream")
        message = _one_error(app)
        assert name in message and why.search(message), message
        expect(app.main().get_by_text(re.compile(r"could not be loaded"))).to_be_visible()  # the page says so
        app.remove_upload(label)
    assert not marker.exists(), "unpickling the weights file ran its code"
    app.choose_radio("Model", "Demo model (offline)")
    assert app.errors() == []
    expect(app.main().get_by_test_id("stPlotlyChart")).to_be_visible()
