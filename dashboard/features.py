"""Glue of the layer browser: ONE forward pass per (model, image), everything else from cache.

:func:`layer_capture` runs the model once with every layer hooked and keeps the outputs in
``st.cache_resource`` (shared, never copied; a resnet50 at 224 px holds about 150 MB), keyed by
the model choice and the image key. Pictures and numbers derived from it are cached with
``st.cache_data`` under plain string keys, so changing the layer, the page of channels, the
order, the colormap or the view never runs the model again.
"""

from __future__ import annotations

import io
import json

import numpy as np
import plotly.graph_objects as go
import streamlit as st
import torch
from plotly.subplots import make_subplots

from cnnvis_core import Engine, LayerInfo
from cnnvis_core import features as fx
from cnnvis_core.render import colormap_lut, to_png_bytes
from cnnvis_core.sheets import sheet_png

from .state import ChosenImage, model_key

Capture = tuple[tuple[LayerInfo, ...], dict[str, torch.Tensor]]


@st.cache_resource(max_entries=4, ttl=3600, show_spinner="Running the model once for every layer…")
def _capture(_engine: Engine, engine_key: str, _image, image_key: str) -> Capture:
    layers = tuple(_engine.layers())
    return layers, _engine.feature_maps(_image, [layer.name for layer in layers])


def layer_capture(engine: Engine, chosen: ChosenImage) -> Capture:
    """Every layer's output for the chosen image: ``(layers, {name: output})``, one forward."""
    return _capture(engine, model_key(), chosen.image, chosen.key)


def _maps(engine: Engine, chosen: ChosenImage) -> dict[str, torch.Tensor]:
    return layer_capture(engine, chosen)[1]


# ---------------------------------------------------------------------------- pictures
@st.cache_data(max_entries=128, show_spinner=False)
def _grid_png(_engine, engine_key: str, _image, image_key: str, layer: str, channels: tuple[int, ...],
              cmap: str, scaling: str) -> bytes:
    maps = _capture(_engine, engine_key, _image, image_key)[1][layer]
    return sheet_png(fx.channel_grid(maps, channels, cmap, scaling))


def grid_png(engine: Engine, chosen: ChosenImage, layer: str, channels: tuple[int, ...], cmap: str,
             scaling: str) -> bytes:
    """The chosen channels of ``layer`` as one PNG grid."""
    return _grid_png(engine, model_key(), chosen.image, chosen.key, layer, tuple(channels), cmap, scaling)


def channel_page(engine: Engine, chosen: ChosenImage, layer: str, page: int, per_page: int,
                 order: str) -> fx.ChannelPage:
    """Which channels page ``page`` (from 0) shows."""
    return fx.channel_page(_maps(engine, chosen)[layer], page, per_page, order)


@st.cache_data(max_entries=64, show_spinner=False)
def _summary_pngs(_engine, engine_key: str, _image, image_key: str, layer: str, cmap: str) -> tuple[bytes, bytes]:
    maps = _capture(_engine, engine_key, _image, image_key)[1][layer]
    return (to_png_bytes(fx.map_image(fx.mean_map(maps), "gray")),
            to_png_bytes(fx.map_image(fx.sum_map(maps), cmap)))


def summary_pngs(engine: Engine, chosen: ChosenImage, layer: str, cmap: str) -> tuple[bytes, bytes]:
    """``(channel mean in grayscale, channel sum in cmap)`` of ``layer`` as PNGs."""
    return _summary_pngs(engine, model_key(), chosen.image, chosen.key, layer, cmap)


@st.cache_data(max_entries=32, show_spinner="Drawing every layer…")
def _overview_png(_engine, engine_key: str, _image, image_key: str, kinds: tuple[str, ...], ncols: int) -> bytes:
    layers, maps = _capture(_engine, engine_key, _image, image_key)
    chosen = [layer for layer in layers if layer.kind in kinds]
    return sheet_png(fx.overview_sheet(chosen, maps, ncols))


def overview_png(engine: Engine, chosen: ChosenImage, kinds: tuple[str, ...], ncols: int) -> bytes:
    """One mean map per layer of the chosen kinds, titled, as one PNG."""
    return _overview_png(engine, model_key(), chosen.image, chosen.key, tuple(sorted(kinds)), ncols)


def channel_values(engine: Engine, chosen: ChosenImage, layer: str, channel: int) -> np.ndarray:
    """The ``(H, W)`` values of one channel."""
    return _maps(engine, chosen)[layer][channel].numpy()


def vector_values(engine: Engine, chosen: ChosenImage, layer: str) -> np.ndarray:
    """A non-spatial layer's output as a flat vector."""
    return fx.as_vector(_maps(engine, chosen)[layer])


def channel_ranking(engine: Engine, chosen: ChosenImage, layer: str) -> np.ndarray:
    """Channels by mean activation, strongest first."""
    return fx.channel_order(_maps(engine, chosen)[layer], "mean")


# ---------------------------------------------------------------------------- numbers and files
@st.cache_data(max_entries=32, show_spinner=False)
def _stats(_engine, engine_key: str, _image, image_key: str) -> list[fx.LayerStats]:
    layers, maps = _capture(_engine, engine_key, _image, image_key)
    return fx.depth_stats(layers, maps)


def layer_statistics(engine: Engine, chosen: ChosenImage) -> list[fx.LayerStats]:
    """:class:`~cnnvis_core.features.LayerStats` of every layer, in execution order."""
    return _stats(engine, model_key(), chosen.image, chosen.key)


@st.cache_data(max_entries=16, show_spinner=False)
def _activation_files(_engine, engine_key: str, _image, image_key: str, layer: str) -> tuple[bytes, bytes]:
    layers, maps = _capture(_engine, engine_key, _image, image_key)
    array = maps[layer].numpy()
    npy, npz = io.BytesIO(), io.BytesIO()
    np.save(npy, array)
    info = next(item for item in layers if item.name == layer)
    meta = json.dumps({"layer": layer, "kind": info.kind, "model": engine_key, "image": image_key})
    np.savez_compressed(npz, activations=array, channel_means=fx.channel_means(maps[layer]),
                        meta=np.array(meta))
    return npy.getvalue(), npz.getvalue()


def activation_files(engine: Engine, chosen: ChosenImage, layer: str) -> tuple[bytes, bytes]:
    """``(.npy of the layer's output, .npz with it, its channel means and a JSON note)``."""
    return _activation_files(engine, model_key(), chosen.image, chosen.key, layer)


def file_stem(chosen: ChosenImage, layer: str) -> str:
    """A file-name stem naming the image and the layer."""
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in f"{chosen.key}_{layer}")
    return safe.strip("_")


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
        strip = fx.heat_strip(values, 64)
        index = np.arange(strip.size).reshape(strip.shape)
        figure = go.Figure(go.Heatmap(z=strip, customdata=index, colorscale=plotly_colorscale(cmap),
                                      hovertemplate="index %{customdata}: %{z:.4g}<extra></extra>"))
        figure.update_yaxes(autorange="reversed", title="index ÷ 64")
        figure.update_xaxes(title="index mod 64")
    figure.update_layout(title=title, height=420, margin=dict(l=10, r=10, t=40, b=10))
    return figure


def depth_figure(stats: list[fx.LayerStats]) -> go.Figure:
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


def stats_rows(stats: list[fx.LayerStats]) -> list[dict]:
    """Rows for a table of the statistics."""
    return [{"#": s.index, "layer": s.name, "type": s.kind, "channels": s.channels,
             "sparsity": round(s.sparsity, 4), "mean": s.mean, "max": s.max, "zero channels": s.zero_channels}
            for s in stats]
