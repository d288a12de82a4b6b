"""Cached calls and figures of the layer browser (``pages/layers.py``): ONE forward pass per
(model, image), everything else from cache.

:func:`layer_capture` runs the model once with every layer hooked and keeps the outputs in
``st.cache_resource`` (shared, never copied; a resnet50 at 224 px holds about 150 MB), keyed by
the engine and the image (hashed by their keys, :data:`~dashboard.state.HASH_FUNCS`). Pictures and
numbers derived from it are cached with ``st.cache_data`` the same way, so changing the layer, the
page of channels, the order, the colormap or the view never runs the model again.
"""

from __future__ import annotations

import io
import json

import numpy as np
import plotly.graph_objects as go
import streamlit as st
import torch
from plotly.subplots import make_subplots

from cnnvis_core import Engine, LayerInfo, features
from cnnvis_core.render import colormap_lut, to_png_bytes
from cnnvis_core.sheets import sheet_png

from .state import HASH_FUNCS, ChosenImage, engine_key, safe_stem

Capture = tuple[tuple[LayerInfo, ...], dict[str, torch.Tensor]]


@st.cache_resource(max_entries=4, ttl=3600, show_spinner="Running the model once for every layer…",
                   hash_funcs=HASH_FUNCS)
def layer_capture(engine: Engine, chosen: ChosenImage) -> Capture:
    """Every layer's output for the chosen image: ``(layers, {name: output})``, one forward."""
    layers = tuple(engine.layers())
    return layers, engine.feature_maps(chosen.image, [layer.name for layer in layers])


def _maps(engine: Engine, chosen: ChosenImage) -> dict[str, torch.Tensor]:
    return layer_capture(engine, chosen)[1]


# ---------------------------------------------------------------------------- pictures
@st.cache_data(max_entries=128, show_spinner=False, hash_funcs=HASH_FUNCS)
def grid_png(engine: Engine, chosen: ChosenImage, layer: str, channels: tuple[int, ...], cmap: str,
             scaling: str) -> bytes:
    """The chosen channels of ``layer`` as one PNG grid."""
    return sheet_png(features.channel_grid(_maps(engine, chosen)[layer], channels, cmap, scaling))


def channel_page(engine: Engine, chosen: ChosenImage, layer: str, page: int, per_page: int,
                 order: str) -> features.ChannelPage:
    """Which channels page ``page`` (from 0) shows."""
    return features.channel_page(_maps(engine, chosen)[layer], page, per_page, order)


@st.cache_data(max_entries=64, show_spinner=False, hash_funcs=HASH_FUNCS)
def summary_pngs(engine: Engine, chosen: ChosenImage, layer: str, cmap: str) -> tuple[bytes, bytes]:
    """``(channel mean in grayscale, channel sum in cmap)`` of ``layer`` as PNGs."""
    maps = _maps(engine, chosen)[layer]
    return (to_png_bytes(features.map_image(features.mean_map(maps), "gray")),
            to_png_bytes(features.map_image(features.sum_map(maps), cmap)))


@st.cache_data(max_entries=32, show_spinner="Drawing every layer…", hash_funcs=HASH_FUNCS)
def overview_png(engine: Engine, chosen: ChosenImage, kinds: tuple[str, ...], ncols: int) -> bytes:
    """One mean map per layer of the chosen kinds (give them sorted: one cache entry per set), titled,
    as one PNG."""
    layers, maps = layer_capture(engine, chosen)
    shown = [layer for layer in layers if layer.kind in kinds]
    return sheet_png(features.overview_sheet(shown, maps, ncols))


def channel_values(engine: Engine, chosen: ChosenImage, layer: str, channel: int) -> np.ndarray:
    """The ``(H, W)`` values of one channel."""
    return _maps(engine, chosen)[layer][channel].numpy()


def vector_values(engine: Engine, chosen: ChosenImage, layer: str) -> np.ndarray:
    """A non-spatial layer's output as a flat vector."""
    return features.as_vector(_maps(engine, chosen)[layer])


def channel_ranking(engine: Engine, chosen: ChosenImage, layer: str) -> np.ndarray:
    """Channels by mean activation, strongest first."""
    return features.channel_order(_maps(engine, chosen)[layer], "mean")


# ---------------------------------------------------------------------------- numbers and files
@st.cache_data(max_entries=32, show_spinner=False, hash_funcs=HASH_FUNCS)
def layer_statistics(engine: Engine, chosen: ChosenImage) -> list[features.LayerStats]:
    """:class:`~cnnvis_core.features.LayerStats` of every layer, in execution order."""
    return features.depth_stats(*layer_capture(engine, chosen))


