"""Glue of the filter-optimisation page (``pages/optimize.py``): choices → request, a background job,
the gallery's files.

A run can take minutes, so it runs in a worker thread (:class:`Job`) that calls
``engine.optimize`` with an ``on_step`` callback recording progress and a preview; the page
polls the job from a fragment every :data:`POLL_SECONDS` and draws a progress bar with the time
elapsed and left, the live preview (one tile per unit, captioned) and a cancel button (which
makes ``on_step`` return False: the engine stops and hands back the images reached so far; the
click waits for that, up to :data:`CANCEL_WAIT_SECONDS`, so its own rerun shows the result). The
engine takes its lock per step, so other users interleave, and caches each unit's result, so
asking again (or for an overlapping set of units) is instant.

Polling costs the worker: each poll is a script run, and a script run holds the interpreter
(the GIL) while the optimisation's Python between torch calls waits for it, and every new
picture costs the browser a fetch and a redraw on the same CPUs. So the page polls once a
second, renews the preview's pictures every :data:`PREVIEW_SECONDS` only, and the server does
not collect garbage after every script run (``runner.postScriptGC = false`` in
``.streamlit/config.toml``: a full collection of the server's heap took 0.3–0.5 s, once per
poll; ``python bench/dashboard.py`` measures the job against the same call in a script).
"""

from __future__ import annotations

import io
import threading
import time
import zipfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import streamlit as st

from cnnvis_core import CnnvisError, Engine, InputError, LayerInfo
from cnnvis_core.optimize import DESCRIPTIONS, PRESETS, OptimizationResult, Settings
from cnnvis_core.optimize.loop import PREVIEW_ITEMS, preview_tiles
from cnnvis_core.optimize.run import cached_units
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


def layer_choices(engine: Engine, kind: str) -> list[LayerInfo]:
    """Layers an objective can target: spatial maps for a neuron, any map or vector otherwise."""
    layers = [info for info in engine.layers() if info.output_shape]
    if kind == "neuron":
        layers = [info for info in layers if info.is_spatial]
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


@dataclass
class Job:
    """One run in a worker thread: progress, preview and result, read by the page while it runs."""

    request: Request
    step: int = 0
    total: int = 0
    preview: np.ndarray | None = None
    result: OptimizationResult | None = None
    error: str | None = None
    #: the units the live preview shows, in its order: the request's units not in the engine's
    #: cache already (the engine optimises only those), at most PREVIEW_ITEMS
    shown: tuple[int, ...] = ()
    started: float = 0.0
    finished: float | None = None
    _cancel: threading.Event = field(default_factory=threading.Event)
    _done: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _files: dict = field(default_factory=dict)

    def start(self, engine: Engine) -> Job:
        r = self.request
        try:
            cached = set(cached_units(engine, r.layer, list(r.units), r.kind, seed=r.seed, preset=r.preset,
                                      position=r.position, **dict(r.overrides)))
        except CnnvisError:  # the run itself reports it
            cached = set()
        self.shown = tuple(u for u in r.units if u not in cached)[:PREVIEW_ITEMS]
        self.started = time.monotonic()
        threading.Thread(target=self._run, args=(engine,), name="cnnvis-optimize", daemon=True).start()
        return self

    def _run(self, engine: Engine) -> None:
        r = self.request
        try:
            result = engine.optimize(r.layer, list(r.units), r.kind, seed=r.seed, on_step=self._on_step,
                                     preset=r.preset, position=r.position, **dict(r.overrides))
            with self._lock:
                self.result = result
        except CnnvisError as error:
            self.error = str(error)
        except Exception as error:  # noqa: BLE001 - a worker thread must report, not vanish
            self.error = f"The optimisation failed unexpectedly ({type(error).__name__}: {error})."
        finally:
            self.finished = time.monotonic()
            self._done.set()

    def _on_step(self, step: int, total: int, preview: np.ndarray) -> bool:
        with self._lock:
            self.step, self.total, self.preview = step, total, preview
        return not self._cancel.is_set()

    def cancel(self, wait: float = 0.0) -> bool:
        """Ask the run to stop after its current step; wait up to ``wait`` seconds for it to
        end (its images so far become the result); whether it has ended."""
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
        """``Step 12 of 32 · 4 s elapsed · about 7 s left`` (the left time from the mean step so far)."""
        step, total, _ = self.progress()
        elapsed = self.elapsed
        if not total:
            return f"Starting · {duration(elapsed)} elapsed"
        left = f"about {duration(elapsed / step * (total - step))} left" if step else "estimating the time left"
        return f"Step {step} of {total} · {duration(elapsed)} elapsed · {left}"

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


def current_job() -> Job | None:
    return st.session_state.get(JOB_KEY)


def start_job(engine: Engine, request: Request) -> Job:
    """Cancel this session's running job, if any, and start one for ``request``."""
    old = current_job()
    if old is not None and not old.done:
        old.cancel()
    job = Job(request).start(engine)
    st.session_state[JOB_KEY] = job
    return job


def unit_caption(result: OptimizationResult, index: int, categories: list[str]) -> str:
    name = unit_name(result.objective, result.units[index], categories)
    return f"{name} · activation {result.activations[index]:.3g}"
