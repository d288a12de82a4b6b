"""Glue of the filter-optimisation page (``pages/optimize.py``): choices → request, a background job,
the gallery's files.

A run can take minutes, so it runs in a worker thread (:class:`Job`) that calls
``engine.optimize`` with an ``on_step`` callback recording progress and a preview; the page
polls the job from a fragment every :data:`POLL_SECONDS` and draws a progress bar with the time
elapsed and left, the live preview (one tile per unit, captioned) and a cancel button (which
makes ``on_step`` return False: the engine stops and hands back the images reached so far; the
click waits for that, up to :data:`CANCEL_WAIT_SECONDS`, so its own rerun shows the result). The
run works on a twin of the engine (:func:`~cnnvis_core.optimize.cache.background_twin`: its own
lock, so pages never wait for its step; a background thread, so it runs on spare CPU and pauses
while pages are drawn, :mod:`cnnvis_core.priority`), and the engine caches each unit's result, so
asking again (or for an overlapping set of units) is instant.

On a shared server, runs are bounded and do not outlive their audience: a request over
:data:`WORK_BUDGET` (units × steps × pixels) is refused with its numbers; units run in batches of at
most :data:`BATCH_PIXELS` pixels (bounded memory, and Cancel acts within one small batch's step); at
most :data:`SLOTS` runs go at once, later ones wait in order and say how many are ahead; sessions
asking for the same run on the same model watch one run (:func:`start_job`), and a run stops when
its last watcher cancels or none has polled for :data:`ABANDON_SECONDS` (its tabs were closed).

Polling costs the server: each poll is a script run (of the polling fragment only). So the page
polls once a second and renews the preview's pictures every :data:`PREVIEW_SECONDS` only (every new
picture costs the browser a fetch and a redraw on the same CPUs); ``python bench/dashboard.py``
measures the job against the same call in a script.
"""

from __future__ import annotations

import dataclasses
import io
import os
import threading
import time
import zipfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

from cnnvis_core import CnnvisError, Engine, InputError, LayerInfo
from cnnvis_core.optimize import DESCRIPTIONS, PRESETS, OptimizationResult, Settings
from cnnvis_core.optimize.cache import background_twin
from cnnvis_core.optimize.loop import PREVIEW_ITEMS, preview_tiles
from cnnvis_core.optimize.run import cached_units
from cnnvis_core.priority import lower_this_thread
from cnnvis_core.render import to_png_bytes

from .state import safe_stem

#: objective kinds as the page names them
KIND_LABELS = {"channel": "Channel (mean of its map)", "neuron": "Neuron (one position)",
               "class": "Class logit (pre-softmax)", "deepdream": "Whole layer (DeepDream)"}
JOB_KEY = "_optimize_job"
PER_PAGE = 16
#: seconds between two looks of the page at a running job (each look is a script run; see above)
POLL_SECONDS = 1.0
#: how long the Cancel click waits for the worker to stop (one step, and the final scores)
CANCEL_WAIT_SECONDS = 2.0
#: the live preview's pictures are renewed at most this often (the progress text at every poll)
PREVIEW_SECONDS = 2.0
#: a run no session has looked at for this long is stopped (its tabs were closed)
ABANDON_SECONDS = 15.0
#: optimisations running at once on the server (``CNNVIS_OPTIMIZE_SLOTS``); later ones queue
SLOTS = max(1, int(os.environ.get("CNNVIS_OPTIMIZE_SLOTS") or 1))
#: the largest run one request may ask for, in units × steps × pixels (``CNNVIS_OPTIMIZE_BUDGET``;
#: the default is 64 units × 256 steps × 128² px, about 5 minutes of the demo model on 2 CPU cores)
WORK_BUDGET = int(float(os.environ.get("CNNVIS_OPTIMIZE_BUDGET") or 64 * 256 * 128 * 128))
#: the most pixels one batch of units optimises at once (units are split into batches of this many
#: pixels, so memory stays bounded and Cancel acts within one small batch's step)
BATCH_PIXELS = 16 * 128 * 128


