"""Background work gives way to interactive work: page runs first, long jobs in the gaps.

A dashboard server runs long jobs (a filter optimisation, a data set job) in worker threads beside
the threads that draw pages, all in one interpreter on a few cores. Four mechanisms keep a page's
run as fast as if the job were not there, and a fifth orders the page runs among themselves:

1. **The model lock** (:class:`cnnvis_core.core.ModelLock`): a long call takes the model one
   batch at a time (one batch of Score-CAM's masked passes; a job, one step or batch on its twin,
   see 3), and a quick call waiting for the model goes ahead of its next batch. A thread is
   *background* when it called :func:`lower_this_thread`; its ``core.session()`` calls are
   background holds without saying so.
2. **Giving way** (:func:`give_way`, called by a background thread before each batch): while any
   page is being drawn (:func:`foreground`, around each script run of the app) and for
   :data:`QUIET_S` after the last one ended (its messages and pictures are still being sent), a
   background thread waits before its next batch, at most :data:`GIVE_WAY_S` seconds, so a page's
   run has the interpreter (Python's GIL) and the cores to itself between its own model calls; the
   job gets everything in between, and at least one batch per :data:`GIVE_WAY_S` under any load.
3. **CPU priority**: :func:`lower_this_thread` puts the thread in Linux's ``SCHED_IDLE`` class
   (:data:`BACKGROUND_POLICY`): it runs only on a core no other thread wants, and a page's thread
   that wakes up (a message arrived, a lock was freed) takes its core at once. Niceness is not
   enough: a thread at nice 10 or 19 keeps its core until its time slice ends, and a page's run
   wakes up tens of times (the event loop, the script thread, every socket write); one session's
   opacity move took 1.6–1.9× its time beside an optimisation at nice 10 or 19 — even one
   pinned to the other core — and 1.0× beside the same optimisation in ``SCHED_IDLE``
   (``bench/load_server.py``). The niceness is raised too (systems without ``SCHED_IDLE``).
   Both are per thread on Linux, and the threads it starts after (torch's OpenMP workers)
   inherit them. The price: a background batch runs only on spare CPU, so under a load that
   keeps every core busy it waits for that load — holding whatever lock it holds. Jobs therefore
   run on a twin of the engine (:meth:`cnnvis_core.core.ModelCore.replica`: its own lock), so a
   page never waits for a job's batch in progress (``CNNVIS_BACKGROUND_POLICY=nice`` keeps
   niceness only).
4. **Quick hand-over of the interpreter** (:func:`quick_handover`): a thread waiting for Python's GIL
   asks the running thread to give it up after :data:`SWITCH_INTERVAL_S` (Python's default 5 ms). A
   page's run gives the GIL up at every torch call, picture encoding and socket write, and during a
   job's batch in progress it waited up to 5 ms to get it back each time: one session's opacity move
   took 2.1× its time beside a running optimisation, 1.4× with 1 ms (``bench/load_server.py``).
5. **Page runs in turn** (:class:`Turns`, :data:`PAGE_TURNS` around each run of the app): runs
   that start together (a class clicking at the teacher's word) go first come, first served, two
   at a time, instead of all sharing the interpreter and all ending late; a run waits at most a
   second for its turn. With 12 sessions acting at the same instant the median quick action went
   from 12.8× to 6.6–8.4× its solo time over three runs (``bench/load_server.py --stagger 0``).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

#: how soon a thread waiting for the interpreter gets it (seconds; Python's default is 0.005)
SWITCH_INTERVAL_S = 0.001
#: niceness of background threads (0 normal … 19 lowest)
BACKGROUND_NICENESS = 10
#: scheduling class of background threads: ``idle`` (Linux ``SCHED_IDLE``, run on spare CPU only)
#: or ``nice`` (niceness only); ``CNNVIS_BACKGROUND_POLICY``
BACKGROUND_POLICY = os.environ.get("CNNVIS_BACKGROUND_POLICY", "idle").strip().lower() or "idle"
#: longest a background thread waits for page runs before its next batch, seconds
GIVE_WAY_S = 0.25
#: a background thread also waits this long after the last page run ended (seconds): the server
#: still sends that run's messages and serves its pictures then
QUIET_S = 0.15

_local = threading.local()
_pages = threading.Condition(threading.Lock())
_running = 0
_last_end = float("-inf")


def lower_this_thread(niceness: int = BACKGROUND_NICENESS) -> bool:
    """Make the calling thread a background thread (see the module docstring): its model holds
    give way, its niceness is at least ``niceness`` and, on Linux with :data:`BACKGROUND_POLICY`
    ``idle``, it is scheduled as ``SCHED_IDLE``. True when the niceness is so now, False where the
    system has no per-thread priority (nothing is raised then)."""
    _local.background = True
    try:
        me = threading.get_native_id()
        if os.getpriority(os.PRIO_PROCESS, me) < niceness:
            os.setpriority(os.PRIO_PROCESS, me, niceness)
        lowered = os.getpriority(os.PRIO_PROCESS, me) >= niceness
    except (AttributeError, OSError):  # no getpriority (Windows) or not allowed
        return False
    if BACKGROUND_POLICY == "idle":
        idle_this_thread(me)
    return lowered


def idle_this_thread(native_id: int) -> bool:
    """Put thread ``native_id`` in ``SCHED_IDLE`` (Linux); whether it is there now. A thread
    cannot leave that class again without privileges: call it only on a thread kept for
    background work."""
    idle = getattr(os, "SCHED_IDLE", None)
    if idle is None:
        return False
    try:
        if os.sched_getscheduler(native_id) != idle:
            os.sched_setscheduler(native_id, idle, os.sched_param(0))
        return os.sched_getscheduler(native_id) == idle
    except OSError:  # a sandbox may forbid it
        return False


def is_background() -> bool:
    """Whether the calling thread made itself a background thread."""
    return getattr(_local, "background", False)


@contextmanager
def foreground() -> Iterator[None]:
    """Mark a page's run (or any interactive call) for the time of the block: background threads
    wait before their next batch while one runs (:func:`give_way`)."""
    global _running, _last_end
    with _pages:
        _running += 1
    try:
        yield
    finally:
        with _pages:
            _running -= 1
            _last_end = time.monotonic()
            _pages.notify_all()


class Turns:
    """First come, first served admission of page runs: at most ``slots`` at once, the others
    wait in the order they came, each at most ``patience`` seconds (then it runs anyway, so one
    slow run never holds the rest back for long).

    Why: Python runs one thread at a time and hands the interpreter round, so N runs that start
    together share it and all end near N·c (c: one run's time alone); run in turn, the k-th ends
    near k·c/slots, the median near half of that. Two slots: a run's torch calls, picture
    encodings and socket writes leave the interpreter to another run while they use a core.
    """

    def __init__(self, slots: int = 2, patience: float = 1.0) -> None:
        self.slots, self.patience = slots, patience
        self._state = threading.Condition(threading.Lock())
        self._queue: list[int] = []
        self._tickets = 0
        self._running = 0

    @contextmanager
    def turn(self) -> Iterator[float]:
        """Wait for this run's turn; yields the seconds waited."""
        waited = self._admit()
        try:
            yield waited
        finally:
            with self._state:
                self._running -= 1
                self._state.notify_all()

    def _admit(self) -> float:
        started = time.monotonic()
        deadline = started + self.patience
        with self._state:
            ticket = self._tickets
            self._tickets += 1
            self._queue.append(ticket)
            while not (self._queue[0] == ticket and self._running < self.slots):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._state.wait(left)
            self._queue.remove(ticket)
            self._running += 1
            self._state.notify_all()  # the next in line may go now
        return time.monotonic() - started

    def running(self) -> int:
        with self._state:
            return self._running


#: the server's page runs (``app.py``): ``CNNVIS_PAGE_SLOTS`` at once, in the order they came
PAGE_TURNS = Turns(max(1, int(os.environ.get("CNNVIS_PAGE_SLOTS") or 2)))


def pages_running() -> int:
    """How many :func:`foreground` blocks are open now."""
    with _pages:
        return _running


def give_way(limit: float = GIVE_WAY_S) -> float:
    """In a background thread: wait while a page runs and for :data:`QUIET_S` after, at most
    ``limit`` seconds; the seconds waited (0 at once in any other thread, so a page's own long
    call never waits for itself)."""
    if not is_background():
        return 0.0
    started = time.monotonic()
    deadline = started + limit
    with _pages:
        while (now := time.monotonic()) < deadline:
            quiet = float("inf") if _running else _last_end + QUIET_S
            if quiet <= now:
                break
            _pages.wait(min(quiet, deadline) - now)
    return time.monotonic() - started


def quick_handover(interval: float = SWITCH_INTERVAL_S) -> None:
    """Let a thread waiting for the interpreter have it within ``interval`` seconds (process-wide:
    ``sys.setswitchinterval``); the server calls it once, at its first run."""
    sys.setswitchinterval(interval)
