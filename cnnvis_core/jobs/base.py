"""What every job is made of: a map over batches, an associative merge, and the result it finishes as.

A job (:class:`Job`) maps one :class:`~cnnvis_core.data.Batch` to a job-specific *state*, merges two
states into one, and writes a state as an Arrow table and reads it back (checkpoints, results, what
cluster workers send). Merges are associative (and
commutative up to the order of rows, which every state keeps sorted), so the state of a data
set is the merge of the states of any partition of it: shards run in one process or on many
workers give the same result. A :class:`Partial` carries a state with the ids of the images it
covers (:class:`IdRanges`), how many of them were read, and the files skipped.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
import pyarrow as pa

from ..core import ModelCore
from ..data import Batch, Dataset, Skip
from ..errors import CnnvisError
from .files import table_bytes, table_from_bytes

S = TypeVar("S")


class JobError(CnnvisError):
    """A job that cannot run as asked: a results folder holding another job, results that do not
    merge, a missing optional dependency."""


class JobCancelled(CnnvisError):
    """The job was stopped (by its progress callback or its cancel event); its finished shards are
    kept in the results folder, and running the same job again resumes from them."""


@dataclass(frozen=True)
class Progress:
    """Where a job stands: ``done`` of ``total`` images (read or skipped), ``rate`` in images per
    second over this run, ``eta`` seconds left (None until known), ``elapsed`` seconds, finished
    ``shards`` of ``shard_count``, and files ``skipped`` so far."""

    done: int
    total: int
    rate: float
    eta: float | None
    elapsed: float
    shards: int
    shard_count: int
    skipped: int = 0

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0

    def __str__(self) -> str:
        left = "…" if self.eta is None else _clock(self.eta)
        return (f"{self.done}/{self.total} images · {self.rate:.1f} img/s · {left} left · "
                f"shard {self.shards}/{self.shard_count}" + (f" · {self.skipped} skipped" if self.skipped else ""))


def _clock(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


#: ``progress(Progress)``, called after every batch (local) or shard (Ray); returning False cancels
OnProgress = Callable[[Progress], object]


@dataclass(frozen=True)
class IdRanges:
    """A set of image ids as sorted, disjoint, non-adjacent ``[start, stop)`` ranges."""

    ranges: tuple[tuple[int, int], ...] = ()

    @classmethod
    def of(cls, ids: Iterable[int]) -> IdRanges:
        ids = np.unique(np.fromiter(ids, dtype=np.int64))
        if not ids.size:
            return cls()
        breaks = np.flatnonzero(np.diff(ids) != 1)
        starts = np.concatenate([[ids[0]], ids[breaks + 1]])
        stops = np.concatenate([ids[breaks], [ids[-1]]]) + 1
        return cls(tuple((int(a), int(b)) for a, b in zip(starts, stops)))

    def __len__(self) -> int:
        return sum(b - a for a, b in self.ranges)

    def ids(self) -> np.ndarray:
        if not self.ranges:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([np.arange(a, b, dtype=np.int64) for a, b in self.ranges])

    def overlaps(self, other: IdRanges) -> bool:
        i = j = 0
        while i < len(self.ranges) and j < len(other.ranges):
            (a, b), (c, d) = self.ranges[i], other.ranges[j]
            if a < d and c < b:
                return True
            if b <= d:
                i += 1
            else:
                j += 1
        return False

    def union(self, other: IdRanges) -> IdRanges:
        merged: list[list[int]] = []
        for a, b in sorted(self.ranges + other.ranges):
            if merged and a <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        return IdRanges(tuple((a, b) for a, b in merged))


@dataclass(frozen=True)
class Partial(Generic[S]):
    """A job's state over the images ``ids``, of which ``images`` were read (the rest ``skipped``)."""

    state: S
    ids: IdRanges = IdRanges()
    images: int = 0
    skipped: tuple[Skip, ...] = ()

    def merged(self, other: Partial[S], job: Job[S]) -> Partial[S]:
        if self.ids.overlaps(other.ids):
            raise JobError("These partial results cover some of the same images; only results of disjoint "
                           "parts of a data set merge.")
        skipped = tuple(sorted(self.skipped + other.skipped, key=lambda s: (s.id, s.path)))
        return Partial(job.merge(self.state, other.state), self.ids.union(other.ids), self.images + other.images,
                       skipped)

    def table(self, job: Job[S]) -> pa.Table:
        """The state's table, with the ids, image count, skipped files and the state's shapes in its
        schema metadata (:meth:`from_table` reads it back, ignoring any extra columns)."""
        table = job.to_table(self.state)
        meta = {b"cnnvis.ids": json.dumps(self.ids.ranges).encode(), b"cnnvis.images": str(self.images).encode(),
                b"cnnvis.skipped": json.dumps([list(s) for s in self.skipped]).encode(),
                b"cnnvis.meta": json.dumps(job.state_meta(self.state)).encode()}
        return table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})

    @classmethod
    def from_table(cls, table: pa.Table, job: Job[S]) -> Partial[S]:
        meta = table.schema.metadata or {}
        ids = IdRanges(tuple((int(a), int(b)) for a, b in json.loads(meta[b"cnnvis.ids"])))
        skipped = tuple(Skip(int(i), str(p), str(r)) for i, p, r in json.loads(meta[b"cnnvis.skipped"]))
        state = job.from_table(table, json.loads(meta[b"cnnvis.meta"]))
        return cls(state, ids, int(meta[b"cnnvis.images"]), skipped)

    def to_bytes(self, job: Job[S]) -> bytes:
        """The partial as the bytes of one Parquet file (checkpoints, and what Ray workers send back)."""
        return table_bytes(self.table(job))

    @classmethod
    def from_bytes(cls, data: bytes, job: Job[S]) -> Partial[S]:
        return cls.from_table(table_from_bytes(data), job)


@dataclass(frozen=True)
class Job(Generic[S]):
    """One kind of computation over a data set (subclassed per job; instances are picklable, so a
    cluster worker gets the job itself)."""

    kind: ClassVar[str] = "job"

    def settings(self) -> dict[str, Any]:
        """The job's parameters, JSON-ready (they name the job in checkpoints and manifests)."""
        raise NotImplementedError

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> Job:
        """The job of :meth:`settings` (to merge loaded results)."""
        raise NotImplementedError

    def layer_names(self) -> list[str]:
        """The layers the job reads (checked against the model before anything runs)."""
        return []

    def empty(self) -> S:
        raise NotImplementedError

    def map(self, core: ModelCore, batch: Batch, dataset: Dataset, prior: S | None = None) -> S:
        """The state of one batch. ``prior`` (the state so far of the shard, when given) lets a job
        leave out what cannot change ``merge(prior, result)``."""
        raise NotImplementedError

    def merge(self, a: S, b: S) -> S:
        """The state of the union of two disjoint parts (associative)."""
        raise NotImplementedError

    def to_table(self, state: S) -> pa.Table:
        raise NotImplementedError

    def state_meta(self, state: S) -> dict:
        """What :meth:`from_table` needs beside the table's rows (shapes), JSON-ready."""
        return {}

    def from_table(self, table: pa.Table, meta: dict) -> S:
        raise NotImplementedError
