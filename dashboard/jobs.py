"""Glue of the Jobs page (``pages/jobs.py``): a job request from the page's choices, the server's pool
of workers (:mod:`.workers`), progress in words, and the finished results of the chosen model with
a short summary each. No widgets, no torch maths.

Each job writes into its own sub-folder of the results folder (:func:`.results.results_root`),
named by a hash of everything that decides it, so that starting it again — after a cancel, a crash
or a restart of the server — resumes from its finished shards, and a job already finished there is
loaded rather than run.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from cnnvis_core import Engine, InputError, cam
from cnnvis_core import jobs as core_jobs
from cnnvis_core.pruning import default_layers

from .memo import cached
from .optimize import duration
from .results import finished, results_root
from .state import ChosenData, digest
from .workers import CANCELLED, DONE, QUEUED, RUNNING, DatasetJob, JobPool, Request

#: the jobs as the page names them
KINDS = {"dataset_examples": "Dataset examples", "channel_stats": "Channel statistics", "cam_quality": "CAM quality"}
#: seconds between two looks of the page at its running jobs (each look is a short script run)
POLL_SECONDS = 1.0
#: finished results listed with their summaries (newest first)
SHOWN_RESULTS = 20
#: running and recently ended jobs listed
SHOWN_JOBS = 6


@st.cache_resource
def pool() -> JobPool:
    """The server's pool of job workers (one for every session)."""
    return JobPool()


# ---------------------------------------------------------------------------- starting
def layer_options(engine: Engine) -> list[str]:
    """The layers a job can examine: every conv and ReLU with ``(C, H, W)`` maps (the default set)."""
    return default_layers(engine)


def method_options() -> list[str]:
    """Every registered CAM method."""
    return list(cam.METHODS)


def make_request(engine: Engine, model: str, data: ChosenData, kind: str, *, layers: list[str] | tuple = (),
                 k: int = 9, methods: list[str] | tuple = (), steps: int = 32, batch_size: int | None = None,
                 shard_size: int | None = None) -> Request:
    """The request for ``kind`` on the engine's model and the data set: no layers means every layer
    of :func:`layer_options` (so that both name the same job); methods in the registry's order."""
    if data.dataset is None:
        raise InputError("Choose a usable data set in the sidebar first.")
    if kind not in KINDS:
        raise InputError(f"Unknown job {kind!r}; the jobs are {', '.join(KINDS)}.")
    if kind == "cam_quality":
        if not methods:
            raise InputError("Choose at least one CAM method.")
        chosen = [m.name for m in cam.check_methods(methods)]
        settings = (("methods", tuple(sorted(chosen, key=method_options().index))), ("steps", int(steps)))
    else:
        settings = (("layers", tuple(layers) or tuple(layer_options(engine))),)
        if kind == "dataset_examples":
            settings += (("k", int(k)),)
    return Request(kind, settings, core_jobs.weights_hash(engine), data.dataset.fingerprint, model, data.name,
                   batch_size, shard_size)


def folder_of(request: Request) -> Path:
    """The request's results folder: ``<results>/<kind>-<16 hex digits>``."""
    decided = [request.kind, request.settings, request.weights, request.data, request.batch_size, request.shard_size]
    return results_root() / f"{request.kind}-{digest(json.dumps(decided).encode())}"


def start(engine: Engine, data: ChosenData, request: Request) -> tuple[DatasetJob, bool]:
    """Queue the job (``attached`` False), or find the same one queued or running (True)."""
    return pool().start(request, engine, data.dataset, folder_of(request))


def jobs_of(engine: Engine) -> list[DatasetJob]:
    """The server's queued and running jobs on ``engine``'s model, then its recently ended ones (up to
    :data:`SHOWN_JOBS` in all), newest first."""
    found = pool().jobs(core_jobs.weights_hash(engine))
    active = [job for job in found if job.active]
    return active + [job for job in found if not job.active][:max(0, SHOWN_JOBS - len(active))]


def settings_text(request: Request) -> str:
    """``14 layers · k = 9``, ``Grad-CAM, CAM · 32 steps``."""
    settings = dict(request.settings)
    if request.kind == "cam_quality":
        titles = {m.name: m.title for m in cam.registered()}
        return f"{', '.join(titles.get(m, m) for m in settings['methods'])} · {settings['steps']} steps"
    layers = settings["layers"]
    text = f"{len(layers)} layers" if len(layers) > 1 else layers[0]
    return f"{text} · k = {settings['k']}" if "k" in settings else text


def status_line(job: DatasetJob) -> str:
    """Where ``job`` stands, in words: progress with the rate and the time left, or how it ended."""
    progress = job.progress()
    done = f"{progress.done:,} of {progress.total:,} images" if progress else ""
    if job.status == QUEUED:
        return f"Waiting for a free worker ({pool().workers} jobs run at a time)"
    if job.status == RUNNING and job.cancelling:
        return f"Cancelling… {done}".rstrip()
    if job.status == RUNNING:
        if progress is None:
            return f"Starting · {duration(job.elapsed)} elapsed"
        left = "estimating the time left" if progress.eta is None else f"about {duration(progress.eta)} left"
        skipped = f" · {progress.skipped} skipped" if progress.skipped else ""
        return f"{done} · {progress.rate:.1f} images/s · {left}{skipped}"
    if job.status == DONE:
        return ("Done: it had run already; its result was loaded" if job.reused
                else f"Done in {duration(job.elapsed)}" + (f": {done}" if done else ""))
    if job.status == CANCELLED:
        return ("Cancelled" + (f" after {done}" if done else " before it started") +
                ". Its finished shards are kept: start the same job again to go on from there.")
    return f"Failed: {job.error}"


