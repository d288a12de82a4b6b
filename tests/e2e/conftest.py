"""Fixtures of the browser tests: one Streamlit server and one headless Chromium per test session.

The server is ``streamlit run app.py`` on a free localhost port, started once and killed at the end
(also when a test fails or the session is interrupted). The browser is Debian's ``/usr/bin/chromium``
driven by the Python ``playwright`` package (``bash dev/install-browser.sh`` installs it; no
``playwright install``). Each test gets its own browser context, i.e. its own Streamlit session.

Without a browser the tests skip, saying why — except when the ``CI`` variable is set: there a
missing browser is a failure. Screenshots go to ``out/screenshots/`` (emptied at the start of the
run); its absolute path is printed in the run's *cnnvis figures* section.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import REPORT
from tests.e2e.browser import RUN_COUNTER_JS, UI_TIMEOUT_MS, AppPage

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "out"
SCREENSHOTS = OUT / "screenshots"
CHROMIUM = Path(os.environ.get("CNNVIS_CHROMIUM", "/usr/bin/chromium"))
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync"]
SERVER_START_TIMEOUT_S = 90
VIEWPORT = {"width": 1400, "height": 900}


def _missing_browser() -> str | None:
    """Why the browser tests cannot run here, or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the Python package playwright is missing: python3 -m pip install -r requirements-dev.txt"
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing: run `bash dev/install-browser.sh` (or sudo apt-get install chromium)"
    return None


@pytest.fixture(scope="session")
def chromium_ready() -> None:
    reason = _missing_browser()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"browser tests cannot run in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as answer:
            return answer.status == 200 and answer.read().strip() == b"ok"
    except OSError:
        return False


def _stop(server: subprocess.Popen) -> None:
    if server.poll() is None:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=15)


@contextmanager
def running_server(log_name: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """``streamlit run app.py`` on a free port until the block ends: yields its URL once healthy
    (no page has run yet); its log is ``out/<log_name>``; ``env``: variables to add (e.g. its
    results folder, ``CNNVIS_RESULTS``)."""
    OUT.mkdir(exist_ok=True)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = OUT / log_name
    command = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
               "--server.headless", "true", "--server.address", "127.0.0.1",
               "--browser.gatherUsageStats", "false",
               "--server.fileWatcherType", "none"]  # others may edit files during the run
    started = time.monotonic()
    with open(log_path, "wb") as log:
        server = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                  env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    try:
        while not _healthy(url):
            if server.poll() is not None or time.monotonic() - started > SERVER_START_TIMEOUT_S:
                why = (f"exited with code {server.returncode}" if server.poll() is not None
                       else f"not healthy after {SERVER_START_TIMEOUT_S} s")
                pytest.fail(f"streamlit server {why}; its log ({log_path}):\n"
                            f"{log_path.read_text(errors='replace')[-4000:]}", pytrace=False)
            time.sleep(0.25)
        REPORT[f"e2e server start ({log_name})"] = f"{time.monotonic() - started:.1f} s ({url})"
        yield url
    finally:
        _stop(server)


@pytest.fixture(scope="session")
def results_root(tmp_path_factory) -> Path:
    """The results folder of the tests' server (its jobs and uploaded archives; never the repository's)."""
    return tmp_path_factory.mktemp("e2e-results")


@pytest.fixture(scope="session")
def app_url(chromium_ready, results_root) -> Iterator[str]:
    """The URL of a freshly started dashboard shared by the tests; its log is ``out/e2e-streamlit.log``."""
    with running_server("e2e-streamlit.log", {"CNNVIS_RESULTS": str(results_root)}) as url:
        yield url


@pytest.fixture(scope="session")
def browser(chromium_ready):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="session")
def screenshots(chromium_ready) -> Path:
    """The folder for this run's screenshots (emptied first)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for old in SCREENSHOTS.glob("*.png"):
        old.unlink()
    REPORT["e2e screenshots"] = str(SCREENSHOTS)
    return SCREENSHOTS


@pytest.fixture()
def new_app(browser, app_url):
    """A factory of fresh browser contexts (one Streamlit session each) on the dashboard."""
    contexts = []

    def make() -> AppPage:
        context = browser.new_context(viewport=VIEWPORT)
        context.set_default_timeout(UI_TIMEOUT_MS)
        context.add_init_script(RUN_COUNTER_JS)
        contexts.append(context)
        return AppPage(context.new_page(), app_url)

    yield make
    for context in contexts:
        context.close()


@pytest.fixture()
def app(new_app) -> AppPage:
    """The dashboard opened on its default page in a fresh session."""
    return new_app().open()
