"""Helpers for driving the dashboard with Streamlit's AppTest.

AppTest starts every run as a fresh server would: a page requested by its script hash first
runs alone, as Streamlit's old ``pages/`` folder convention has it, until ``app.py`` has called
``st.navigation``. Each page's first call, ``dashboard.state.require_frame()``, then runs
``app.py`` in its place, so the element tree holds the sidebar the navigation frame writes, as
the browser shows it.
"""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[2] / "app.py")


def open_app(timeout: float = 120) -> AppTest:
    """The dashboard after its first run."""
    at = AppTest.from_file(APP, default_timeout=timeout)
    at.run()
    return at
