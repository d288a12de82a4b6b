"""Glue of the filter-optimisation page (``pages/optimize.py``): choices → request, a background job,
the gallery's files.

A run can take minutes, so it runs in a worker thread (:class:`Job`) that calls
``engine.optimize`` with an ``on_step`` callback recording progress and a preview; the page
polls the job from a fragment every half second and draws a progress bar, the live preview
and a cancel button (which makes ``on_step`` return False: the engine stops and hands back the
images reached so far). The engine takes its lock per step, so other users interleave, and
caches each unit's result, so asking again (or for an overlapping set of units) is instant.
"""

from __future__ import annotations

import io
import threading
import zipfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import streamlit as st

from cnnvis_core import CnnvisError, Engine, InputError, LayerInfo
from cnnvis_core.optimize import DESCRIPTIONS, PRESETS, OptimizationResult, Settings
from cnnvis_core.render import to_png_bytes

#: objective kinds as the page names them
KIND_LABELS = {"channel": "Channel (mean of its map)", "neuron": "Neuron (one position)",
               "class": "Class logit (pre-softmax)", "deepdream": "Whole layer (DeepDream)"}
JOB_KEY = "_optimize_job"
PER_PAGE = 16


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
    _cancel: threading.Event = field(default_factory=threading.Event)
    _done: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _files: dict = field(default_factory=dict)

    def start(self, engine: Engine) -> Job:
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
            self._done.set()

    def _on_step(self, step: int, total: int, preview: np.ndarray) -> bool:
        with self._lock:
            self.step, self.total, self.preview = step, total, preview
        return not self._cancel.is_set()

    def cancel(self) -> None:
        self._cancel.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def progress(self) -> tuple[int, int, np.ndarray | None]:
        with self._lock:
            return self.step, self.total, self.preview

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
                    archive.writestr(f"{file_stem(self.request)}_{unit}.png", self.png(i))
                    lines.append(f"{unit},{self.result.activations[i]:.6g}")
                archive.writestr("activations.csv", "\n".join(lines) + "\n")
            self._files["zip"] = buffer.getvalue()
        return self._files["zip"]


def file_stem(request: Request) -> str:
    where = "class" if request.kind == "class" else (request.layer or "layer").replace(".", "_")
    return f"{where}_{request.kind}_{request.preset}_seed{request.seed}"


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
    unit = result.units[index]
    name = f"class {unit}: {categories[unit]}" if result.objective == "class" and unit < len(categories) \
        else f"{result.objective} {unit}"
    return f"{name} · activation {result.activations[index]:.3g}"
