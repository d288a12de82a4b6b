"""Running a job: shards, checkpoints, progress, cancelling, and the local executor.

The data set's ids are cut into consecutive *shards* of a few batches each. Each shard is mapped
batch by batch and its batches' states merged, giving the shard's :class:`~.base.Partial`; with a
results folder, every finished shard is written there at once (``shards/000012.parquet``, through
a temporary name and a rename) before the next one starts, beside ``shards/job.json`` naming the
job (kind, settings, model weights, data set, shard plan). A job run again with the same folder
skips the shards already written, so a crash or a stop loses at most the shard in progress (and
sweeps away the temporary file a ``kill -9`` mid-write left behind).
The final state is the merge of all shards *in shard order*, whoever computed them, so every
executor gives the same bits.

The **local** executor runs in the caller's process: batch after batch through the caller's
engine, the next batch read and preprocessed in a background thread meanwhile.
"""

from __future__ import annotations

import json
import math
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from ..core import ModelCore
from ..data import Dataset
from .base import IdRanges, Job, JobCancelled, JobError, OnProgress, Partial, Progress
from .files import atomic_write, read_json, sweep_temporaries, write_json
from .reading import release

#: ``cancel``: an event to set, or a function returning True, to stop a job between batches
Cancel = threading.Event | Callable[[], bool] | None
#: how many shards a data set is cut into when no shard size is given (at most)
TARGET_SHARDS = 32
#: the fewest batches in a default shard (a job may skip work on later batches of a shard: the
#: examples job finds positions only for maps that pass the shard's k-th best so far)
MIN_SHARD_BATCHES = 8
#: the largest default shard
MAX_SHARD = 8192


def shard_plan(count: int, batch_size: int, shard_size: int | None = None) -> list[tuple[int, int]]:
    """``[(start, stop)]`` positions in the data set's ids: shards of ``shard_size`` images (default:
    about ``count / 32``, a multiple of the batch size, from 8 batches to 8192 images)."""
    if shard_size is None:
        batches = max(MIN_SHARD_BATCHES, math.ceil(count / TARGET_SHARDS / batch_size))
        shard_size = max(batch_size, min(batches * batch_size, MAX_SHARD))
    shard_size = max(1, int(shard_size))
    return [(start, min(count, start + shard_size)) for start in range(0, count, shard_size)]


# ---------------------------------------------------------------------------- checkpoints
class ShardStore:
    """Finished shards of one job in ``folder/shards`` (see the module docstring)."""

    def __init__(self, folder: Path, key: dict, resume: bool = True) -> None:
        self.folder = Path(folder) / "shards"
        self.key = key
        marker = self.folder / "job.json"
        if marker.is_file():
            if not resume:
                shutil.rmtree(self.folder)
            elif read_json(marker) != json.loads(json.dumps(key)):
                raise JobError(f"{folder} holds the finished shards of another job (other settings, model or data "
                               "set). Choose another results folder, or pass resume=False to start this one over.")
        self.folder.mkdir(parents=True, exist_ok=True)
        sweep_temporaries(self.folder)
        write_json(marker, key)

    def _path(self, index: int) -> Path:
        return self.folder / f"{index:06d}.parquet"

    def finished(self, count: int) -> set[int]:
        return {i for i in range(count) if self._path(i).is_file()}

    def save(self, index: int, partial: Partial, job: Job) -> None:
        atomic_write(self._path(index), partial.to_bytes(job))

    def load(self, index: int, job: Job) -> Partial:
        return Partial.from_bytes(self._path(index).read_bytes(), job)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


# ---------------------------------------------------------------------------- progress
class Tracker:
    """Counts images and shards, and reports :class:`Progress`; raises :class:`JobCancelled` when
    the callback returns False or ``cancel`` says so."""

    def __init__(self, total: int, shard_count: int, already: int, shards_done: int,
                 progress: OnProgress | None, cancel: Cancel, folder: Path | None) -> None:
        self.total, self.shard_count, self.done, self.shards = total, shard_count, already, shards_done
        self.already = already
        self.skipped = 0
        self.progress, self.cancel, self.folder = progress, cancel, folder
        self.started = time.perf_counter()

    def cancelled(self) -> bool:
        if self.cancel is None:
            return False
        return self.cancel.is_set() if isinstance(self.cancel, threading.Event) else bool(self.cancel())

    def step(self, images: int, skipped: int = 0, shard_done: bool = False) -> None:
        self.done += images
        self.skipped += skipped
        self.shards += int(shard_done)
        elapsed = time.perf_counter() - self.started
        fresh = self.done - self.already
        rate = fresh / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else None
        answer = None
        if self.progress is not None:
            answer = self.progress(Progress(self.done, self.total, rate, eta, elapsed, self.shards,
                                            self.shard_count, self.skipped))
        if answer is False or self.cancelled():
            where = f" in {self.folder}" if self.folder else " (no results folder was given, so nothing is kept)"
            raise JobCancelled(f"Stopped after {self.shards} of {self.shard_count} shards; the finished shards are "
                               f"kept{where}. Run the same job with the same folder to go on from there.")


# ---------------------------------------------------------------------------- local executor
def run_shard(core: ModelCore, dataset: Dataset, job: Job, ids: np.ndarray, batch_size: int,
              on_batch: Callable[[int, int], None] | None = None, prefetch: bool = True) -> Partial:
    """The partial of one shard: its batches mapped and merged in order. ``on_batch(images,
    skipped)`` is called after each batch (it may raise to stop)."""
    state, images, skipped = job.empty(), 0, []
    try:
        for batch in dataset.batches(core, batch_size, ids, prefetch=prefetch):
            state = job.merge(state, job.map(core, batch, dataset, state))
            images += len(batch.ids)
            skipped += batch.skipped
            if on_batch is not None:
                on_batch(len(batch.ids) + len(batch.skipped), len(batch.skipped))
    finally:
        release()
    return Partial(state, IdRanges.of(ids), images, tuple(skipped))


def run_local(core: ModelCore, dataset: Dataset, job: Job, shards: list[np.ndarray], todo: list[int],
              batch_size: int, tracker: Tracker) -> Iterator[tuple[int, Partial]]:
    """``(index, partial)`` of every shard in ``todo``, in order, in this process."""
    for index in todo:
        partial = run_shard(core, dataset, job, shards[index], batch_size,
                            lambda images, skipped: tracker.step(images, skipped))
        yield index, partial
        tracker.step(0, shard_done=True)


class OrderedFold:
    """Merges partials in shard order as they arrive in any order (out-of-order ones wait)."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.value: Partial = Partial(job.empty())
        self.next = 0
        self.waiting: dict[int, Partial] = {}

    def add(self, index: int, partial: Partial) -> None:
        self.waiting[index] = partial
        while self.next in self.waiting:
            self.value = self.value.merged(self.waiting.pop(self.next), self.job)
            self.next += 1
