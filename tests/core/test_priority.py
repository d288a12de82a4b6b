"""Background threads lower their own CPU priority, and only their own."""

import os
import sys
import threading

import pytest

from cnnvis_core.priority import BACKGROUND_NICENESS, lower_this_thread

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
