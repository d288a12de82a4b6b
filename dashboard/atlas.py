"""Glue of the unit atlas page (``pages/atlas.py``): finished results, cached pictures and figures.

Everything a unit page shows comes from the stored dataset-examples result or a cache: the grid's
mosaics and the crops are cut from the image files (no model), the channel's maps over the crops
cost ONE forward pass of its top images the first time (then the dashboard's cache), kernel slices
and the logit view read weights only, and feature visualisations run in the background (the
filter-optimisation page's :class:`~dashboard.optimize.Job`) and are kept by the engine. So a
second visit to a unit runs no model pass. No widgets here; no torch maths.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from cnnvis_core import CnnvisError, Engine, atlas, jobs
from cnnvis_core.jobs import ChannelStats, DatasetExamples
from cnnvis_core.optimize.run import cached_units
from cnnvis_core.render import to_png_bytes

from . import results
from .memo import cached
from .optimize import Job, Request, preset_defaults, session_id
from .state import Picture, picture, sheet_style

#: channels per page of the grid, and its columns
PER_PAGE, COLUMNS = 24, 6
#: the feature visualisations' recipe (the optimize page's Lucid preset, at the model's input size)
FV_PRESET = "lucid"
#: settings over the preset's (tests shorten the run with ``{"steps": 4}``)
FV_SETTINGS: dict = {}
FV_KEY = "_atlas_fv"


def found(engine: Engine) -> list[tuple[Path, dict]]:
    """The chosen model's finished dataset-examples results, newest first."""
    return results.finished(engine, "dataset_examples")


def label(folder: Path, manifest: dict) -> str:
    """How the result picker names a result."""
    data = manifest.get("data", {})
    return (f"{data.get('description', folder.name)} · {manifest.get('images', '?')} images · "
            f"top {manifest.get('settings', {}).get('k', '?')} · {manifest.get('created', '')[:16]}")


@cached()
def load(folder: str, _stamp: float = 0.0) -> DatasetExamples:
    """The result in ``folder`` (one object per folder and manifest time, shared by sessions)."""
    result = jobs.load(folder)
    if not isinstance(result, DatasetExamples):
        raise CnnvisError(f"{folder} holds a {result.kind} result, not dataset examples.")
    return result


def open_result(folder: str | Path) -> DatasetExamples:
    path = Path(folder)
    return load(str(path), (path / "manifest.json").stat().st_mtime)


def stats_for(engine: Engine, result: DatasetExamples) -> ChannelStats | None:
    """A finished channel-statistics result of the same model and data set, if there is one."""
    for folder, manifest in results.finished(engine, "channel_stats"):
        if manifest.get("data", {}).get("fingerprint") == result.fingerprint:
            loaded = jobs.load(folder)
            return loaded if isinstance(loaded, ChannelStats) else None
    return None


@cached()
def table(engine: Engine, folder: str, layer: str, eps: float) -> atlas.UnitTable:
    """The layer's channels: peak, mean, selectivity, dead (from a stats result when there is one)."""
    result = open_result(folder)
    return atlas.unit_table(result, layer, stats_for(engine, result), eps)


@cached()
def images(folder: str) -> atlas.Images:
    """The result's images, opened once each (shared: opening a demo sample draws it)."""
    return atlas.Images(open_result(folder))


@cached()
def mosaic_png(folder: str, layer: str, channel: int) -> bytes:
    """The grid cell's picture: the channel's top crops as a 3 × 3 mosaic (no model)."""
    shown = images(folder)
    crops = [shown.crop(example) for example in open_result(folder).top(layer, channel)]
    return to_png_bytes(atlas.mosaic(crops), compress_level=1)


@cached()
def maps(engine: Engine, folder: str, layer: str, channel: int) -> dict[tuple[int, int], np.ndarray]:
    """The channel's maps on its top images: ONE forward pass the first time, then cached."""
    return atlas.unit_maps(engine, open_result(folder), layer, [channel], images=images(folder))


@cached()
def examples(engine: Engine, folder: str, layer: str, channel: int, alpha: float, cmap: str = "jet"
             ) -> list[tuple[bytes, str]]:
    """The channel's top examples as ``(PNG of the crop with the map at opacity alpha, caption)``."""
    result, shown = open_result(folder), images(folder)
    items = atlas.unit_examples(result, layer, channel, maps(engine, folder, layer, channel), images=shown)
    return [(to_png_bytes(item.overlay(alpha, cmap), 1),
             f"#{n + 1} · {item.example.activation:.3g} at {item.example.position}") for n, item in enumerate(items)]


@cached()
def whole_pngs(folder: str, layer: str, channel: int) -> list[bytes]:
    """The whole image of each top example (no model)."""
    shown = images(folder)
    return [to_png_bytes(shown(e.path).convert("RGB"), 1) for e in open_result(folder).top(layer, channel)]


@cached()
def projection_pngs(engine: Engine, folder: str, layer: str, channel: int) -> list[bytes]:
    """The deconvnet projection of each top example over its crop (k passes the first time)."""
    pictures = atlas.projections(engine, open_result(folder), layer, channel, images(folder))
    return [to_png_bytes(picture, 1) for picture in pictures]


