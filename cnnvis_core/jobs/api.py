"""The jobs as functions of an engine and a data set: :func:`dataset_examples`, :func:`channel_stats`,
:func:`cam_quality`, and :func:`execute`, which runs any job on an executor with checkpoints."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from torch import nn

from ..cam import check_methods, resolve_layer
from ..core import ModelCore
from ..data import Dataset, view_of
from ..errors import InputError
from ..layers import LayerInfo
from ..pruning import default_layers
from ..receptive_field import receptive_fields
from ..spec import ModelSpec
from .base import Job, JobError, OnProgress, Partial
from .examples import ExamplesJob
from .files import MANIFEST, now, read_json, sweep_temporaries, versions
from .models import spec_of, weights_hash
from .quality import CamQualityJob
from .ray_executor import run_ray
from .results import CamQuality, ChannelStats, DatasetExamples, Result, load
from .runner import Cancel, OrderedFold, ShardStore, Tracker, run_local, shard_plan
from .stats import StatsJob

#: the executors a job runs on
EXECUTORS = ("local", "ray")


def _layers(core: ModelCore, layers: str | Iterable[str] | None, spatial: bool) -> list[str]:
    names = default_layers(core) if layers is None else list(dict.fromkeys([layers] if isinstance(layers, str)
                                                                            else layers))
    if not names:
        raise InputError("This model has no conv or ReLU layer with C×h×w maps; name the layers to examine.")
    for name in names:
        info = core.layer(name)  # an unknown name fails before any image is read
        # maps of any layout (NCHW, NHWC, a ViT's tokens: read through it), or vectors for the statistics
        if info.map_shape is None and (spatial or len(info.output_shape) != 1):
            raise InputError(f"Layer {name!r} gives {info.output_shape} ({info.layout}), not C×h×w maps"
                             + (" or (F,) vectors." if not spatial else "."))
    return names


def _layer_entry(info: LayerInfo) -> dict:
    """A layer in the manifest: ``shape`` is what the job reads (``C, h, w`` through the layout, or the
    vector's ``F``), ``output_shape`` the module's own, ``layout`` how one becomes the other."""
    shape = info.map_shape or info.output_shape
    return {"name": info.name, "kind": info.kind, "shape": list(shape), "layout": info.layout,
            "output_shape": list(info.output_shape)}


def _manifest(core: ModelCore, dataset: Dataset, job: Job, spec: ModelSpec | None, key: dict) -> dict:
    return {
        "format": "cnnvis-job/1", "kind": job.kind, "created": now(),
        "model": {"name": core.name, "spec": spec.as_dict() if spec else None, "weights_sha256": weights_hash(core),
                  "input_size": list(core.input_size), "view": view_of(core.transform, core.input_size).as_dict()},
        "data": {"description": dataset.description(), **dataset.describe(),
                 "not_images": [{"path": s.path, "reason": s.reason} for s in dataset.ignored]},
        "layers": [_layer_entry(core.layer(n)) for n in job.layer_names()],
        "settings": job.settings(), "job_key": key, "versions": versions(),
    }


def execute(core: ModelCore, dataset: Dataset, job: Job, *, executor: str = "local", out: str | Path | None = None,
            progress: OnProgress | None = None, cancel: Cancel = None, batch_size: int = 32,
            shard_size: int | None = None, workers: int | None = None, ray_address: str | None = None,
            model: ModelSpec | tuple | None = None, resume: bool = True) -> tuple[Partial, dict, Result | None]:
    """Run ``job`` over ``dataset``: ``(merged partial, manifest, None)``, or ``(…, …, result)`` when
    ``out`` holds this very job finished already (nothing is run then).

    Shards of ``shard_size`` images (see :func:`~.runner.shard_plan`) in batches of ``batch_size``;
    with ``out``, each finished shard is checkpointed there and a rerun resumes (``resume=False``
    starts over). ``executor``: ``local`` or ``ray`` (``ray_address``, ``workers``; ``model`` the
    spec workers build the engine from, default the engine's own).
    """
    if executor not in EXECUTORS:
        raise InputError(f"Unknown executor {executor!r}; use {' or '.join(EXECUTORS)}.")
    if not len(dataset):
        raise InputError("The data set is empty.")
    batch_size = int(batch_size)
    if batch_size < 1:
        raise InputError(f"The batch size must be at least 1, got {batch_size}.")
    spec = spec_of(core, model)
    if executor == "ray" and spec is None:
        raise JobError("The Ray executor builds the model again in each worker and needs its description: pass "
                       "model=ModelSpec('demo') or ModelSpec('torchvision', name, weights_path_or_None).")
    plan = shard_plan(len(dataset), batch_size, shard_size)
    key = {"kind": job.kind, "settings": job.settings(), "weights_sha256": weights_hash(core),
           "data": dataset.fingerprint, "shards": [len(plan), plan[0][1] - plan[0][0]]}
    manifest = _manifest(core, dataset, job, spec, key)
    folder = Path(out) if out is not None else None
    if folder is not None:
        sweep_temporaries(folder)
    if folder is not None and resume and (folder / MANIFEST).is_file() and \
            read_json(folder / MANIFEST).get("job_key") == _as_json(key):
        return Partial(job.empty()), manifest, load(folder)
    store = ShardStore(folder, key, resume) if folder is not None else None
    done = store.finished(len(plan)) if store else set()
    todo = [i for i in range(len(plan)) if i not in done]
    tracker = Tracker(len(dataset), len(plan), sum(plan[i][1] - plan[i][0] for i in done), len(done), progress,
                      cancel, folder)
    shards = [dataset.ids[a:b] for a, b in plan]
    if executor == "local":
        finished = run_local(core, dataset, job, shards, todo, batch_size, tracker)
    else:
        finished = run_ray(dataset, job, plan, todo, batch_size, tracker, spec, key["weights_sha256"], ray_address,
                           workers)
    fold = OrderedFold(job)
    for index, partial in finished:
        if store is not None:
            store.save(index, partial, job)
        else:
            fold.add(index, partial)
    if store is not None:
        for index in range(len(plan)):
            fold.add(index, store.load(index, job))
    return fold.value, manifest, None


def _as_json(data: dict) -> dict:
    """``data`` as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(data))


def _finish(result: Result, out: str | Path | None) -> Result:
    """Save the result into ``out`` (when given); its shards are no longer needed then."""
    if out is not None:
        result.save(out)
        shutil.rmtree(Path(out) / "shards", ignore_errors=True)
    return result


def _paths(dataset: Dataset, ids: Iterable[int]) -> dict[int, str]:
    return {int(i): dataset.path(int(i)) for i in np.unique(np.fromiter(ids, dtype=np.int64))}


# ---------------------------------------------------------------------------- the jobs
def examples_job(core: ModelCore, layers: str | Iterable[str] | None = None, k: int = 9) -> ExamplesJob:
    """The job :func:`dataset_examples` runs (layers checked against the model)."""
    names = _layers(core, layers, spatial=True)
    if int(k) < 1:
        raise InputError(f"k must be at least 1, got {k}.")
    return ExamplesJob(tuple(names), tuple(tuple(core.layer(n).map_shape) for n in names), int(k))


def stats_job(core: ModelCore, layers: str | Iterable[str] | None = None) -> StatsJob:
    """The job :func:`channel_stats` runs (layers checked against the model)."""
    names = _layers(core, layers, spatial=False)
    nonnegative = frozenset(n for n in names if isinstance(core.module(n), (nn.ReLU, nn.ReLU6)))
    return StatsJob(tuple(names), tuple(core.layer(n).channels for n in names), nonnegative)


def dataset_examples(engine: ModelCore, ds: Dataset, layers: str | Iterable[str] | None = None, k: int = 9,
                     executor: str = "local", ray_address: str | None = None, progress: OnProgress | None = None,
                     out: str | Path | None = None, *, receptive: str = "auto", **options) -> DatasetExamples:
    """Per channel of ``layers`` (default: every conv and ReLU with ``(C, H, W)`` maps), the ``k``
    images with the highest maximum activation, each with the position of that maximum and its
    receptive-field box (``receptive``: ``auto``, ``geometry`` or ``gradient``). ``options``:
    ``batch_size``, ``shard_size``, ``workers``, ``cancel``, ``model``, ``resume`` (see :func:`execute`)."""
    job = examples_job(engine, layers, k)
    fields = receptive_fields(engine, job.layers, receptive)
    partial, manifest, done = execute(engine, ds, job, executor=executor, out=out, progress=progress,
                                      ray_address=ray_address, **options)
    if done is not None:
        return done  # type: ignore[return-value]
    manifest["receptive_fields"] = {n: f.as_dict() for n, f in fields.items()}
    ids = np.concatenate([state[1].ravel() for state in partial.state.values()])
    return _finish(DatasetExamples(job, partial, manifest, _paths(ds, ids)), out)  # type: ignore[return-value]


def channel_stats(engine: ModelCore, ds: Dataset, layers: str | Iterable[str] | None = None,
                  executor: str = "local", ray_address: str | None = None, progress: OnProgress | None = None,
                  out: str | Path | None = None, **options) -> ChannelStats:
    """Per channel of ``layers`` (default as :func:`dataset_examples`; a ``(F,)`` layer counts as F
    channels of one position): peak ``max |a|``, mean and fraction of positive positions."""
    job = stats_job(engine, layers)
    partial, manifest, done = execute(engine, ds, job, executor=executor, out=out, progress=progress,
                                      ray_address=ray_address, **options)
    if done is not None:
        return done  # type: ignore[return-value]
    return _finish(ChannelStats(job, partial, manifest, {}), out)  # type: ignore[return-value]


def cam_quality(engine: ModelCore, ds: Dataset, methods: str | Sequence[str] = ("gradcam",), layer: str | None = None,
                steps: int = 32, executor: str = "local", ray_address: str | None = None,
                progress: OnProgress | None = None, out: str | Path | None = None, *,
                cam_options: dict | None = None, **options) -> CamQuality:
    """Per CAM method, each image's deletion and insertion AUCs (``steps`` per curve) for its class
    (the label when the data set's labels name the model's classes, else the top-1 prediction),
    their means with 95 % intervals, and the pointing game when the data set has masks."""
    chosen = tuple(m.name for m in check_methods(methods))
    if int(steps) < 1:
        raise InputError(f"Deletion and insertion need at least one step, got steps={steps}.")
    if layer is not None:
        resolve_layer(engine, layer)
    job = CamQualityJob(chosen, layer, int(steps), tuple(sorted((cam_options or {}).items())),
                        view_of(engine.transform, engine.input_size))
    options.setdefault("batch_size", 8)
    partial, manifest, done = execute(engine, ds, job, executor=executor, out=out, progress=progress,
                                      ray_address=ray_address, **options)
    if done is not None:
        return done  # type: ignore[return-value]
    return _finish(CamQuality(job, partial, manifest, _paths(ds, partial.state["id"])), out)  # type: ignore[return-value]
