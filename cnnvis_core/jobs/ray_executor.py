"""The Ray executor: the same shards on a pool of Ray actors, each holding one engine.

The shards still to do become a Ray Data dataset of one row (one block) per shard, mapped by
``map_batches`` with an actor pool (``ActorPoolStrategy``): each actor builds its engine once
from the job's :class:`~cnnvis_core.spec.ModelSpec` (on its own GPU when the cluster has GPUs:
one actor per GPU), checks that its weights hash equals the caller's, and maps whole shards with
the local executor's :func:`~.runner.run_shard`. The caller receives each shard's partial as a
Parquet blob, checkpoints it and reports progress as shards finish (in any order); the final
merge is in shard order, as locally.

Ray is optional: it is imported only here, when a job asks for it. With ``address`` None (and no
``RAY_ADDRESS`` in the environment) a local Ray is started inside this process (``ray.init()``)
and kept for later jobs; otherwise the job connects to that cluster, whose workers must be able to
import cnnvis and read the data set's files at the same paths.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data import Dataset
from ..spec import ModelSpec
from .base import Job, JobError, Partial
from .models import build, check_same
from .runner import Tracker, run_shard

#: the package's parent folder: what a local Ray's workers need on their path to import cnnvis_core
_SOURCE_ROOT = str(Path(__file__).resolve().parents[2])


def import_ray() -> Any:
    """The ``ray`` module (with Ray Data), or a :class:`JobError` saying how to install it."""
    try:
        import ray
        import ray.data
    except ImportError as error:
        raise JobError("The Ray executor needs Ray with Ray Data: python3 -m pip install 'ray[data]>=2.9' "
                       "(or use executor='local').") from error
    return ray


def connect(ray: Any, address: str | None = None) -> None:
    """Start a local Ray in this process, or connect to ``address`` (or ``RAY_ADDRESS``), unless
    Ray is running already."""
    if ray.is_initialized():
        return
    quiet = {"logging_level": logging.WARNING, "log_to_driver": False, "include_dashboard": False}
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        ray.init(address=address, **quiet)
    else:
        path = os.pathsep.join(p for p in (_SOURCE_ROOT, os.environ.get("PYTHONPATH", "")) if p)
        ray.init(runtime_env={"env_vars": {"PYTHONPATH": path}}, **quiet)
    context = ray.data.DataContext.get_current()
    for flag in ("enable_progress_bars", "print_on_execution_start", "enable_operator_progress_bars"):
        if hasattr(context, flag):
            setattr(context, flag, False)
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.WARNING)


class ShardWorker:
    """A Ray actor's callable: builds the engine once, then maps whole shards."""

    def __init__(self, spec: dict, weights: str, job: Job, dataset: Dataset, plan: list[tuple[int, int]],
                 batch_size: int, threads: int) -> None:
        if threads:
            torch.set_num_threads(threads)
        self.engine = build(ModelSpec.from_dict(spec), "cuda" if torch.cuda.is_available() else "cpu")
        check_same(self.engine, weights)
        self.job, self.dataset, self.plan, self.batch_size = job, dataset, plan, batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        done, blobs = [], []
        for index in batch["shard"]:
            start, stop = self.plan[int(index)]
            partial = run_shard(self.engine, self.dataset, self.job, self.dataset.ids[start:stop], self.batch_size)
            done.append(int(index))
            blobs.append(partial.to_bytes(self.job))
        return {"shard": np.asarray(done, dtype=np.int64), "partial": np.asarray(blobs, dtype=object)}


def _pool(ray: Any, workers: int | None, shards: int) -> tuple[int, int, int]:
    """``(actors, GPUs per actor, CPU threads per actor)``: one actor per GPU when there are GPUs,
    else ``workers`` (default: half the CPUs) sharing the CPUs."""
    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), max(1, int(resources.get("CPU", 1)))
    if workers is None:
        workers = gpus if gpus else max(1, cpus // 2)
    workers = max(1, min(int(workers), shards))
    return workers, 1 if gpus else 0, max(1, cpus // workers) if not gpus else max(1, cpus // max(1, gpus))


def run_ray(dataset: Dataset, job: Job, plan: list[tuple[int, int]], todo: list[int], batch_size: int,
            tracker: Tracker, spec: ModelSpec, weights: str, address: str | None = None,
            workers: int | None = None) -> Iterator[tuple[int, Partial]]:
    """``(index, partial)`` of every shard in ``todo`` as Ray finishes them (see the module docstring)."""
    ray = import_ray()
    connect(ray, address)
    actors, gpus, threads = _pool(ray, workers, len(todo))
    rows = [{"shard": int(i)} for i in todo]
    try:
        items = ray.data.from_items(rows, override_num_blocks=len(rows))
    except TypeError:  # Ray before 2.10 called it parallelism
        items = ray.data.from_items(rows, parallelism=len(rows))
    mapped = items.map_batches(
        ShardWorker, batch_size=1, compute=ray.data.ActorPoolStrategy(size=actors), num_gpus=gpus,
        num_cpus=threads if not gpus else 1,
        fn_constructor_kwargs={"spec": spec.as_dict(), "weights": weights, "job": job, "dataset": dataset,
                               "plan": plan, "batch_size": batch_size, "threads": threads})
    try:
        for row in mapped.iter_rows():
            index = int(row["shard"])
            partial = Partial.from_bytes(row["partial"], job)
            yield index, partial
            start, stop = plan[index]
            tracker.step(stop - start, len(partial.skipped), shard_done=True)
    except ray.exceptions.RayError as error:
        lines = [line for line in str(error).strip().splitlines() if line.strip()]
        raise JobError(f"The job failed on Ray: {lines[-1] if lines else error}") from error
