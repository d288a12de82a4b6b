"""Background threads give way to page runs: before each model batch, on the model lock, and in
CPU priority (their own only)."""

import os
import sys
import threading
import time

import pytest

from cnnvis_core.core import ModelLock
from cnnvis_core.priority import (
    BACKGROUND_NICENESS,
    GIVE_WAY_S,
    QUIET_S,
    foreground,
    give_way,
    lower_this_thread,
    pages_running,
    quick_handover,
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread niceness is Linux's")


def _niceness() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def test_a_thread_lowers_its_own_priority_and_the_threads_it_starts_inherit_it():
    before = _niceness()
    seen: dict[str, int | bool] = {}

    def child() -> None:
        seen["child"] = _niceness()

    def worker() -> None:
        seen["lowered"] = lower_this_thread()
        seen["worker"] = _niceness()
        inner = threading.Thread(target=child)
        inner.start()
        inner.join()

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen["lowered"] is True
    assert seen["worker"] == max(before, BACKGROUND_NICENESS)
    assert seen["child"] == seen["worker"], "a thread started by a background thread is background too"
    assert _niceness() == before, "the calling thread only: the process and its other threads keep theirs"


def test_a_thread_already_lower_keeps_its_niceness():
    seen: dict[str, int] = {}

    def worker() -> None:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 15)
        lower_this_thread(10)
        seen["after"] = _niceness()

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen["after"] == 15


def _in_background(work, *args) -> threading.Thread:
    """Run ``work(*args)`` in a new thread that made itself a background thread."""

    def run() -> None:
        lower_this_thread()
        work(*args)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_a_background_batch_waits_for_the_page_being_drawn_then_runs():
    lock, took = ModelLock(), []

    def batch() -> None:
        with lock.hold():  # a background thread's hold: no need to say background=True
            took.append(time.monotonic())

    with foreground():
        started = time.monotonic()
        thread = _in_background(batch)
        time.sleep(0.1)
        assert not took, "a background batch started while a page was being drawn"
    thread.join()
    assert 0.09 <= took[0] - started < GIVE_WAY_S + 0.2


def test_a_background_batch_waits_a_moment_after_the_last_page_then_runs_at_once():
    lock, took = ModelLock(), []

    def batch() -> None:
        with lock.hold():
            took.append(time.monotonic())

    with foreground():
        pass
    ended = time.monotonic()
    _in_background(batch).join()
    assert QUIET_S - 0.02 <= took[0] - ended < QUIET_S + 0.1, "the page's pictures are still being sent"
    took.clear()
    time.sleep(QUIET_S)
    started = time.monotonic()
    _in_background(batch).join()
    assert took[0] - started < 0.05, "nothing to give way to: the batch runs at once"


def test_pages_without_end_hold_a_background_job_back_by_the_give_way_limit_only():
    lock, took = ModelLock(), []

    def batches() -> None:
        for _ in range(3):
            with lock.hold():
                took.append(time.monotonic())

    with foreground():  # a page that never ends, or one after another without a gap
        started = time.monotonic()
        _in_background(batches).join(timeout=5)
    assert len(took) == 3, "the job starved"
    assert GIVE_WAY_S * 3 - 0.05 <= took[-1] - started < GIVE_WAY_S * 3 + 0.5


def test_a_page_thread_never_waits_for_pages_not_even_its_own():
    with foreground():
        assert pages_running() == 1
        started = time.monotonic()
        assert give_way() == 0.0
        with ModelLock().hold(background=True):  # e.g. a Score-CAM's batch computed by the page itself
            pass
        assert time.monotonic() - started < 0.05
    assert pages_running() == 0


def _quick_call_against_a_background_thread() -> list[str]:
    """A background thread holds the lock, a quick call waits for it, the thread releases and at
    once asks again: who got the lock first after the release."""
    lock, order, holding, release = ModelLock(), [], threading.Event(), threading.Event()

    def job() -> None:
        with lock.hold():  # the batch in progress
            holding.set()
            release.wait()
        with lock.hold():  # the next batch, asked for at once
            order.append("batch")

    def quick() -> None:
        with lock.hold():
            order.append("quick")

    thread = _in_background(job)
    holding.wait()
    caller = threading.Thread(target=quick)
    caller.start()
    time.sleep(0.05)
    release.set()
    thread.join()
    caller.join()
    return order


def test_a_quick_call_goes_ahead_of_a_background_threads_next_batch():
    """Without ``background=True``: a background thread's holds are background batches."""
    for trial in range(5):
        assert _quick_call_against_a_background_thread() == ["quick", "batch"], trial


def test_quick_handover_sets_the_interpreters_switch_interval():
    before = sys.getswitchinterval()
    try:
        quick_handover()
        assert sys.getswitchinterval() == pytest.approx(0.001)
        assert sys.getswitchinterval() < before or before <= 0.001
    finally:
        sys.setswitchinterval(before)
