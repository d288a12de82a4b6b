"""Background work gives way to interactive work: page runs first, long jobs in the gaps.

A dashboard server runs long jobs (a filter optimisation, a data set job) in worker threads beside
the threads that draw pages, all in one interpreter on a few cores. Three mechanisms, from the
finest to the coarsest, keep a page's run as fast as if the job were not there:

1. **The model lock** (:class:`cnnvis_core.core.ModelLock`): a background thread takes the model
   one batch (one optimisation step) at a time, and a quick call waiting for the model goes ahead
   of its next batch. A thread is *background* when it called :func:`lower_this_thread`; its
   ``core.session()`` calls are background holds without saying so.
2. **Giving way** (:func:`give_way`, called by a background thread before each batch): while any
   page is being drawn (:func:`foreground`, around each script run of the app) and for
   :data:`QUIET_S` after the last one ended (its messages and pictures are still being sent), a
   background thread waits before its next batch, at most :data:`GIVE_WAY_S` seconds, so a page's
   run has the interpreter (Python's GIL) and the cores to itself between its own model calls; the
   job gets everything in between, and at least one batch per :data:`GIVE_WAY_S` under any load.
3. **CPU priority**: :func:`lower_this_thread` raises the thread's *niceness* (POSIX ``nice``; on
   Linux it is per thread, and the threads it starts after, such as torch's OpenMP workers, inherit
   it): where a job's batch and a page's run do share a core, the kernel gives the page most of it.
4. **Quick hand-over of the interpreter** (:func:`quick_handover`): a thread waiting for Python's GIL
   asks the running thread to give it up after :data:`SWITCH_INTERVAL_S` (Python's default 5 ms). A
   page's run gives the GIL up at every torch call, picture encoding and socket write, and during a
   job's batch in progress it waited up to 5 ms to get it back each time: one session's opacity move
   took 2.1× its time beside a running optimisation, 1.4× with 1 ms (``bench/load_server.py``).
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
    give way, and its niceness is at least ``niceness``. True when the niceness is so now, False
    where the system has no per-thread priority (nothing is raised then)."""
    _local.background = True
    try:
        me = threading.get_native_id()
        if os.getpriority(os.PRIO_PROCESS, me) < niceness:
            os.setpriority(os.PRIO_PROCESS, me, niceness)
        return os.getpriority(os.PRIO_PROCESS, me) >= niceness
    except (AttributeError, OSError):  # no getpriority (Windows) or not allowed
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
