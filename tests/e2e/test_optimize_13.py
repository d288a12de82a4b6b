"""Filter optimisation in a real browser (issue 13): a job started from the page runs at about the
engine's own speed (the page's polling and the server's garbage collection used to starve it: 7× and
more), and Cancel acts within about a second. The figures go to the run's summary; bench/dashboard.py
measures the same with more rounds."""

from __future__ import annotations

import re
import time

import pytest

from bench.dashboard import DONE, LAYER, UNITS, open_optimisation, set_number
from bench.timing import timed
from cnnvis_core.optimize.cache import results_cache
from tests.conftest import REPORT
from tests.e2e.browser import RUN_TIMEOUT_MS, UI_TIMEOUT_MS, AppPage, import_expect

pytestmark = pytest.mark.e2e
expect = import_expect()

STEPS = 64


def test_a_job_runs_at_the_engine_s_speed_and_cancel_acts_within_a_second(app: AppPage, demo_engine, screenshots):
    app.go_to("Filter optimisation")
    open_optimisation(app, STEPS, 64)  # channels 20-23 of features.relu4, as bench/dashboard.py measures them
    set_number(app, "Seed", 13)
    app.page.get_by_role("button", name=re.compile(r"^Optimise 4 image")).click()
    done = app.main().get_by_text(DONE)
    expect(done).to_be_visible(timeout=RUN_TIMEOUT_MS)
    job = float(DONE.search(done.inner_text())[2])
    app.wait_idle()
    results_cache(demo_engine).clear()  # the same call in this process, run for real
    script = timed(lambda: demo_engine.optimize(LAYER, list(UNITS), "channel", seed=13, preset="lucid", steps=STEPS,
                                                size=64))
    REPORT["optimisation in the dashboard ÷ the engine in a script"] = (
        f"{job / script:.2f}× ({job:.2f} s ÷ {script:.2f} s, {STEPS} steps)")
    assert job <= 2.0 * script + 1.0, f"the dashboard's job took {job:.2f} s, the engine alone {script:.2f} s"

    set_number(app, "Steps", 4000)
    app.page.get_by_role("button", name=re.compile(r"^Optimise 4 image")).click()
    expect(app.main().get_by_test_id("stProgress").get_by_text(re.compile(r"^Step ([3-9]|\d\d+) of 4000 · "))
           ).to_be_visible(timeout=UI_TIMEOUT_MS)
    app.page.screenshot(path=str(screenshots / "optimize-running.png"))
    clicked = time.perf_counter()
    app.main().get_by_role("button", name="Cancel", exact=True).click()
    expect(app.main().get_by_text(re.compile(r"^Cancelled after \d+ of 4000 steps"))).to_be_visible()
    latency = time.perf_counter() - clicked
    REPORT["optimisation Cancel, click to 'Cancelled' in the page"] = f"{latency:.2f} s"
    # 0.3–0.8 s on a quiet machine (bench/dashboard.py); slack here for a shared one
    assert latency < 3.0, f"Cancel took {latency:.2f} s to show"
    app.wait_idle()
    app.screenshot(screenshots, "optimize-cancelled")
