"""The filter-optimisation page, driven with AppTest: a tiny run, its progress, images, cancel, errors."""

from __future__ import annotations

import time

import pytest
from streamlit.testing.v1 import AppTest

from tests.dashboard.apptest import open_app

PAGE = "pages/optimize.py"


@pytest.fixture()
def page() -> AppTest:
    at = open_app()
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    return at


def _settings(at: AppTest, steps: int, size: int = 32) -> None:
    at.number_input(key="opt_steps_lucid").set_value(steps)
    at.number_input(key="opt_size_lucid").set_value(size)


def _finish(at: AppTest, timeout: float = 120):
    job = at.session_state["_optimize_job"]
    assert job.wait(timeout), "the optimisation did not finish"
    at.run()
    assert not at.exception, at.exception
    return job


def test_a_tiny_run_shows_progress_then_the_images(page):
    page.radio(key="opt_mode").set_value("List").run()
    page.text_input(key="opt_list").set_value("0-2")
    _settings(page, steps=4)
    page.run()
    engine = page.session_state["_engine"]
    before = engine.counters.snapshot()
    page.button(key="opt_run").click().run()
    assert not page.exception, page.exception
    assert page.get("progress"), "no progress bar while the run starts"
    job = _finish(page)
    assert job.result is not None and job.result.units == (0, 1, 2) and not job.result.cancelled
    images = page.get("image")
    assert len(images) == 3
    captions = [c for image in images for c in image.captions]
    assert [c.split(" ·")[0] for c in captions] == ["channel 0", "channel 1", "channel 2"]
    assert all("activation" in c for c in captions)
    assert any("Done: 4 steps" in (p.proto.text or "") for p in page.get("progress"))
    after = engine.counters.snapshot()
    assert after[1] - before[1] == 4  # one backward pass per step, the whole batch at once
    assert job.zip()[:2] == b"PK" and job.png(0)[:4] == b"\x89PNG"

    page.button(key="opt_run").click().run()  # the same request again: from the engine's cache
    job = _finish(page)
    assert job.result.cached == 3 and engine.counters.snapshot()[1] == after[1]


def test_class_objective_runs_every_class(page):
    page.radio(key="opt_kind").set_value("class").run()
    page.radio(key="opt_mode").set_value(page.radio(key="opt_mode").options[-1])
    _settings(page, steps=2)
    page.run()
    page.button(key="opt_run").click().run()
    job = _finish(page)
    assert len(job.result.units) == 8 and len(page.get("image")) == 8
    assert any("class 0:" in c for image in page.get("image") for c in image.captions)


def test_cancel_stops_the_run_and_keeps_the_images_so_far(page):
    _settings(page, steps=4000)
    page.run()
    page.button(key="opt_run").click().run()
    assert any((p.proto.text or "").startswith(("Step ", "Starting")) for p in page.get("progress"))  # running
    job = page.session_state["_optimize_job"]
    deadline = time.monotonic() + 60
    while job.progress()[0] < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    page.run()  # what the page's timer does: the bar moves, the preview shows the images so far
    steps = [int(t.split()[1]) for t in (p.proto.text or "" for p in page.get("progress")) if t.startswith("Step ")]
    assert steps and steps[0] >= 2
    previews = [image for image in page.get("image") if "channel 0" in image.captions]
    assert previews, "no live preview during the run"
    page.button(key="opt_cancel").click().run()
    job = _finish(page)
    assert job.result.cancelled and job.result.steps_done < 4000
    assert len(page.get("image")) == 1
    assert any("Cancelled after" in (p.proto.text or "") for p in page.get("progress"))


def test_an_unreadable_unit_list_shows_an_error(page):
    page.radio(key="opt_mode").set_value("List").run()
    page.text_input(key="opt_list").set_value("0, 999")
    page.run()
    assert not page.exception
    assert any("999" in e.value for e in page.error), [e.value for e in page.error]
