"""Cached calls and figures of the layer browser (``pages/layers.py``): ONE forward pass per
(model, image), everything else from cache.

:func:`layer_capture` runs the model once with every layer hooked and keeps the outputs in
the dashboard's byte-bounded cache (:func:`dashboard.memo.cached`: shared, never copied; a resnet50
at 224 px holds about 150 MB, counted as such against ``CNNVIS_CACHE_MB``), keyed by the engine and
the image (by their keys, :data:`~dashboard.state.HASH_FUNCS`). Pictures and numbers derived from it
are cached the same way, so changing the layer, the page of channels, the order, the colormap or the
view never runs the model again.
"""

from __future__ import annotations

import io

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from cnnvis_core import Engine, LayerInfo, features
from cnnvis_core.render import colormap_lut

from .memo import cached
from .state import ChosenImage, ModelChoice, Picture, picture, safe_stem, sheet_style

Capture = tuple[tuple[LayerInfo, ...], dict[str, torch.Tensor]]


@cached("Running the model once for every layer…")
def layer_capture(engine: Engine, chosen: ChosenImage) -> Capture:
    """Every layer's output for the chosen image: ``(layers, {name: output})``, one forward."""
    layers = tuple(engine.layers())
    return layers, engine.feature_maps(chosen.image, [layer.name for layer in layers])


def _maps(engine: Engine, chosen: ChosenImage) -> dict[str, torch.Tensor]:
    return layer_capture(engine, chosen)[1]


# ---------------------------------------------------------------------------- pictures
@cached()
def grid_picture(engine: Engine, chosen: ChosenImage, layer: str, channels: tuple[int, ...], cmap: str,
                 scaling: str) -> Picture:
    """The chosen channels of ``layer`` as one labelled grid with its colour scale."""
    style = sheet_style()
    return picture(features.channel_grid(_maps(engine, chosen)[layer], channels, cmap, scaling, style=style), style)


def channel_page(engine: Engine, chosen: ChosenImage, layer: str, page: int, per_page: int,
                 order: str) -> features.ChannelPage:
    """Which channels page ``page`` (from 0) shows."""
    return features.channel_page(_maps(engine, chosen)[layer], page, per_page, order)


@cached()
def sum_and_max(engine: Engine, chosen: ChosenImage, layer: str, cmap: str) -> tuple[Picture, Picture]:
    """``(channel sum, maximum over channels)`` of ``layer``, each with its own colour scale."""
    maps = _maps(engine, chosen)[layer]
    style = sheet_style(width=440)
    return (picture(features.map_image(features.sum_map(maps), cmap, style=style, label="sum over channels"), style),
            picture(features.map_image(features.max_map(maps), cmap, style=style, label="max over channels"), style))


@cached("Drawing every layer…")
def overview_picture(engine: Engine, chosen: ChosenImage, kinds: tuple[str, ...], ncols: int) -> Picture:
    """One mean map per layer of the chosen kinds (give them sorted: one cache entry per set),
    titled, with each map's range and the colour scale, as one picture."""
    layers, maps = layer_capture(engine, chosen)
    shown = [layer for layer in layers if layer.kind in kinds]
    style = sheet_style()
    return picture(features.overview_sheet(shown, maps, ncols, style=style), style)


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
@cached()
def layer_statistics(engine: Engine, chosen: ChosenImage) -> list[features.LayerStats]:
    """:class:`~cnnvis_core.features.LayerStats` of every layer, in execution order."""
    return features.depth_stats(*layer_capture(engine, chosen))


@cached()
def activation_files(engine: Engine, chosen: ChosenImage, layer: str, model: ModelChoice | None
                     ) -> tuple[bytes, bytes]:
    """``(.npy of the layer's output, .npz with it, its channel means and a note)``: the note is
    plain text naming the model, its weights, the layer and the image."""
    layers, maps = layer_capture(engine, chosen)
    array = maps[layer].numpy()
    npy, npz = io.BytesIO(), io.BytesIO()
    np.save(npy, array)
    info = next(item for item in layers if item.name == layer)
    np.savez_compressed(npz, activations=array, channel_means=features.channel_means(maps[layer]),
                        note=np.array(activation_note(engine, chosen, info, model)))
    return npy.getvalue(), npz.getvalue()