@st.cache_data(max_entries=16, show_spinner=False, hash_funcs=HASH_FUNCS)
def activation_files(engine: Engine, chosen: ChosenImage, layer: str) -> tuple[bytes, bytes]:
    """``(.npy of the layer's output, .npz with it, its channel means and a JSON note)``."""
    layers, maps = layer_capture(engine, chosen)
    array = maps[layer].numpy()
    npy, npz = io.BytesIO(), io.BytesIO()
    np.save(npy, array)
    info = next(item for item in layers if item.name == layer)
    meta = json.dumps({"layer": layer, "kind": info.kind, "model": engine_key(engine), "image": chosen.key})
    np.savez_compressed(npz, activations=array, channel_means=features.channel_means(maps[layer]),
                        meta=np.array(meta))
    return npy.getvalue(), npz.getvalue()


def file_stem(chosen: ChosenImage, layer: str) -> str:
    """A file-name stem naming the image and the layer."""
    return safe_stem(chosen.key, layer)


# ---------------------------------------------------------------------------- charts
def plotly_colorscale(cmap: str, steps: int = 32) -> list[list]:
    """Our colormap as a plotly colour scale (the same colours as the PNGs)."""
    lut = colormap_lut(cmap)
    picks = np.linspace(0, 255, steps).round().astype(int)
    return [[i / (steps - 1), f"rgb({lut[p][0]},{lut[p][1]},{lut[p][2]})"] for i, p in enumerate(picks)]


def channel_heatmap(values: np.ndarray, cmap: str, title: str) -> go.Figure:
    """One channel as an interactive heatmap (hover: row, column, value), square pixels."""
    figure = go.Figure(go.Heatmap(z=values, colorscale=plotly_colorscale(cmap),
                                  hovertemplate="row %{y}, col %{x}<br>activation %{z:.4g}<extra></extra>"))
    figure.update_yaxes(autorange="reversed", scaleanchor="x", constrain="domain")
    figure.update_xaxes(constrain="domain")
    figure.update_layout(title=title, height=520, margin=dict(l=10, r=10, t=40, b=10))
    return figure


def vector_figure(values: np.ndarray, title: str, cmap: str) -> go.Figure:
    """A vector output: a bar per element up to 256 elements, else a heat strip of 64 per row."""
    if values.size <= 256:
        figure = go.Figure(go.Bar(x=np.arange(values.size), y=values, marker_color="#4c78a8",
                                  hovertemplate="index %{x}: %{y:.4g}<extra></extra>"))
        figure.update_layout(xaxis_title="index", yaxis_title="value")
    else:
        strip = features.heat_strip(values, 64)
        index = np.arange(strip.size).reshape(strip.shape)
        figure = go.Figure(go.Heatmap(z=strip, customdata=index, colorscale=plotly_colorscale(cmap),
                                      hovertemplate="index %{customdata}: %{z:.4g}<extra></extra>"))
        figure.update_yaxes(autorange="reversed", title="index ÷ 64")
        figure.update_xaxes(title="index mod 64")
    figure.update_layout(title=title, height=420, margin=dict(l=10, r=10, t=40, b=10))
    return figure


def depth_figure(stats: list[features.LayerStats]) -> go.Figure:
    """Sparsity, mean and max, and all-zero channels of each layer, over depth (3 rows)."""
    x = [s.name for s in stats]
    names = [f"#{s.index} {s.kind}" for s in stats]
    figure = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.09,
                           subplot_titles=("Sparsity: fraction of activations = 0", "Mean and max activation",
                                           "Channels all zero for this image"))
    hover = "%{text}<br>%{y:.4g}<extra></extra>"
    figure.add_trace(go.Scatter(x=x, y=[s.sparsity for s in stats], text=names, mode="lines+markers",
                                name="sparsity", hovertemplate=hover), 1, 1)
    figure.add_trace(go.Scatter(x=x, y=[s.mean for s in stats], text=names, mode="lines+markers",
                                name="mean", hovertemplate=hover), 2, 1)
    figure.add_trace(go.Scatter(x=x, y=[s.max for s in stats], text=names, mode="lines+markers",
                                name="max", hovertemplate=hover), 2, 1)
    figure.add_trace(go.Bar(x=x, y=[s.zero_channels for s in stats], text=names, name="zero channels",
                            hovertemplate=hover, textposition="none"), 3, 1)
    figure.update_yaxes(range=[0, 1], tickformat=".0%", row=1, col=1)
    most = max((s.zero_channels for s in stats), default=0)
    figure.update_yaxes(range=[0, max(1, most) * 1.1], tick0=0, dtick=max(1, -(-most // 5)), row=3, col=1)
    figure.update_xaxes(type="category", categoryorder="array", categoryarray=x)
    figure.update_xaxes(title="layer, in execution order", row=3, col=1)
    figure.update_layout(height=720, margin=dict(l=10, r=10, t=40, b=10), legend=dict(orientation="h"))
    return figure


def stats_rows(stats: list[features.LayerStats]) -> list[dict]:
    """Rows for a table of the statistics."""
    return [{"#": s.index, "layer": s.name, "type": s.kind, "channels": s.channels,
             "sparsity": round(s.sparsity, 4), "mean": s.mean, "max": s.max, "zero channels": s.zero_channels}
            for s in stats]
