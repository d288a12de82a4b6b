"""Helpers of the AppTest tests of issue 13's CAM and optimisation pages: open a page, run it
without an exception or an error message, and see the names of the files it offers."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from tests.dashboard.apptest import open_app


def open_page(page: str) -> AppTest:
    """The dashboard on ``page`` (``pages/cam.py``) after its first run there."""
    at = open_app()
    at.switch_page(page)
    return ok(at)


def away_and_back(at: AppTest, page: str) -> AppTest:
    """Show another page (Predictions), then ``page`` again, as a person going there and back."""
    for shown in ("pages/predictions.py", page):
        at.switch_page(shown)
        ok(at)
    return at


def ok(at: AppTest) -> AppTest:
    """Run, and check that the page shows no exception and no error message."""
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    return at


def record_file_names(monkeypatch) -> list[str]:
    """The names of the files the pages offer from now on (download buttons, deferred or not),
    in the order they were drawn: Streamlit's media file manager receives every one."""
    from streamlit.runtime.media_file_manager import MediaFileManager

    names: list[str] = []
    for method in ("add", "add_deferred"):
        original = getattr(MediaFileManager, method)

        def recording(self, data, mimetype, coordinates, file_name=None, *args, _original=original, **kwargs):
            if file_name:
                names.append(file_name)
            return _original(self, data, mimetype, coordinates, file_name, *args, **kwargs)

        monkeypatch.setattr(MediaFileManager, method, recording)
    return names
