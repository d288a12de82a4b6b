"""Background threads give way to page runs: before each model batch, on the model lock, and in
CPU priority (their own only)."""

import contextlib
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
    Turns,
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


def _policy(native_id: int | None = None) -> int:
    return os.sched_getscheduler(threading.get_native_id() if native_id is None else native_id)


def _idle_threads() -> set[int]:
    """Native ids of this process's threads in ``SCHED_IDLE``."""
    found = set()
    for task in os.listdir("/proc/self/task"):
        try:
            if os.sched_getscheduler(int(task)) == os.SCHED_IDLE:
                found.add(int(task))
        except OSError:  # the thread ended meanwhile
            pass
    return found


def test_a_background_thread_runs_on_spare_cpu_only_and_torchs_workers_it_starts_too():
    """``SCHED_IDLE`` for the thread and the OpenMP workers its torch calls start; the caller and
    the process's other threads keep their class."""
    torch = pytest.importorskip("torch")
    if torch.get_num_threads() < 2:
        pytest.skip("one torch thread: no OpenMP workers to inherit the class")
    before, seen, done = _policy(), {}, threading.Event()

    def worker() -> None:
        lower_this_thread()
        seen["policy"] = _policy()
        a = torch.randn(512, 512)
        for _ in range(20):  # big enough for torch to use its intra-op workers
            a = torch.tanh(a @ a)
        seen["idle"] = _idle_threads()
        seen["me"] = threading.get_native_id()
        done.wait(5)

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        while "idle" not in seen and thread.is_alive():
            time.sleep(0.01)
    finally:
        done.set()
        thread.join()
    assert seen["policy"] == os.SCHED_IDLE
    assert seen["me"] in seen["idle"]
    assert len(seen["idle"]) >= 2, "torch's workers started by the background thread inherit SCHED_IDLE"
    assert _policy() == before, "the calling thread keeps its class"
    assert threading.get_native_id() not in seen["idle"]


def test_the_nice_policy_leaves_the_scheduling_class_alone(monkeypatch):
    from cnnvis_core import priority

    monkeypatch.setattr(priority, "BACKGROUND_POLICY", "nice")
    seen = {}

    def worker() -> None:
        seen["lowered"] = lower_this_thread()
        seen["policy"], seen["nice"] = _policy(), _niceness()

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen["lowered"] and seen["nice"] >= BACKGROUND_NICENESS
    assert seen["policy"] == os.SCHED_OTHER


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


def _together(work, count: int) -> None:
    """``work()`` in ``count`` threads at once; back when all have ended."""
    threads = [threading.Thread(target=work) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _queue_behind_a_held_turn(turns: Turns, count: int, hold: float = 0.0) -> list[int]:
    """One thread holds a turn; ``count`` more ask for one, in order, 20 ms apart; the order in
    which they got it."""
    order, release = [], threading.Event()

    def first() -> None:
        with turns.turn():
            release.wait()

    def later(i: int) -> None:
        with turns.turn():
            order.append(i)
            time.sleep(hold)

    holder = threading.Thread(target=first)
    holder.start()
    while turns.running() < 1:
        time.sleep(0.001)
    threads = []
    for i in range(count):
        threads.append(threading.Thread(target=later, args=(i,)))
        threads[-1].start()
        time.sleep(0.02)
    release.set()
    for thread in [holder, *threads]:
        thread.join()
    return order


def test_page_runs_take_turns_in_the_order_they_came():
    assert _queue_behind_a_held_turn(Turns(slots=1, patience=5.0), 6) == list(range(6))


def test_no_more_page_runs_at_once_than_slots():
    turns, most, now, guard = Turns(slots=2, patience=5.0), [0], [0], threading.Lock()

    def run() -> None:
        with turns.turn():
            with guard:
                now[0] += 1
                most[0] = max(most[0], now[0])
            time.sleep(0.02)
            with guard:
                now[0] -= 1

    _together(run, 8)
    assert most[0] == 2
    assert turns.running() == 0


def test_a_run_waits_for_its_turn_no_longer_than_the_patience():
    turns, release = Turns(slots=1, patience=0.15), threading.Event()

    def slow() -> None:
        with turns.turn():
            release.wait(5)

    holder = threading.Thread(target=slow)
    holder.start()
    while turns.running() < 1:
        time.sleep(0.001)
    with turns.turn() as waited:
        assert 0.14 <= waited < 0.5
        assert turns.running() == 2, "it ran beside the slow one"
    release.set()
    holder.join()
    with turns.turn() as waited:
        assert waited < 0.05


def _finish_times(turns: Turns | None, count: int = 6, spins: int = 1_200_000) -> list[float]:
    """``count`` threads of pure-Python work started together; when each ended, from the start."""
    start, ends, ready = time.monotonic(), [], threading.Barrier(count)

    def run() -> None:
        ready.wait()
        with turns.turn() if turns else contextlib.nullcontext():
            total = 0
            for i in range(spins):
                total += i % 7
        ends.append(time.monotonic() - start)

    _together(run, count)
    return sorted(ends)


def test_taking_turns_halves_the_median_wait_of_runs_that_start_together():
    """Sharing the interpreter, runs that start together all end near the last one; in turn, the
    k-th of n ends near k/n of it (the lower median near half), and the mean wait drops by a third."""
    shared = _finish_times(None)
    in_turn = _finish_times(Turns(slots=1, patience=30.0))
    assert in_turn[0] < 0.35 * in_turn[-1], in_turn
    assert in_turn[2] < 0.62 * in_turn[-1], in_turn
    assert sum(shared) > 1.25 * sum(in_turn), (shared, in_turn)
