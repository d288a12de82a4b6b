"""Helpers for driving the dashboard with Streamlit's AppTest.

AppTest 1.67 quirk: after a rerun that requests a page by its script hash (which AppTest
does after the first run of an ``st.navigation`` app), the element tree no longer holds
what the navigation frame wrote into the sidebar, although the frame ran and its widgets
kept their state (checked with a three-line app; the browser shows the sidebar). Rerunning
with an empty page request runs the default page with the sidebar visible.
"""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def open_app(timeout: float = 120) -> AppTest:
    """The dashboard after its first run."""
    at = AppTest.from_file(APP, default_timeout=timeout)
    at.run()
    return at


def rerun_default_page(at: AppTest) -> AppTest:
    """Rerun on the default page with the sidebar in the element tree (see module doc)."""
    at._finished_page_script_hash = ""  # noqa: SLF001 - works around the quirk above
    at._page_hash = ""  # noqa: SLF001
    return at.run()
