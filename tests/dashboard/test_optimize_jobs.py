"""Optimisation runs on a shared server: capped in size, split into batches, queued for a slot,
shared by the sessions that ask for the same run, and stopped once nobody watches them."""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest

from cnnvis_core import Engine, InputError
from cnnvis_core.optimize.cache import results_cache
from dashboard import optimize as view


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine.demo(device="cpu")


def _request(units, steps: int, size: int = 16, seed: int = 0) -> view.Request:
    overrides = (("steps", steps), ("size", size), ("jitter", 0))
    return view.Request("features.relu2", tuple(units), "channel", "lucid", overrides, seed, None, "demo")


@pytest.fixture
def fresh(engine, monkeypatch):
    """No cached images, one slot, this test's own queue and registry of runs."""
    results_cache(engine).clear()
    monkeypatch.setattr(view, "SLOTS_IN_USE", view.Slots(1))
    monkeypatch.setattr(view, "_RUNNING", {})
    yield
    for job in list(view._RUNNING.values()):
        job.cancel()
        job.wait(10)


def test_a_run_over_the_budget_is_refused_with_its_numbers(engine, monkeypatch, fresh):
    monkeypatch.setattr(view, "st", SimpleNamespace(session_state={}))
    request = _request(range(8), steps=100, size=64)
    assert request.work(engine) == 8 * 100 * 64 * 64
    monkeypatch.setattr(view, "WORK_BUDGET", 8 * 100 * 64 * 64 - 1)
    with pytest.raises(InputError, match="3,276,800 pixel-steps; this server allows 3,276,799"):
        view.start_job(engine, request)


def test_units_run_in_batches_of_bounded_pixels_and_come_back_in_order(engine, monkeypatch, fresh):
    monkeypatch.setattr(view, "BATCH_PIXELS", 3 * 16 * 16)  # three 16-px units per batch
    request = _request([5, 1, 7, 2, 9, 0, 3], steps=3)
    assert request.batches(engine) == [(5, 1, 7), (2, 9, 0), (3,)]
    totals = []
    job = view.Job(request)
    record = job._on_step
    job._on_step = lambda step, total, preview: (totals.append(job.progress()[1]), record(step, total, preview))[1]
    job.start(engine)
    assert job.wait(60) and job.error is None
    assert job.result.units == (5, 1, 7, 2, 9, 0, 3) and len(job.result.images) == 7
    assert job.total == 9 and job.step == 9, "the progress counts the steps of every batch"
    # each image equals the same unit optimised on its own (a batch's items do not interact)
    results_cache(engine).clear()
    alone = engine.optimize("features.relu2", [9], "channel", seed=0, preset="lucid", steps=3, size=16, jitter=0)
    np.testing.assert_array_equal(alone.images[0], job.result.images[4])


def test_a_run_nobody_polls_stops_by_itself(engine, monkeypatch, fresh):
    monkeypatch.setattr(view, "ABANDON_SECONDS", 0.5)
    job = view.Job(_request(range(4), steps=100_000)).start(engine, "tab")
    started = time.monotonic()
    assert job.wait(30), "an abandoned run kept going"
    assert time.monotonic() - started < 10 and job.result.cancelled and job.result.steps_done < 100_000


def test_a_second_run_waits_for_the_slot_and_a_cancelled_waiter_leaves_the_queue(engine, fresh):
    first = view.Job(_request([0], steps=100_000)).start(engine, "a")
    second = view.Job(_request([1], steps=2)).start(engine, "b")
    third = view.Job(_request([2], steps=2)).start(engine, "c")
    deadline = time.monotonic() + 30
    while first.progress()[0] < 2 and time.monotonic() < deadline:
        first.seen("a")
        time.sleep(0.05)
    assert second.status().startswith("Waiting for a free slot: 1 run ahead"), second.status()
    assert third.status().startswith("Waiting for a free slot: 2 runs ahead"), third.status()
    assert second.progress()[0] == 0 and not second.done
    second.cancel(watcher="b")
    assert second.wait(5) and second.result is None and "cancelled before it started" in second.error
    assert third.status().startswith("Waiting for a free slot: 1 run ahead"), third.status()
    first.cancel(watcher="a")
    assert first.wait(10) and first.result.cancelled
    third.seen("c")
    assert third.wait(30) and third.error is None and third.result.units == (2,)


def test_sessions_asking_for_the_same_run_share_it_until_the_last_one_cancels(engine, monkeypatch, fresh):
    sessions = {"a": {}, "b": {}, "c": {}}
    who = ["a"]
    monkeypatch.setattr(view, "session_id", lambda: who[0])
    monkeypatch.setattr(view, "st", SimpleNamespace(session_state=None))

    def as_session(name: str):
        who[0] = name
        view.st.session_state = sessions[name]

    request = _request(range(3), steps=100_000)
    as_session("a")
    job = view.start_job(engine, request, "demo-key")
    as_session("b")
    assert view.start_job(engine, request, "demo-key") is job, "the same run was started twice"
    as_session("c")
    other = view.start_job(engine, _request(range(3), steps=100_000, seed=1), "demo-key")
    assert other is not job
    view.cancel_job(other)
    as_session("a")
    view.cancel_job(job)
    assert not job.done and view.JOB_KEY not in sessions["a"], "one watcher's cancel stopped everyone's run"
    as_session("b")
    view.cancel_job(job)
    assert job.wait(10) and job.result.cancelled
