"""Cached calls and figures of the kernel viewer (``pages/kernels.py``): conv weights, kernel
pictures and their charts.

Reading weights runs no forward pass; the weight of a layer (per engine and layer) and every
picture are kept in the dashboard's byte-bounded cache (:func:`dashboard.memo.cached`), the engine
known by its key (:data:`~dashboard.state.HASH_FUNCS`).
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import torch

from cnnvis_core import Engine
from cnnvis_core import kernels as kx

from .memo import cached
from .state import Picture, picture, sheet_style


@cached()
def weight(engine: Engine, layer: str) -> torch.Tensor:
    """The conv weight ``(out, in, kh, kw)`` of ``layer`` (cached; LayerError if not a conv)."""
    return engine.kernels(layer)


@cached()
def conv_shapes(engine: Engine) -> dict[str, tuple[int, ...]]:
    """``{conv name: weight shape}`` for every 2-D convolution of the model."""
    return {name: tuple(engine.kernels(name).shape) for name in engine.conv_layers()}


@cached()
def rgb_picture(engine: Engine, layer: str, scaling: str) -> Picture:
    """Every filter of a 3-input-channel conv as an RGB tile, with the scale under them."""
    w = weight(engine, layer)
    style = sheet_style()
    return picture(kx.rgb_kernels(w, scaling, style=style), style)


@cached()
def slices_picture(engine: Engine, layer: str, out_channel: int, scaling: str, cmap: str) -> Picture:
    """The per-input-channel slices of one filter, with the scale under them."""
    w = weight(engine, layer)
    style = sheet_style()
    return picture(kx.filter_slices(w, out_channel, scaling, cmap, style=style), style)


def page_size(shape: tuple[int, ...], per_page: int) -> int:
    """Kernels on a page of "All kernels": ``per_page`` rounded down to whole rows (a page starts
    with a filter's first kernel)."""
    return kx.whole_rows(shape[1], per_page)


@cached()
def kernel_page(engine: Engine, layer: str, page: int, per_page: int, scaling: str, cmap: str
                ) -> tuple[Picture, kx.KernelPage]:
    """One page of every (out, in) kernel with labelled axes and the scale, and where it sits
    (``per_page`` from :func:`page_size`)."""
    style = sheet_style()
    shown = kx.kernel_page(weight(engine, layer), page, per_page, scaling, cmap, style=style)
    return picture(shown.image, style), shown


def histogram_figure(engine: Engine, layer: str) -> go.Figure:
    """Histogram of all the layer's weights."""
    counts, edges = kx.weight_histogram(weight(engine, layer))
    centres = (edges[:-1] + edges[1:]) / 2
    figure = go.Figure(go.Bar(x=centres, y=counts, width=np.diff(edges), marker_color="#4c78a8",
                              hovertemplate="%{x:.3g}: %{y} weights<extra></extra>"))
    figure.update_layout(title=f"Weights of {layer} ({int(counts.sum()):,})", xaxis_title="weight",
                         yaxis_title="count", height=360, margin=dict(l=10, r=10, t=40, b=10), bargap=0)
    return figure


def norms(engine: Engine, layer: str, flag: int) -> kx.KernelNorms:
    """Per-filter L1/L2 norms, the ``flag`` smallest flagged."""
    return kx.kernel_norms(weight(engine, layer), flag)


def norms_figure(result: kx.KernelNorms, layer: str) -> go.Figure:
    """Per-filter L1 (bars, flagged in red) and L2 (line) norms."""
    index = np.arange(result.l1.size)
    flagged = set(result.flagged)
    colours = ["#e45756" if o in flagged else "#4c78a8" for o in index]
    figure = go.Figure()
    figure.add_trace(go.Bar(x=index, y=result.l1, marker_color=colours, name="L1 ‖W[o]‖₁",
                            hovertemplate="filter %{x}: L1 %{y:.4g}<extra></extra>"))
    figure.add_trace(go.Scatter(x=index, y=result.l2, mode="lines", name="L2 ‖W[o]‖₂", yaxis="y2",
                                line=dict(color="#f58518"), hovertemplate="filter %{x}: L2 %{y:.4g}<extra></extra>"))
    figure.update_layout(title=f"Per-filter norms of {layer} (red: smallest L1)", xaxis_title="output channel",
                         yaxis=dict(title="L1", rangemode="tozero"),
                         yaxis2=dict(title="L2", overlaying="y", side="right", rangemode="tozero"),
                         height=360, margin=dict(l=10, r=10, t=40, b=10), legend=dict(orientation="h", y=-0.25))
    return figure
