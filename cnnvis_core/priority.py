"""Background work gives way to interactive work: a lower CPU priority for the calling thread.

A dashboard server runs long jobs (a filter optimisation, a data set job) in worker threads beside
the threads that draw pages. The model lock already lets a quick call in before a job's next batch
(:class:`cnnvis_core.core.ModelLock`); outside the lock, a job's batch and a page's run compete for
the same cores, and the kernel shares them evenly. :func:`lower_this_thread` raises the calling
thread's *niceness* (POSIX ``nice``; on Linux it is per thread, and the threads it starts after, such
as torch's OpenMP workers, inherit it), so the kernel gives a page's run most of a core it shares
with a job (nice 10 against 0: about a tenth of the CPU time to the job while both want it) and
the job all the CPU nobody else wants.
"""

from __future__ import annotations

import os
import threading

#: niceness of background threads (0 normal … 19 lowest)
BACKGROUND_NICENESS = 10


def lower_this_thread(niceness: int = BACKGROUND_NICENESS) -> bool:
    """Set the calling thread's niceness to at least ``niceness``; True when it is so now, False
    where the system has no per-thread priority (then nothing changes, and nothing is raised)."""
    try:
        me = threading.get_native_id()
        if os.getpriority(os.PRIO_PROCESS, me) < niceness:
            os.setpriority(os.PRIO_PROCESS, me, niceness)
        return os.getpriority(os.PRIO_PROCESS, me) >= niceness
    except (AttributeError, OSError):  # no getpriority (Windows) or not allowed
        return False