def fraction(job: DatasetJob) -> float:
    """How far the job is, 0 to 1."""
    progress = job.progress()
    return min(1.0, progress.fraction) if progress else 0.0


# ---------------------------------------------------------------------------- finished results
@dataclass(frozen=True)
class Finished:
    """A finished result of the chosen model: its folder and manifest."""

    folder: Path
    manifest: dict

    @property
    def kind(self) -> str:
        return self.manifest.get("kind", "")

    @property
    def title(self) -> str:
        """``Channel statistics · 24 demo samples · 24 images · 2026-11-30 10:58 UTC`` (not markdown-safe)."""
        return (f"{KINDS.get(self.kind, self.kind)} · {data_label(self.manifest)} · "
                f"{self.manifest.get('images', 0):,} images · {date(self.manifest)}")


def finished_results(engine: Engine, kind: str | None = None) -> list[Finished]:
    """The finished results of ``engine``'s model in the results folder, newest first."""
    return [Finished(folder, manifest) for folder, manifest in finished(engine, kind)]


def data_label(manifest: dict) -> str:
    """The data set of a result, for people: ``24 demo samples``, ``folder /data/val``, ``archive val.zip``."""
    data = manifest.get("data", {})
    source = data.get("source", {})
    kind = source.get("kind")
    if kind == "demo":
        label = f"{source['n']:,} demo samples"
    elif kind == "folder":
        label = f"folder {source['path']}"
    elif kind == "archive":
        label = f"archive {Path(source['path']).name if source.get('path') else source.get('name', '')}"
    else:
        label = f"a list of {len(source.get('paths', []))} files"
    return f"{label} ({data['selection']})" if data.get("selection") else label


def date(manifest: dict) -> str:
    """``2026-11-30 10:58 UTC`` from the manifest's ISO time."""
    created = manifest.get("created", "")
    return f"{created[:10]} {created[11:16]} UTC" if len(created) >= 16 else created


@cached("Reading the result…")
def load(folder: str, created: str) -> core_jobs.Result:
    """The result in ``folder`` (read once per folder and date; no model pass)."""
    return core_jobs.load(folder)


def stats_rows(item: Finished) -> list[dict]:
    """One row per layer of a statistics result: channels, dead ones at ε = 0, the smallest peak and
    the mean fraction of positive positions."""
    stats = load(str(item.folder), item.manifest.get("created", ""))
    dead = {layer.name: len(layer.dead) for layer in stats.dead(0.0).layers}
    return [{"layer": name, "channels": int(stats.peak[name].size), "dead (ε = 0)": dead[name],
             "smallest peak": float(stats.peak[name].min()), "positive": f"{stats.active[name].mean():.1%}"}
            for name in stats.layers]


def quality_rows(manifest: dict) -> list[dict]:
    """One row per method of a CAM-quality result: the means with their 95 % intervals."""
    titles = {m.name: m.title for m in cam.registered()}
    return [{"method": titles.get(method, method), "images": (q["deletion"] or {}).get("n"),
             "deletion AUC (lower is better)": interval(q["deletion"]),
             "insertion AUC (higher is better)": interval(q["insertion"]),
             "pointing game": interval(q["pointing"], percent=True)}
            for method, q in manifest.get("summary", {}).items()]


def interval(value: dict | None, percent: bool = False) -> str:
    """``0.162 [0.157, 0.168]`` or ``96.3 % [95.4 %, 97.0 %]``; ``—`` when there is none."""
    if not value or value.get("mean") is None:
        return "—"
    def show(x: float | None) -> str:
        if x is None or (isinstance(x, float) and math.isnan(x)):
            return "?"
        return f"{100 * x:.1f} %" if percent else f"{x:.3f}"
    return f"{show(value['mean'])} [{show(value.get('low'))}, {show(value.get('high'))}]"


def examples_text(manifest: dict) -> str:
    """``k = 9 images for each of 192 channels in 2 layers (receptive fields: geometry)``."""
    layers = manifest.get("layers", [])
    channels = sum(layer["shape"][0] for layer in layers if layer.get("shape"))
    methods = sorted({f.get("method", "?") for f in manifest.get("receptive_fields", {}).values()})
    return (f"k = {manifest.get('settings', {}).get('k')} images for each of {channels:,} channels in "
            f"{len(layers)} layers (receptive fields: {', '.join(methods) or '?'}).")


def folder_zip(folder: Path) -> bytes:
    """The result's folder (manifest and table; no checkpoints) as a ZIP."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file() and not path.name.startswith("."):
                archive.write(path, f"{Path(folder).name}/{path.relative_to(folder).as_posix()}")
    return buffer.getvalue()