def layer_choices(engine: Engine, kind: str) -> list[LayerInfo]:
    """Layers an objective can target: maps (any layout: a ViT block's tokens read as D×h×w) for a
    neuron, any map or vector otherwise."""
    layers = [info for info in engine.layers() if info.output_shape]
    if kind == "neuron":
        layers = [info for info in layers if info.map_shape is not None]
    return layers


def default_layer_index(layers: list[LayerInfo]) -> int:
    """A middle ReLU: deep enough to show patterns, cheap enough to optimise quickly."""
    relus = [i for i, info in enumerate(layers) if info.is_spatial and "ReLU" in info.kind]
    return relus[len(relus) // 2] if relus else 0


def parse_units(text: str, count: int) -> tuple[int, ...]:
    """``"0, 3, 7-9"`` → ``(0, 3, 7, 8, 9)``; :class:`InputError` with the valid range otherwise."""
    units: list[int] = []
    for part in (p.strip() for p in text.replace(";", ",").split(",")):
        if not part:
            continue
        try:
            if "-" in part[1:]:
                lo, hi = (int(v) for v in part.split("-", 1))
                units.extend(range(lo, hi + 1))
            else:
                units.append(int(part))
        except ValueError:
            raise InputError(f"Cannot read {part!r}: write indices like 0, 3, 7-9.") from None
    bad = [u for u in units if not 0 <= u < count]
    if bad or not units:
        raise InputError(f"Give indices between 0 and {count - 1}, like 0, 3, 7-9" +
                         (f" ({', '.join(map(str, bad[:5]))} is out of range)." if bad else "."))
    return tuple(dict.fromkeys(units))


def preset_defaults(name: str, engine: Engine) -> Settings:
    """The preset, with the model's input size filled in where it leaves the size open."""
    settings = PRESETS[name]
    return settings if settings.size is not None else settings.updated(size=int(engine.input_size[0]))


@dataclass(frozen=True)
class Request:
    """Everything that decides a run (also the key the engine caches by)."""

    layer: str | None
    units: tuple[int, ...]
    kind: str
    preset: str
    overrides: tuple[tuple[str, Any], ...]
    seed: int
    position: tuple[int, int] | None = None
    model: str = ""

    @property
    def label(self) -> str:
        where = "classes" if self.kind == "class" else self.layer
        return (f"{self.model} · {KIND_LABELS[self.kind]} · {where} · {len(self.units)} unit(s) · "
                f"{DESCRIPTIONS[self.preset]}")


    def work(self, engine: Engine) -> int:
        """What the run costs: units × steps × pixels of the largest image it optimises."""
        settings = preset_defaults(self.preset, engine).updated(**dict(self.overrides))
        side = settings.size * settings.upscale_factor ** (settings.upscale_steps - 1)
        return int(len(self.units) * settings.total_steps * side * side)

    def batches(self, engine: Engine) -> list[tuple[int, ...]]:
        """The units split into batches of at most :data:`BATCH_PIXELS` pixels (at least one unit each)."""
        settings = preset_defaults(self.preset, engine).updated(**dict(self.overrides))
        side = settings.size * settings.upscale_factor ** (settings.upscale_steps - 1)
        per_batch = max(1, int(BATCH_PIXELS // (side * side)))
        return [self.units[i:i + per_batch] for i in range(0, len(self.units), per_batch)]


class Slots:
    """The server's optimisation slots: at most :data:`SLOTS` runs at once, the others wait in
    the order they asked (a waiting run that is cancelled leaves the queue)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self._state = threading.Condition()
        self._running = 0
        self._queue: list[Job] = []

    def ahead_of(self, job: Job) -> int:
        """How many runs go before ``job`` (0 once it runs)."""
        with self._state:
            return self._running + self._queue.index(job) if job in self._queue else 0

    def take(self, job: Job) -> bool:
        """Wait for a slot; False when the job was cancelled while it waited."""
        with self._state:
            self._queue.append(job)
            while self._queue[0] is not job or self._running >= self.count:
                if job.stopping():
                    self._queue.remove(job)
                    self._state.notify_all()
                    return False
                self._state.wait(0.25)
            self._queue.pop(0)
            self._running += 1
            return True

    def give(self) -> None:
        with self._state:
            self._running -= 1
            self._state.notify_all()


SLOTS_IN_USE = Slots(SLOTS)
#: the runs in progress by (engine key, request), so sessions asking for the same run share it
_RUNNING: dict[tuple, Job] = {}
_RUNNING_LOCK = threading.Lock()


@dataclass
class Job:
    """One run in a worker thread: progress, preview and result, read by the pages watching it.

    Several sessions may watch one run (the same request on the same model); each watch is kept
    alive by the session's polls (:meth:`seen`), and the run stops once nobody watches: every
    watcher cancelled, or none has polled for :data:`ABANDON_SECONDS` (its tabs were closed).
    """

    request: Request
    step: int = 0
    total: int = 0
    preview: np.ndarray | None = None
    result: OptimizationResult | None = None
    error: str | None = None
    #: the units the live preview shows, in its order: the current batch's units not in the
    #: engine's cache already (the engine optimises only those), at most PREVIEW_ITEMS
    shown: tuple[int, ...] = ()
    started: float = 0.0
    finished: float | None = None
    _cancel: threading.Event = field(default_factory=threading.Event)
    _done: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _files: dict = field(default_factory=dict)
    _watchers: dict = field(default_factory=dict)  # session id → last poll (monotonic seconds)
    _batch: tuple[int, int, int] = (0, 1, 0)  # (index, count, steps before it)

    def start(self, engine: Engine, watcher: str = "") -> Job:
        """Run in a worker thread on a twin of ``engine`` (its own lock: pages never wait for this
        run's step in progress, which runs on spare CPU only; the images land in ``engine``'s cache)."""
        self.started = time.monotonic()
        self.seen(watcher)
        threading.Thread(target=self._run, args=(background_twin(engine),), name="cnnvis-optimize",
                         daemon=True).start()
        return self

    def seen(self, watcher: str = "") -> None:
        """A session looked at the run (its poll): keeps its watch alive."""
        with self._lock:
            self._watchers[watcher] = time.monotonic()

    def stopping(self) -> bool:
        """Whether the run should stop: cancelled by every watcher, or none has polled for
        :data:`ABANDON_SECONDS`."""
        if self._cancel.is_set():
            return True
        with self._lock:
            now = time.monotonic()
            if all(now - last > ABANDON_SECONDS for last in self._watchers.values()):
                self._cancel.set()
        return self._cancel.is_set()

    def _run(self, engine: Engine) -> None:
        lower_this_thread()  # a page's run goes ahead of the optimisation on the CPU too
        try:
            if SLOTS_IN_USE.take(self):
                try:
                    self._optimize(engine)
                finally:
                    SLOTS_IN_USE.give()
            else:
                self.error = "The run was cancelled before it started."
        except CnnvisError as error:
            self.error = str(error)
        except Exception as error:  # noqa: BLE001 - a worker thread must report, not vanish
            self.error = f"The optimisation failed unexpectedly ({type(error).__name__}: {error})."
        finally:
            self.finished = time.monotonic()
            self._done.set()

    def _optimize(self, engine: Engine) -> None:
        """Optimise the request's units batch by batch; a cancel keeps the batches done and the
        current batch's images so far."""
        r = self.request
        batches = r.batches(engine)
        parts: list[OptimizationResult] = []
        steps_before = 0
        for index, units in enumerate(batches):
            self._shown_for(engine, units)
            with self._lock:
                self._batch = (index, len(batches), steps_before)
            part = engine.optimize(r.layer, list(units), r.kind, seed=r.seed, on_step=self._on_step,
                                   preset=r.preset, position=r.position, **dict(r.overrides))
            parts.append(part)
            steps_before += part.steps_total
            if part.cancelled or self.stopping():
                break
        with self._lock:
            self.result = _joined(parts)

    def _shown_for(self, engine: Engine, units: tuple[int, ...]) -> None:
        r = self.request
        try:
            cached = set(cached_units(engine, r.layer, list(units), r.kind, seed=r.seed, preset=r.preset,
                                      position=r.position, **dict(r.overrides)))
        except CnnvisError:  # the run itself reports it
            cached = set()
        with self._lock:
            self.shown = tuple(u for u in units if u not in cached)[:PREVIEW_ITEMS]
            self._files.pop("preview", None)

    def _on_step(self, step: int, total: int, preview: np.ndarray) -> bool:
        with self._lock:
            _, count, before = self._batch
            self.step, self.total, self.preview = before + step, total * count, preview
        return not self.stopping()

    def cancel(self, wait: float = 0.0, watcher: str | None = None) -> bool:
        """Stop watching the run (``watcher``: a session; None: stop it for everyone); the run
        stops after its current step once nobody watches. Wait up to ``wait`` seconds for it to
        end (its images so far become the result); whether it has ended."""
        with self._lock:
            self._watchers.pop(watcher, None)
            if watcher is None or not self._watchers:
                self._cancel.set()
        return self._done.wait(wait)

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def elapsed(self) -> float:
        """Seconds the run has taken (so far, or in all once done)."""
        return (self.finished if self.finished is not None else time.monotonic()) - self.started

    def progress(self) -> tuple[int, int, np.ndarray | None]:
        with self._lock:
            return self.step, self.total, self.preview

    def status(self) -> str:
        """``Step 12 of 32 · 4 s elapsed · about 7 s left`` (the left time from the mean step so
        far), ``Waiting for a free slot: 2 runs ahead`` while queued."""
        step, total, _ = self.progress()
        elapsed = self.elapsed
        ahead = SLOTS_IN_USE.ahead_of(self)
        if ahead:
            return f"Waiting for a free slot: {ahead} run{'s' * (ahead > 1)} ahead · {duration(elapsed)} elapsed"
        if not total:
            return f"Starting · {duration(elapsed)} elapsed"
        left = f"about {duration(elapsed / step * (total - step))} left" if step else "estimating the time left"
        index, count, _ = self._batch
        batch = f" · batch {index + 1} of {count}" if count > 1 else ""
        return f"Step {step} of {total}{batch} · {duration(elapsed)} elapsed · {left}"

    def preview_tiles(self, categories: list[str]) -> list[tuple[bytes, str]]:
        """The live preview as ``(PNG, caption)`` per unit shown (empty before the first step),
        renewed at most every :data:`PREVIEW_SECONDS`: between two renewals the page sends the
        same files, which the browser neither fetches nor draws again."""
        _, _, grid = self.progress()
        if grid is None or not self.shown:
            return []
        now = time.monotonic()
        shown_at, tiles = self._files.get("preview", (None, None))
        if tiles is None or now - shown_at >= PREVIEW_SECONDS:
            names = [unit_name(self.request.kind, u, categories) for u in self.shown]
            tiles = [(to_png_bytes(tile), name) for tile, name in zip(preview_tiles(grid, len(self.shown)), names)]
            self._files["preview"] = (now, tiles)
        return tiles

    def png(self, index: int) -> bytes:
        """PNG file of result image ``index`` (encoded once)."""
        key = ("png", index)
        if key not in self._files:
            self._files[key] = to_png_bytes(self.result.images[index])
        return self._files[key]

    def zip(self) -> bytes:
        """Every image as a PNG in one ZIP, with the activations in ``activations.csv``."""
        if "zip" not in self._files:
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
                lines = ["unit,activation"]
                for i, unit in enumerate(self.result.units):
                    archive.writestr(self.file_name(unit, "png"), self.png(i))
                    lines.append(f"{unit},{self.result.activations[i]:.6g}")
                archive.writestr("activations.csv", "\n".join(lines) + "\n")
            self._files["zip"] = buffer.getvalue()
        return self._files["zip"]

    def file_name(self, unit: int | None, extension: str) -> str:
        """``demo_features.relu4_channel_20_lucid_seed0.png``: the model, the layer (or
        ``classes``), the objective, the unit (the ZIP has none), the recipe and the seed;
        ``cancelled_at_12_of_32`` added for a run stopped early."""
        r, result = self.request, self.result
        parts = [r.model, "classes" if r.kind == "class" else r.layer, r.kind]
        if unit is not None:
            parts.append(unit)
        parts += [r.preset, f"seed{r.seed}"]
        if result is not None and result.cancelled:
            parts.append(f"cancelled_at_{result.steps_done}_of_{result.steps_total}")
        return f"{safe_stem(*parts)}.{extension}"


def duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``."""
    seconds = max(0, round(seconds))
    return f"{seconds} s" if seconds < 60 else f"{seconds // 60} min {seconds % 60:02d} s"


def unit_name(kind: str, unit: int, categories: list[str]) -> str:
    """How the page names a unit: ``channel 20``, ``class 3: star``, ``variant 1`` (DeepDream)."""
    if kind == "class" and unit < len(categories):
        return f"class {unit}: {categories[unit]}"
    return f"variant {unit}" if kind == "deepdream" else f"{kind} {unit}"


def _joined(parts: list[OptimizationResult]) -> OptimizationResult:
    """The results of consecutive batches as one (the last one's step count when it was cancelled)."""
    last = parts[-1]
    return dataclasses.replace(
        last, units=tuple(u for p in parts for u in p.units), images=tuple(i for p in parts for i in p.images),
        activations=np.concatenate([p.activations for p in parts]), cached=sum(p.cached for p in parts),
        notes=tuple(dict.fromkeys(n for p in parts for n in p.notes)))


def session_id() -> str:
    """The browser session running this script ("" outside one)."""
    ctx = get_script_run_ctx(suppress_warning=True)
    return ctx.session_id if ctx is not None else ""


def cancel_job(job: Job) -> None:
    """This session's Cancel: stop watching ``job`` and wait (up to :data:`CANCEL_WAIT_SECONDS`)
    for it to hand back its images, so the click's own rerun shows them. A run other sessions
    still watch goes on for them, and this session lets go of it."""
    me = session_id()
    job.cancel(wait=CANCEL_WAIT_SECONDS, watcher=me)
    if not job.done and not job.stopping():
        st.session_state.pop(JOB_KEY, None)


def current_job() -> Job | None:
    """This session's run (its poll keeps the run alive: see :class:`Job`)."""
    job = st.session_state.get(JOB_KEY)
    if job is not None and not job.done:
        job.seen(session_id())
    return job


def start_job(engine: Engine, request: Request, key: str = "") -> Job:
    """Stop watching this session's running job, if any, and start one for ``request`` — or
    watch the same run another session started (``key``: the engine's cache key). Raises
    :class:`InputError` for a run over :data:`WORK_BUDGET`."""
    work = request.work(engine)
    if work > WORK_BUDGET:
        raise InputError(f"This run asks for {len(request.units)} unit(s) × its steps × its image size "
                         f"= {work:,.0f} pixel-steps; this server allows {WORK_BUDGET:,.0f} per run. Choose "
                         "fewer units, fewer steps or a smaller image.")
    me = session_id()
    old = st.session_state.get(JOB_KEY)
    if old is not None and not old.done:
        old.cancel(watcher=me)
    with _RUNNING_LOCK:
        for stale in [k for k, j in _RUNNING.items() if j.done]:
            del _RUNNING[stale]
        job = _RUNNING.get((key, request))
        if job is None or job.stopping():
            job = _RUNNING[(key, request)] = Job(request).start(engine, me)
        else:
            job.seen(me)
    st.session_state[JOB_KEY] = job
    return job


def unit_caption(result: OptimizationResult, index: int, categories: list[str]) -> str:
    name = unit_name(result.objective, result.units[index], categories)
    return f"{name} · activation {result.activations[index]:.3g}"
