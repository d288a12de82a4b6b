"""Twelve sessions at once on one server: every upload ends in a run that shows its own file.

The tabs are opened, then all twelve files are given to their uploaders one right after the other
(each call returns once the browser has the file, before the server has seen it), so the uploads
and their reruns overlap on the server as a class of students' would. Each tab must then show its
own file's name and predictions — never another tab's, never nothing — and no exception box.
"""

from __future__ import annotations

import re

import pytest

from tests.e2e.browser import RUN_TIMEOUT_MS, AppPage, import_expect
from tests.e2e.images import jpeg_bytes, shape_image

pytestmark = pytest.mark.e2e
expect = import_expect()

SESSIONS = 12


def test_twelve_simultaneous_uploads_each_show_their_own_file(new_app, screenshots):
    tabs: list[AppPage] = [new_app().open() for _ in range(SESSIONS)]
    names = []
    for i, tab in enumerate(tabs):
        image, _ = shape_image(200 + i)
        name = f"class photo {i:02d}.jpg"
        names.append(name)
        zone = tab.page.locator('[data-testid="stFileUploaderDropzone"][aria-label="Image"]')
        zone.locator("input[type=file]").set_input_files(
            {"name": name, "mimeType": "image/jpeg", "buffer": jpeg_bytes(image.resize((640, 480)))})
    for i, tab in enumerate(tabs):
        caption = tab.main().get_by_text(re.compile(rf"^{re.escape(names[i])} · 640×480 px$"))
        expect(caption).to_be_visible(timeout=RUN_TIMEOUT_MS)
        expect(tab.main().get_by_test_id("stPlotlyChart")).to_be_visible(timeout=RUN_TIMEOUT_MS)
        tab.wait_idle()
        others = [n for j, n in enumerate(names) if j != i]
        shown = tab.main().inner_text()
        assert not any(n in shown for n in others), f"tab {i} shows another session's file"
        assert tab.errors() == []
    tabs[-1].screenshot(screenshots, "twelve-sessions-last-tab")