def histogram_figure(result: DatasetExamples, layer: str, channel: int, eps: float) -> go.Figure:
    """The distribution of the channel's peak per image (plotly bars as wide as their bins), with
    the dead-channel threshold marked."""
    hist = result.histogram(layer, channel)
    figure = go.Figure(go.Bar(x=(hist.low + hist.high) / 2, y=hist.counts, width=hist.high - hist.low,
                              marker_color="#4c78a8", hovertemplate="%{y} image(s) near %{x:.3g}<extra></extra>"))
    figure.add_vline(x=eps, line_dash="dash", line_color="#d62728", annotation_text=f"dead ≤ {eps:g}")
    figure.update_layout(height=260, margin=dict(l=10, r=10, t=30, b=10), bargap=0,
                         title="Peak activation per image over the data set",
                         xaxis_title="the channel's maximum on the image", yaxis_title="images")
    return figure


@cached()
def kernels(engine: Engine, layer: str, channel: int) -> tuple[str, Picture] | None:
    """``(conv, picture)`` of the filter behind the channel, as the Kernels page draws slices."""
    style = sheet_style()
    found_ = atlas.kernel_slices(engine, layer, channel, style=style)
    return None if found_ is None else (found_[0], picture(found_[1], style))


def logit_figure(engine: Engine, layer: str, channel: int) -> go.Figure | None:
    """The classes the channel raises and lowers most (weights of the classifier), or None."""
    view = atlas.logit_view(engine, layer, channel)
    if view is None:
        return None
    rows = list(view.raises) + list(reversed(view.lowers))
    figure = go.Figure(go.Bar(x=[r.weight for r in rows], y=[f"{r.index}: {r.label}" for r in rows],
                              orientation="h", marker_color=["#4c78a8" if r.weight >= 0 else "#f58518" for r in rows]))
    figure.update_layout(height=40 + 24 * len(rows), margin=dict(l=10, r=10, t=30, b=10),
                         title=f"Weights of {view.linear} for channel {channel}",
                         yaxis=dict(autorange="reversed"), xaxis_title="weight (logit per unit of mean activation)")
    return figure


# ---------------------------------------------------------------------------- feature visualisations
def fv_request(engine: Engine, layer: str, channel: int, seed: int) -> Request:
    """The optimize page's request for one channel and seed (the Lucid recipe at the input size)."""
    settings = {"size": int(preset_defaults(FV_PRESET, engine).size), **FV_SETTINGS}
    return Request(layer, (int(channel),), "channel", FV_PRESET, tuple(sorted(settings.items())), int(seed), None,
                   engine.name)


def cached_visualisations(engine: Engine, layer: str, channel: int, seeds: int) -> list[tuple[int, np.ndarray]]:
    """``[(seed, image)]`` of the channel's visualisations the engine holds already (no pass)."""
    out = []
    for seed in range(seeds):
        r = fv_request(engine, layer, channel, seed)
        try:
            if cached_units(engine, layer, [channel], "channel", seed=seed, preset=FV_PRESET, **dict(r.overrides)):
                result = engine.optimize(layer, [channel], "channel", seed=seed, preset=FV_PRESET, **dict(r.overrides))
                out.append((seed, result.images[0]))
        except CnnvisError:
            return out
    return out


@dataclass
class Visualisations:
    """Feature visualisations of one channel for several seeds, one optimize :class:`Job` after the
    other in a background thread."""

    key: tuple
    jobs: list[Job]
    _done: threading.Event = field(default_factory=threading.Event)

    def start(self, engine: Engine) -> Visualisations:
        def run() -> None:
            for job in self.jobs:
                job.start(engine).wait()
            self._done.set()
        threading.Thread(target=run, name="cnnvis-atlas-fv", daemon=True).start()
        return self

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def progress(self) -> tuple[float, str]:
        """The fraction done and a line for the progress bar."""
        parts = [job.progress() for job in self.jobs]
        fraction = sum((step / total if total else 0.0) if not job.done else 1.0
                       for job, (step, total, _) in zip(self.jobs, parts)) / len(self.jobs)
        current = next((job for job in self.jobs if not job.done), self.jobs[-1])
        return fraction, f"Seed {current.request.seed + 1} of {len(self.jobs)} · {current.status()}"

    def errors(self) -> list[str]:
        return [job.error for job in self.jobs if job.error]


def start_visualisations(engine: Engine, layer: str, channel: int, seeds: int) -> Visualisations:
    """Start this session's visualisations of the channel (any earlier ones of it are cancelled)."""
    old = st.session_state.get(FV_KEY)
    if old is not None and not old.done:
        for job in old.jobs:
            job.cancel()
    run = Visualisations((layer, channel, seeds), [Job(fv_request(engine, layer, channel, s)) for s in range(seeds)])
    st.session_state[FV_KEY] = run.start(engine)
    return run


def current_visualisations(layer: str, channel: int) -> Visualisations | None:
    """This session's visualisations of the channel, if any; reading them is the page's poll, which
    keeps their runs watched (an optimisation nobody polls stops: :class:`~dashboard.optimize.Job`)."""
    run = st.session_state.get(FV_KEY)
    if run is None or run.key[:2] != (layer, channel):
        return None
    if not run.done:
        me = session_id()
        for job in run.jobs:
            job.seen(me)
    return run
