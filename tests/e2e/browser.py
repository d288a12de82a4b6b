"""Driving the dashboard in a browser page the way a person does, through stable handles only.

Handles used: widget labels (``aria-label`` of inputs, the label text of uploaders), ``data-testid``
attributes (``stImage``, ``stSelectbox``, ``stSlider``…) and visible text — never CSS classes.

Waiting: Streamlit marks its root element with ``data-test-script-state`` (``running`` while the
script runs, ``notRunning`` once it is done). An init script counts the times that attribute
returns to ``notRunning``, so :meth:`AppPage.act` can wait for the run that an action triggered
to finish, instead of sleeping and instead of mistaking the state *before* the run for its end;
it also waits for the placeholders (``stSkeleton``) of widgets whose code loads lazily to go.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from PIL import Image

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

#: generous but bounded waits (ms): the CPU is shared and a first run loads the model
RUN_TIMEOUT_MS = 120_000
UI_TIMEOUT_MS = 30_000
#: how long an action's rerun may take to show up in the run counter before we fall back to idle
RERUN_SEEN_MS = 10_000

try:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
except ImportError:  # import_expect skips the tests (or fails them under CI)
    PlaywrightTimeout = TimeoutError

#: counts finished script runs (see module docstring); runs before any page script
RUN_COUNTER_JS = """
(() => {
  window.__cnnvisRunsDone = 0;
  new MutationObserver(records => {
    for (const r of records) {
      if (r.target.getAttribute('data-test-script-state') === 'notRunning' && r.oldValue !== 'notRunning') {
        window.__cnnvisRunsDone += 1;
      }
    }
  }).observe(document, {subtree: true, attributes: true, attributeOldValue: true,
                        attributeFilter: ['data-test-script-state']});
})();
"""

IDLE_JS = """
(before) => {
  const app = document.querySelector('[data-testid="stApp"]');
  return !!app && window.__cnnvisRunsDone > before
      && app.getAttribute('data-test-script-state') === 'notRunning'
      && app.getAttribute('data-test-connection-state') === 'CONNECTED'
      && !document.querySelector('[data-testid="stSkeleton"]');  // lazily loaded widgets drawn
}
"""

_PASSES = re.compile(r"Model passes so far \(all sessions\): (\d+) forward · (\d+) backward")


def import_expect():
    """Playwright's ``expect``; without the package the calling test module is skipped, or fails
    under CI (the ``CI`` variable set), where the browser tests must run."""
    try:
        from playwright.sync_api import expect
    except ImportError:
        if os.environ.get("CI"):
            return None  # the chromium_ready fixture fails each test, saying why
        pytest.skip("the Python package playwright is missing: python3 -m pip install -r requirements-dev.txt",
                    allow_module_level=True)
    return expect


class AppPage:
    """One browser tab on the dashboard."""

    def __init__(self, page: Page, base_url: str) -> None:
        self.page = page
        self.base_url = base_url.rstrip("/")

    # -- runs ------------------------------------------------------------------------------
    def runs_done(self) -> int:
        return int(self.page.evaluate("window.__cnnvisRunsDone || 0"))

    def wait_for_run(self, after: int, timeout_ms: int = RUN_TIMEOUT_MS) -> None:
        """Wait until a run that finished after the count ``after`` leaves the app idle."""
        # poll on a timer: the default (requestAnimationFrame) can stall for good in headless
        # Chromium after a large image is drawn and removed, and the wait then never ends
        self.page.wait_for_function(IDLE_JS, arg=after, timeout=timeout_ms, polling=100)
        self.assert_no_exception()

    def wait_idle(self, timeout_ms: int = RUN_TIMEOUT_MS) -> None:
        """Wait until no run is going on (at least one run has ended since the page loaded)."""
        self.wait_for_run(0, timeout_ms)

    def act(self, action: Callable[[], object], timeout_ms: int = RUN_TIMEOUT_MS) -> None:
        """Do ``action`` (which makes Streamlit rerun) and wait for that rerun to end."""
        before = self.runs_done()
        action()
        try:
            self.wait_for_run(before, min(timeout_ms, RERUN_SEEN_MS))
        except PlaywrightTimeout:
            # A rerun that is over within one frame (everything cached) may never show the
            # "running" state, so the counter misses it: then wait for an idle app and let the
            # test's own expectations (which retry) check what the page shows.
            self.wait_idle(timeout_ms)

    def open(self, path: str = "") -> AppPage:
        """Load the app (a fresh session) at ``path`` and wait for its first run to end."""
        self.page.goto(f"{self.base_url}/{path.lstrip('/')}")
        self.wait_for_run(0)
        return self

    def rerun(self) -> None:
        """A full rerun, as the keyboard shortcut R does (focus off any input first)."""
        def press() -> None:
            self.page.evaluate("document.activeElement && document.activeElement.blur()")
            self.page.keyboard.press("r")
        self.act(press)

    def assert_no_exception(self) -> None:
        errors = self.page.get_by_test_id("stException")
        assert errors.count() == 0, f"the page shows an exception: {errors.first.inner_text()[:500]}"

    # -- navigation and widgets -------------------------------------------------------------
    def nav_links(self) -> list[str]:
        """The titles of the pages listed in the app's navigation, at the top of the page (empty
        with a single page)."""
        links = self.page.get_by_test_id("stTopNav").get_by_role("link")
        return [text.strip().splitlines()[-1].strip() for text in links.all_inner_texts()]  # icon first

    def go_to(self, title: str) -> None:
        """Open the page titled ``title`` through the navigation at the top."""
        link = self.page.get_by_test_id("stTopNav").get_by_role("link", name=re.compile(rf"{re.escape(title)}$"))
        self.act(link.click)

    def select(self, label: str, option: str | re.Pattern[str], search: str | None = None) -> None:
        """Pick ``option`` (its visible text) in the selectbox labelled ``label``.

        The option list is virtual (only the visible rows exist), so for long lists give
        ``search``: it is typed into the box first, as a person would, to filter the list.
        """
        box = self.page.get_by_role("combobox", name=label, exact=True)
        box.click()
        if search is not None:
            box.fill(search)
        listbox = self.page.get_by_role("listbox", name=label)
        choice = listbox.get_by_role("option", name=option, exact=isinstance(option, str))
        self.act(choice.first.click)

    def selected(self, label: str) -> str:
        return self.page.get_by_role("combobox", name=label, exact=True).input_value()

    def choose_radio(self, label: str, option: str) -> None:
        group = self.page.get_by_role("radiogroup", name=label)
        self.act(group.get_by_text(option, exact=True).click)

    def slider(self, label: str) -> Locator:
        """The range input of the slider labelled ``label`` (its accessible name repeats the label,
        so it is found by its ``aria-label``)."""
        return self.page.locator(f'[data-testid="stSlider"] input[type=range][aria-label="{label}"]')

    def nudge_slider(self, label: str, steps: int) -> None:
        """Move the slider ``label`` by ``steps`` keyboard steps (negative: left), one rerun each."""
        handle = self.slider(label)
        key = "ArrowRight" if steps > 0 else "ArrowLeft"
        for _ in range(abs(steps)):
            handle.focus()
            self.act(lambda: self.page.keyboard.press(key))

    def upload(self, label: str, name: str, data: bytes, mime: str) -> None:
        """Give the file uploader labelled ``label`` a file, as a drop or a file dialog would."""
        zone = self.page.locator(f'[data-testid="stFileUploaderDropzone"][aria-label="{label}"]')
        self.act(lambda: zone.locator("input[type=file]").set_input_files(
            {"name": name, "mimeType": mime, "buffer": data}))

    def remove_upload(self, label: str) -> None:
        """Remove the file shown in the uploader labelled ``label`` (its chip's remove button)."""
        zone = self.page.locator(f'[data-testid="stFileUploaderDropzone"][aria-label="{label}"]')
        self.act(zone.get_by_role("button", name=re.compile(r"^Remove ")).click)

    # -- reading what is shown -------------------------------------------------------------
    def main(self) -> Locator:
        return self.page.get_by_test_id("stMain")

    def sidebar(self) -> Locator:
        return self.page.get_by_test_id("stSidebar")

    def errors(self) -> list[str]:
        """The texts of the error messages on the page (sidebar included), without their icons."""
        alerts = self.page.get_by_test_id("stAlertContentError").get_by_test_id("stMarkdownContainer")
        return [t.strip() for t in alerts.all_inner_texts()]

    def top1(self) -> str:
        """The text after "Top-1:" on the Predictions page."""
        line = self.main().get_by_test_id("stMarkdownContainer").filter(
            has_text=re.compile(r"^Top-1:")).inner_text()
        return line.split(":", 1)[1].strip()

    def model_passes(self) -> tuple[int, int]:
        """The shared engine's ``(forward, backward)`` counters, as the sidebar shows them."""
        text = self.sidebar().get_by_text(_PASSES).inner_text()
        found = _PASSES.search(text)
        assert found, text
        return int(found[1]), int(found[2])

    def images(self, within: Locator | None = None) -> Locator:
        return (within or self.main()).get_by_test_id("stImage").locator("img")

    def image_srcs(self, within: Locator | None = None) -> list[str]:
        images = self.images(within)
        return [images.nth(i).get_attribute("src") or "" for i in range(images.count())]

    def image_pixels(self, image: Locator) -> Image.Image:
        """The image as the browser draws it (an element screenshot), as RGB."""
        image.scroll_into_view_if_needed()
        return Image.open(io.BytesIO(image.screenshot())).convert("RGB")

    def screenshot(self, folder: Path, name: str) -> Path:
        """The whole page as ``folder/name.png``: Streamlit scrolls inside its main area, so the
        viewport is made as tall as that area's content (up to 6000 px) for the picture."""
        path = folder / f"{name}.png"
        size = self.page.viewport_size
        tall = self.page.evaluate(
            "() => Math.max(...[...document.querySelectorAll('[data-testid=stMain], [data-testid=stSidebarContent]')]"
            ".map(e => e.scrollHeight))")
        self.page.set_viewport_size({"width": size["width"], "height": min(max(size["height"], int(tall)), 6000)})
        try:
            self.wait_idle()
            self.page.screenshot(path=str(path))
        finally:
            self.page.set_viewport_size(size)
        return path
