"""The dashboard's background jobs over whole data sets: a small pool of worker threads shared by the
server, and one :class:`DatasetJob` per running job. No Streamlit here (worker threads have no
script context) and no torch maths: a job is one call of :mod:`cnnvis_core.jobs`.

At most :data:`MAX_RUNNING` jobs run at a time (each on a twin of the engine with a lock of its own,
in a background thread: on spare CPU, pausing while pages are drawn, :mod:`cnnvis_core.priority`;
the dashboard's sessions never wait for a job's batch); the rest wait in order, at most
:data:`MAX_WAITING`. A job is known by its results folder, which names everything that decides
it (kind, settings, model weights, data set, batching): starting a job whose folder a queued or
running job already writes to attaches to that one instead of running it twice. Cancelling sets
the job's event; the library stops after its current batch and keeps the finished shards in the
folder, so starting the same job again resumes from them.

The workers are daemon threads: stopping the server does not wait for a job (a long one would
hold it for hours); what a killed job loses is the shard in progress, as after a crash.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnvis_core import CnnvisError, Engine, ModelError
from cnnvis_core import jobs as core_jobs
from cnnvis_core.data import Dataset
from cnnvis_core.jobs import JobCancelled, JobError, Progress
from cnnvis_core.priority import lower_this_thread

#: jobs running at once on the server
MAX_RUNNING = 2
#: jobs waiting for a worker, at most
MAX_WAITING = 8
#: finished, cancelled or failed jobs remembered (so that the page can say how they ended)
MAX_REMEMBERED = 32

QUEUED, RUNNING, DONE, CANCELLED, FAILED = "queued", "running", "done", "cancelled", "failed"


@dataclass(frozen=True)
class Request:
    """Everything that decides a job: ``kind`` (``dataset_examples``, ``channel_stats``,
    ``cam_quality``), its ``settings`` (``layers``, ``k``; ``methods``, ``steps``), the model's
    weights hash and the data set's fingerprint, the batching; and for people, the model's and the
    data set's names."""

    kind: str
    settings: tuple[tuple[str, Any], ...]
    weights: str
    data: str
    model: str = ""
    data_name: str = ""
    batch_size: int | None = None
    shard_size: int | None = None

    def options(self) -> dict[str, Any]:
        """The job function's keyword arguments beside the engine and the data set."""
        out = {name: list(value) if isinstance(value, tuple) else value for name, value in self.settings}
        for name in ("batch_size", "shard_size"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out


#: the job function of each kind
RUNNERS: dict[str, Callable[..., core_jobs.Result]] = {
    "dataset_examples": core_jobs.dataset_examples, "channel_stats": core_jobs.channel_stats,
    "cam_quality": core_jobs.cam_quality}


def _twin(engine: Engine) -> Engine:
    try:
        return engine.replica()
    except ModelError:
        return engine


class DatasetJob:
    """One job: its request, its folder, where it stands (:attr:`status`, :meth:`progress`) and how it
    ended (:attr:`error`, :attr:`elapsed`). Read by the page while a worker runs it."""

    def __init__(self, request: Request, engine: Engine, dataset: Dataset, folder: Path) -> None:
        self.request, self.dataset, self.folder = request, dataset, Path(folder)
        #: a twin of the page's engine (its own lock: the pages never wait for this job's batch in
        #: progress, which runs on spare CPU only), the engine itself where the model cannot be copied;
        #: None once the job has ended (the pool remembers ended jobs; the twin's caches, such as a
        #: folded copy of the weights, go with it)
        self.engine: Engine | None = _twin(engine)
        self.status = QUEUED
        self.error: str | None = None
        self.created = time.time()
        self.started: float | None = None
        self.finished: float | None = None
        #: the folder held this very job finished already: the result was loaded, nothing ran
        self.reused = False
        self._progress: Progress | None = None
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self._done = threading.Event()

    # -- what the page reads -----------------------------------------------------------------
    @property
    def active(self) -> bool:
        """Queued or running."""
        return self.status in (QUEUED, RUNNING)

    @property
    def cancelling(self) -> bool:
        """Cancel was asked and the job has not stopped yet."""
        return self._cancel.is_set() and self.active

    def progress(self) -> Progress | None:
        """The latest progress report (None before the first batch)."""
        with self._lock:
            return self._progress

    @property
    def elapsed(self) -> float:
        """Seconds it has run (so far, or in all once ended); 0 while queued."""
        if self.started is None:
            return 0.0
        return (self.finished or time.monotonic()) - self.started

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the job has ended; whether it has."""
        return self._done.wait(timeout)

    # -- control ---------------------------------------------------------------------------------
    def cancel(self) -> None:
        """Stop the job: a queued one does not start, a running one stops after its current batch
        (its finished shards stay in the folder)."""
        self._cancel.set()
        with self._lock:
            if self.status == QUEUED:
                self._end(CANCELLED)

    def run(self) -> None:
        """Run the job here (a worker thread calls it); never raises."""
        with self._lock:
            if self.status != QUEUED:
                return
            self.status, self.started = RUNNING, time.monotonic()
        self.reused = (self.folder / "manifest.json").is_file()
        try:
            RUNNERS[self.request.kind](self.engine, self.dataset, progress=self._report, cancel=self._cancel,
                                       out=self.folder, **self.request.options())
        except JobCancelled:
            self._finish(CANCELLED)
        except CnnvisError as error:
            self._finish(FAILED, str(error))
        except Exception as error:  # noqa: BLE001 - a worker thread must report, not vanish
            self._finish(FAILED, f"The job failed unexpectedly ({type(error).__name__}: {error}).")
        else:
            self._finish(DONE)

    def _report(self, progress: Progress) -> None:
        with self._lock:
            self._progress = progress

    def _finish(self, status: str, error: str | None = None) -> None:
        with self._lock:
            self._end(status, error)

    def _end(self, status: str, error: str | None = None) -> None:
        self.status, self.error, self.engine = status, error, None
        self.finished = time.monotonic()
        self._done.set()


class JobPool:
    """:data:`MAX_RUNNING` daemon worker threads taking jobs in order from a queue (see the module
    docstring); one pool per server."""

    def __init__(self, workers: int = MAX_RUNNING, waiting: int = MAX_WAITING) -> None:
        self.workers, self.waiting = workers, waiting
        self._queue: queue.Queue[DatasetJob] = queue.Queue()
        self._jobs: dict[str, DatasetJob] = {}
        self._lock = threading.Lock()
        for i in range(workers):
            threading.Thread(target=self._work, name=f"cnnvis-job-{i}", daemon=True).start()

    def _work(self) -> None:
        lower_this_thread()  # a page's run goes ahead of a job's batch on the CPU too
        while True:
            self._queue.get().run()

    def start(self, request: Request, engine: Engine, dataset: Dataset, folder: Path) -> tuple[DatasetJob, bool]:
        """``(job, attached)``: the queued or running job writing to ``folder`` (attached True), else
        a new job for ``request``, queued. :class:`JobError` when too many jobs wait already."""
        with self._lock:
            job = self._jobs.get(str(folder))
            if job is not None and job.active:
                return job, True
            if sum(j.status == QUEUED for j in self._jobs.values()) >= self.waiting:
                raise JobError(f"{self.waiting} jobs are waiting for a worker already; start this one when one of "
                               "them has ended (or cancel one).")
            job = DatasetJob(request, engine, dataset, folder)
            self._jobs.pop(str(folder), None)
            self._jobs[str(folder)] = job
            self._forget()
        self._queue.put(job)
        return job, False

    def jobs(self, weights: str | None = None) -> list[DatasetJob]:
        """The jobs known (active and recently ended), newest first; with ``weights``, of that model only."""
        with self._lock:
            found = list(self._jobs.values())
        return sorted((j for j in found if weights is None or j.request.weights == weights),
                      key=lambda j: j.created, reverse=True)

    def running(self) -> int:
        """How many jobs run now."""
        with self._lock:
            return sum(j.status == RUNNING for j in self._jobs.values())

    def _forget(self) -> None:
        ended = [key for key, job in self._jobs.items() if not job.active]
        for key in ended[:max(0, len(ended) - MAX_REMEMBERED)]:
            del self._jobs[key]