def activation_note(engine: Engine, chosen: ChosenImage, info: LayerInfo, model: ModelChoice | None) -> str:
    """What a downloaded ``.npz`` holds, in plain lines of text."""
    shape = "×".join(map(str, info.output_shape))
    return "\n".join([
        f"model: {model.title if model else engine.name}",
        f"weights: {model.weights_text if model else 'as built by the caller'}",
        f"layer: {info.name} ({info.kind}, output {shape}, without the batch dimension)",
        f"image: {chosen.name}",
        "activations: the layer's output for this image; channel_means: each channel's mean over its positions",
    ])


def file_stem(chosen: ChosenImage, layer: str) -> str:
    """A file-name stem naming the image and the layer: ``chelsea_features.relu7``."""
    return safe_stem(chosen.stem, layer)


# ---------------------------------------------------------------------------- charts
def plotly_colorscale(cmap: str, steps: int = 32) -> list[list]:
    """Our colormap as a plotly colour scale (the same colours as the PNGs)."""
    lut = colormap_lut(cmap)
    picks = np.linspace(0, 255, steps).round().astype(int)
    return [[i / (steps - 1), f"rgb({lut[p][0]},{lut[p][1]},{lut[p][2]})"] for i, p in enumerate(picks)]


def channel_heatmap(values: np.ndarray, cmap: str, title: str) -> go.Figure:
    """One channel as an interactive heatmap (hover: row, column, value), square pixels, with its
    colour scale from the channel's min to its max."""
    figure = go.Figure(go.Heatmap(z=values, colorscale=plotly_colorscale(cmap),
                                  colorbar=dict(title=dict(text="activation", side="right")),
                                  hovertemplate="row %{y}, col %{x}<br>activation %{z:.4g}<extra></extra>"))
    figure.update_yaxes(autorange="reversed", scaleanchor="x", constrain="domain")
    figure.update_xaxes(constrain="domain")
    figure.update_layout(title=title, height=520, margin=dict(l=10, r=10, t=40, b=10))
    return figure


#: the most values shown as bars (more: a heat strip, where the colormap matters) and the most
#: bars that get a label each on the axis
MAX_BARS, MAX_BAR_LABELS = 256, 32


def uses_colormap(size: int) -> bool:
    """Whether a vector output of ``size`` values is drawn with a colormap (a heat strip)."""
    return size > MAX_BARS


def vector_names(engine: Engine, layers: tuple[LayerInfo, ...], layer: str, size: int) -> list[str] | None:
    """The class names of a vector output when it is the model's output (the last layer, one
    value per class), else None."""
    categories = engine.categories
    if layers and layers[-1].name == layer and len(categories) == size:
        return list(categories)
    return None


def vector_figure(values: np.ndarray, title: str, cmap: str, names: list[str] | None = None) -> go.Figure:
    """A vector output: a bar per element up to :data:`MAX_BARS` elements, else a heat strip of
    64 per row; ``names`` label the elements (class names of the model's output)."""
    labels = names or [str(k) for k in range(values.size)]
    if not uses_colormap(values.size):
        figure = go.Figure(go.Bar(x=np.arange(values.size), y=values, marker_color="#4c78a8", customdata=labels,
                                  hovertemplate="%{customdata} (index %{x}): %{y:.4g}<extra></extra>"))
        ticks = dict(tickmode="array", tickvals=list(range(values.size)), ticktext=labels, tickangle=0) \
            if values.size <= MAX_BAR_LABELS else {}
        figure.update_xaxes(title="class" if names else "index", automargin=True, **ticks)
        figure.update_layout(yaxis_title="value")
    else:
        strip = features.heat_strip(values, 64)
        index = np.arange(strip.size).reshape(strip.shape)
        text = np.array(labels + [""] * (strip.size - values.size), dtype=object).reshape(strip.shape)
        hover = ("%{text} (index %{customdata})" if names else "index %{customdata}") + ": %{z:.4g}<extra></extra>"
        figure = go.Figure(go.Heatmap(z=strip, customdata=index, text=text, colorscale=plotly_colorscale(cmap),
                                      colorbar=dict(title=dict(text="value", side="right")), hovertemplate=hover))
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
