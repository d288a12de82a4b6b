"""Every page registered in app.py opens from the navigation, without an exception or an error,
and leaves a screenshot."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests.e2e.browser import AppPage, import_expect

pytestmark = pytest.mark.e2e
expect = import_expect()

APP = Path(__file__).resolve().parents[2] / "app.py"


def registered_pages() -> list[tuple[str, str]]:
    """``(file, title)`` of each ``st.Page`` line of app.py."""
    pattern = re.compile(r'st\.Page\(\s*"(?P<file>[^"]+)"[^)]*?title="(?P<title>[^"]+)"')
    return [(m["file"], m["title"]) for m in pattern.finditer(APP.read_text())]


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def test_every_page_opens_from_the_navigation(app: AppPage, screenshots):
    pages = registered_pages()
    assert pages and pages[0][1] == "Predictions", pages
    if len(pages) > 1:  # Streamlit hides the navigation when there is a single page
        assert app.nav_links() == [title for _, title in pages]
    for file, title in pages:
        if len(pages) > 1:
            app.go_to(title)
        expect(app.main().get_by_role("heading", name=title)).to_be_visible()
        assert app.errors() == [], f"{title} shows errors with the default choices: {app.errors()}"
        expected_path = "" if file == pages[0][0] else Path(file).stem  # the default page lives at /
        assert urlparse(app.page.url).path.strip("/") == expected_path, app.page.url
        app.screenshot(screenshots, f"page-{slug(title)}")


def test_a_page_url_opened_first_on_a_fresh_server_shows_the_page_in_the_frame(browser, screenshots):
    """Streamlit reads a ``pages/`` folder as the old file-based page list until ``st.navigation``
    has run once; a bookmark to a page, opened first after a (re)start, must still get app.py's
    sidebar (model and image) and navigation, not the bare page file."""
    from tests.e2e.browser import RUN_COUNTER_JS, UI_TIMEOUT_MS
    from tests.e2e.conftest import VIEWPORT, running_server

    with running_server("e2e-streamlit-cold.log") as url:
        context = browser.new_context(viewport=VIEWPORT)
        context.set_default_timeout(UI_TIMEOUT_MS)
        context.add_init_script(RUN_COUNTER_JS)
        try:
            app = AppPage(context.new_page(), url).open("layers")
            page = app.page
            expect(app.main().get_by_role("heading", name="Layer browser")).to_be_visible()
            expect(app.sidebar().get_by_text("Demo model (DemoNet, shapes)")).to_be_visible()
            assert app.nav_links() == [title for _, title in registered_pages()]
            assert urlparse(page.url).path.strip("/") == "layers", page.url
            app.assert_no_exception()
            app.screenshot(screenshots, "page-opened-first-by-url")
        finally:
            context.close()
