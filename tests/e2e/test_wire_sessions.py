"""Twelve sessions at once over Streamlit's wire protocol, no browser (``tests/e2e/wire.py``, the
client of ``bench/load_server.py``): it drives the real server as a browser does, and at once nothing
crosses between the sessions and no run fails."""

from __future__ import annotations

import asyncio
import io
import threading

from cnnvis_core.cam import TITLES
from cnnvis_core.demo import HELD_OUT_SEED_START, sample
from tests.e2e.wire import Counts, WireSession

SESSIONS = 12


def _jpeg(i: int) -> bytes:
    buffer = io.BytesIO()
    sample(HELD_OUT_SEED_START + 40_000_000 + i)[0].resize((320 + 16 * i, 240)).save(buffer, "JPEG")
    return buffer.getvalue()


def _shown_names(session: WireSession, names: list[str]) -> set[str]:
    """Which of ``names`` the session's last run shows (its texts are markdown-escaped)."""
    text = " ".join(t.replace("\\", "") for t in session.run.texts)
    return {name for name in names if name in text}


async def _scenario(url: str) -> None:
    counts = Counts()
    sessions = [WireSession(url, counts) for _ in range(SESSIONS)]
    await asyncio.gather(*(s.open() for s in sessions))
    names = [f"wire session {i:02d}.jpg" for i in range(SESSIONS)]
    took = await asyncio.gather(*(s.upload("Image", name, _jpeg(i)) for i, (s, name) in
                                  enumerate(zip(sessions, names))))
    assert None not in took, f"uploads lost: {[n for n, t in zip(names, took) if t is None]}"
    for session, name in zip(sessions, names):
        assert _shown_names(session, names) == {name}, "a session shows another session's file"
    await asyncio.gather(*(s.go_to("Class activation maps") for s in sessions))
    await asyncio.gather(*(s.set("selectbox", "Method", TITLES["gradcam++"]) for s in sessions))
    for session in sessions:
        assert any(url.endswith(".jpg") for url in session.run.media), "no overlay shown"
    await asyncio.gather(*(s.set("slider", "Opacity of the map", 0.8) for s in sessions))
    assert counts.exceptions == 0 and counts.failed_media == 0, counts
    await asyncio.gather(*(s.close() for s in sessions))


def _run_in_own_loop(coroutine) -> None:
    """Run ``coroutine`` to its end in a thread of its own: the browser tests' Playwright keeps an
    event loop running in this one, where ``asyncio.run`` is refused."""
    failure: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(asyncio.wait_for(coroutine, 300))
        except BaseException as error:  # noqa: BLE001 - re-raised in the test's thread
            failure.append(error)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


def test_twelve_wire_sessions_upload_at_once_and_each_sees_only_its_own_file(app_url):
    _run_in_own_loop(_scenario(app_url))
