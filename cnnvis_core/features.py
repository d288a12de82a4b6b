"""Feature maps as pictures and numbers: channel grids, mean/sum maps, the all-layers sheet,
per-layer statistics.

:func:`capture` runs the model once and keeps the outputs of the layers asked for; everything
else here works on what it returns for ONE image: a layer's output without the batch
dimension, ``(C, H, W)`` for a conv map or ``(F,)`` for a vector. Nothing else runs the model,
so a page can change the layer, the page of channels, the order or the colormap as often as it
likes after one forward pass.

Showing every channel of a layer as a grid of small images is the visualisation of
Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks" (ECCV 2014) and of
Yosinski et al., "Understanding Neural Networks Through Deep Visualization" (ICML DL workshop
2015); the fraction of zero activations per layer is the APoZ statistic of Hu et al.,
"Network Trimming: A Data-Driven Neuron Pruning Approach" (2016).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .core import ImageLike, ModelCore
from .errors import InputError
from .hooks import record_outputs
from .layers import LayerInfo
from .layouts import NHWC, TOKENS, as_maps
from .render import colorize
from .sheets import Style, enlarge, enlarge_factor, fit_grid, grid_shape, layout, scale_under, titled_sheet, value_range

#: channel orders: by channel index, or by mean activation (strongest first)
ORDERS: tuple[str, ...] = ("index", "mean")
#: map scalings: each channel stretched to its own [min, max], or one [min, max] for the layer
SCALINGS: tuple[str, ...] = ("channel", "layer")


# ---------------------------------------------------------------------------- capture
@torch.no_grad()
def capture(core: ModelCore, image: ImageLike, layers: str | Iterable[str]) -> dict[str, torch.Tensor]:
    """``{name: output}`` of the named layers from ONE forward pass, on the CPU.

    A conv layer gives a ``(C, H, W)`` tensor, a linear layer a ``(F,)`` vector (the batch
    dimension is dropped); a layer that runs several times gives its last output. A layer whose
    layout holds a map another way is read through it (:mod:`cnnvis_core.layouts`): a Swin
    stage's ``NHWC`` output comes permuted to ``(C, H, W)``, a ViT block's ``tokens`` as the
    ``(D, h, w)`` map of its patch tokens (the class and other prefix tokens left out); an
    ``other`` output comes as it is. Unknown names raise :class:`LayerError` before anything runs.
    """
    names = [layers] if isinstance(layers, str) else list(dict.fromkeys(layers))
    infos = [core.layer(name) for name in names]  # an unknown name raises, with close names, before any pass
    watched = {info.name: (core.module(info.name), info.calls) for info in infos}
    x = core.preprocess(image)
    with core.session(), record_outputs(watched) as outputs:
        core.forward(x)
    return {info.name: _as_map(info, outputs[info.name])[0].float().cpu() for info in infos}


def _as_map(info: LayerInfo, output: torch.Tensor) -> torch.Tensor:
    """``(B, …)`` → ``(B, C, h, w)`` for a token or NHWC layer; anything else as it is."""
    if info.layout in (NHWC, TOKENS):
        return as_maps(output, info.layout, info.prefix_tokens, info.grid).contiguous()
    return output


# ---------------------------------------------------------------------------- channels
def channel_means(maps: torch.Tensor) -> np.ndarray:
    """Mean activation of each channel: ``m_c = (1 / HW) Σ_ij A_c(i, j)``, shape ``(C,)``."""
    return maps.detach().float().reshape(maps.shape[0], -1).mean(1).cpu().numpy()


def channel_order(maps: torch.Tensor, order: str = "index") -> np.ndarray:
    """Channel indices in display order: ``index`` (0, 1, …) or ``mean`` (largest mean first,
    ties by index)."""
    if order == "index":
        return np.arange(maps.shape[0])
    if order == "mean":
        return np.argsort(-channel_means(maps), kind="stable")
    raise InputError(f"Unknown channel order {order!r}; use one of {', '.join(ORDERS)}.")


def strongest_channels(maps: torch.Tensor, k: int = 5) -> list[int]:
    """The ``k`` channels of ``maps`` ``(C, H, W)`` with the highest maximum activation
    ``max_ij A_c(i, j)``, strongest first (ties by index)."""
    peaks = maps.detach().float().reshape(maps.shape[0], -1).amax(1).cpu().numpy()
    return [int(c) for c in np.argsort(-peaks, kind="stable")[:k]]


@dataclass(frozen=True)
class ChannelPage:
    """One page of a layer's channels: which channels, in display order, and where it sits.

    ``page`` counts from 0; ``pages = ⌈total / per_page⌉``; ``start`` is the position of the
    first tile in the ordered list of all channels.
    """

    channels: tuple[int, ...]
    page: int
    pages: int
    per_page: int
    total: int
    order: str

    @property
    def start(self) -> int:
        return self.page * self.per_page

    @property
    def stop(self) -> int:
        return self.start + len(self.channels)


def page_count(total: int, per_page: int) -> int:
    """``⌈total / per_page⌉`` (at least 1)."""
    if per_page < 1:
        raise InputError(f"Channels per page must be at least 1, got {per_page}.")
    return max(1, math.ceil(total / per_page))


def channel_page(maps: torch.Tensor, page: int = 0, per_page: int = 64, order: str = "index") -> ChannelPage:
    """Page ``page`` (from 0) of the channels of ``maps`` ``(C, H, W)`` in the given order."""
    total = int(maps.shape[0])
    pages = page_count(total, per_page)
    if not 0 <= page < pages:
        raise InputError(f"Page {page + 1} does not exist: this layer has {pages} page(s) of {per_page} channels.")
    ordered = channel_order(maps, order)
    chosen = ordered[page * per_page: (page + 1) * per_page]
    return ChannelPage(tuple(int(c) for c in chosen), page, pages, per_page, total, order)


def scale_maps(maps: torch.Tensor, scaling: str = "channel",
               bounds: tuple[float, float] | None = None) -> torch.Tensor:
    """Maps ``(N, H, W)`` → values in [0, 1].

    ``channel``: each map ``(A - min A) / (max A - min A)`` on its own (a constant map → 0);
    ``layer``: one ``(A - lo) / (hi - lo)`` for all, ``bounds = (lo, hi)`` (default: the
    min and max of ``maps``), so that brightness compares across channels.
    """
    x = maps.detach().float()
    if scaling == "channel":
        lo, hi = torch.aminmax(x.reshape(x.shape[0], -1), dim=1)
        lo, hi = lo.view(-1, 1, 1), hi.view(-1, 1, 1)
    elif scaling == "layer":
        lo_v, hi_v = bounds if bounds is not None else (float(x.min()), float(x.max()))
        lo, hi = torch.tensor(lo_v), torch.tensor(hi_v)
    else:
        raise InputError(f"Unknown scaling {scaling!r}; use one of {', '.join(SCALINGS)}.")
    span = hi - lo
    gain = torch.where(span > 1e-12, 1.0 / torch.where(span > 1e-12, span, 1.0), 0.0)   # 0 for a constant map
    # (A − lo) · gain as one fused pass over the maps: A · gain − lo · gain
    return torch.addcmul(-lo * gain, x, gain).clamp_(0.0, 1.0)


def channel_grid(maps: torch.Tensor, channels: Sequence[int] | None = None, cmap: str = "viridis",
                 scaling: str = "channel", ncols: int | None = None, min_tile: int = 40,
                 padding: int = 2, labels: bool = True, style: Style | None = None) -> np.ndarray:
    """The chosen channels of ``maps`` ``(C, H, W)`` as ONE uint8 RGB image.

    Tiles in the order of ``channels`` (all, by default), row-major with ``ncols`` per row
    (⌈√n⌉ by default), each map scaled by :func:`scale_maps` (``layer`` uses the whole
    layer's min and max, not just these channels'), coloured with ``cmap``, enlarged by an
    integer factor to at least ``min_tile`` pixels (nearest), and titled with its channel
    index (``labels``; without them the layout is exactly :func:`~cnnvis_core.sheets.layout`).

    With a ``style`` (a picture to show, :class:`~cnnvis_core.sheets.Style`) the sheet is fitted
    to its width instead (``min_tile`` and ``padding`` come from the style), each map on its own
    scale gets its min–max printed under its index, and a colour scale goes under the sheet: the
    layer's min and max, or for ``channel`` scaling "min" to "max" of each map.
    """
    if maps.dim() != 3:
        raise InputError(f"A channel grid needs (C, H, W) maps, got shape {tuple(maps.shape)}.")
    picked = list(range(maps.shape[0])) if channels is None else [int(c) for c in channels]
    if not picked:
        raise InputError("No channels to show.")
    bounds = (float(maps.min()), float(maps.max()))
    unit = scale_maps(maps[picked], scaling, bounds)
    coloured = colorize(unit.numpy(), cmap)
    if style is None:
        tiles = enlarge(coloured, enlarge_factor(min(maps.shape[1:]), min_tile))
        _, cols = grid_shape(len(picked), ncols)
        if labels:
            return titled_sheet(tiles, [(str(c),) for c in picked], cols, padding, size=10)
        return layout(tiles, cols, padding)
    own = scaling == "channel"
    wide = style.px(max(style.min_tile, 64 if own else 0))          # room for "-0.52 to 1.3" under a map
    factor, cols = fit_grid(len(picked), tuple(maps.shape[1:]), style.px(style.width), wide,
                            style.px(style.max_tile), style.px(style.padding), ncols)
    if own:
        lows, highs = torch.aminmax(maps[picked].detach().float().reshape(len(picked), -1), dim=1)
        titles = [(str(c), value_range(lo, hi)) for c, lo, hi in zip(picked, lows.tolist(), highs.tolist())]
    else:
        titles = [(str(c),) for c in picked]
    sheet = titled_sheet(enlarge(coloured, factor), titles, cols, style.px(style.padding), size=style.px(style.text))
    if own:
        return scale_under(sheet, style, cmap, *bounds, "each map from its own min to its max (printed under it)",
                           ("min", "max"))
    return scale_under(sheet, style, cmap, *bounds, "activation, one scale for the layer")


# ---------------------------------------------------------------------------- summaries
def mean_map(maps: torch.Tensor) -> np.ndarray:
    """The channel mean ``(1 / C) Σ_c A_c`` of ``(C, H, W)`` maps, ``(H, W)``."""
    return maps.detach().float().mean(0).cpu().numpy()


def sum_map(maps: torch.Tensor) -> np.ndarray:
    """The channel sum ``Σ_c A_c`` of ``(C, H, W)`` maps, ``(H, W)``."""
    return maps.detach().float().sum(0).cpu().numpy()


def max_map(maps: torch.Tensor) -> np.ndarray:
    """The maximum over channels ``max_c A_c`` of ``(C, H, W)`` maps, ``(H, W)``: where any
    channel responds strongly, which the sum (``C`` × the mean) averages away."""
    return maps.detach().float().amax(0).cpu().numpy()


def map_image(values: np.ndarray, cmap: str = "gray", min_size: int = 256, style: Style | None = None,
              label: str = "") -> np.ndarray:
    """A 2-D array as a uint8 RGB picture: min–max scaled, coloured, enlarged (nearest) to at
    least ``min_size`` pixels on its shorter side. With a ``style``: enlarged to about its
    width (``min_size`` ignored) with a colour scale of the values under it, titled ``label``."""
    unit = scale_maps(torch.as_tensor(np.asarray(values, np.float32))[None], "channel")[0].numpy()
    if style is None:
        return enlarge(colorize(unit, cmap)[None], enlarge_factor(min(unit.shape), min_size))[0]
    factor = max(1, style.px(style.width) // unit.shape[1])
    picture = enlarge(colorize(unit, cmap)[None], factor)[0]
    return scale_under(picture, style, cmap, float(np.min(values)), float(np.max(values)), label)


@dataclass(frozen=True)
class ValueSummary:
    """``min``, ``max``, ``mean`` of an array and the fraction of its values exactly 0."""

    min: float
    max: float
    mean: float
    zeros: float


def summarize(values: np.ndarray) -> ValueSummary:
    """:class:`ValueSummary` of any array of numbers (a channel's map, a vector output)."""
    v = np.asarray(values, np.float64)
    return ValueSummary(float(v.min()), float(v.max()), float(v.mean()), float(np.mean(v == 0)))


def as_vector(output: torch.Tensor) -> np.ndarray:
    """Any layer output as a flat float vector (how a non-spatial output is shown)."""
    return output.detach().float().reshape(-1).cpu().numpy()


def heat_strip(vector: np.ndarray, width: int = 64) -> np.ndarray:
    """A long vector folded into rows of ``width`` values (NaN after its end), for a heat strip;
    element ``k`` sits at row ``k // width``, column ``k % width``."""
    v = np.asarray(vector, np.float32).reshape(-1)
    width = max(1, min(int(width), v.size))
    rows = math.ceil(v.size / width)
    strip = np.full(rows * width, np.nan, np.float32)
    strip[: v.size] = v
    return strip.reshape(rows, width)


# ---------------------------------------------------------------------------- statistics
@dataclass(frozen=True)
class LayerStats:
    """Numbers of one layer's output for one image.

    ``sparsity`` = fraction of activations exactly 0; ``mean`` and ``max`` over all values;
    ``zero_channels`` = channels (first dimension; a vector's elements) that are 0 everywhere.
    """

    name: str
    kind: str
    index: int
    channels: int
    spatial: bool
    sparsity: float
    mean: float
    max: float
    zero_channels: int


def layer_stats(info: LayerInfo, output: torch.Tensor) -> LayerStats:
    """:class:`LayerStats` of ``output`` (the layer's output for one image, no batch dimension)."""
    x = output.detach().float()
    per_channel = x.reshape(x.shape[0] if x.dim() > 1 else x.numel(), -1)
    nonzero = torch.count_nonzero(per_channel, dim=1)          # one pass gives both counts
    return LayerStats(info.name, info.kind, info.index, int(per_channel.shape[0]), x.dim() == 3,
                      1.0 - float(nonzero.sum()) / max(1, x.numel()), float(x.mean()), float(x.max()),
                      int((nonzero == 0).sum()))


def depth_stats(layers: Sequence[LayerInfo], outputs: Mapping[str, torch.Tensor]) -> list[LayerStats]:
    """:class:`LayerStats` of every layer in ``layers`` that has an output, in execution order."""
    return [layer_stats(info, outputs[info.name]) for info in layers if info.name in outputs]


def overview_sheet(layers: Sequence[LayerInfo], outputs: Mapping[str, torch.Tensor], ncols: int = 8,
                   tile: int = 112, cmap: str = "gray", style: Style | None = None) -> np.ndarray:
    """Every spatial layer's channel mean, one tile per layer titled by name and kind, as one
    image: the whole network's outputs on one sheet.

    Each mean map is min–max scaled on its own and resized (bilinear) to ``tile × tile``;
    1×1 maps (after global pooling) have nothing to show and are left out. With a ``style``, the
    tiles fill its width in ``ncols`` columns (``tile`` ignored), each title gets a third line
    with the map's own min–max, and a colour scale goes under the sheet.
    """
    chosen = [info for info in layers if info.name in outputs and outputs[info.name].dim() == 3
              and outputs[info.name].shape[1] * outputs[info.name].shape[2] > 1]
    if not chosen:
        raise InputError("None of the chosen layers has spatial feature maps to show.")
    padding = 4 if style is None else style.px(style.padding + 2)
    if style is not None:
        cols = grid_shape(len(chosen), ncols)[1]
        tile = max(8, (style.px(style.width) - padding) // cols - padding)
    means = [outputs[info.name].detach().float().mean(0) for info in chosen]
    tiles = torch.cat([F.interpolate(m[None, None], size=(tile, tile), mode="bilinear", align_corners=False)[0]
                       for m in means])
    unit = scale_maps(tiles, "channel").numpy()
    titles = [(info.name, f"{info.kind} {'x'.join(map(str, info.output_shape))}") for info in chosen]
    if style is None:
        return titled_sheet(colorize(unit, cmap), titles, ncols)
    titles = [(*title, value_range(float(m.min()), float(m.max()))) for title, m in zip(titles, means)]
    sheet = titled_sheet(colorize(unit, cmap), titles, ncols, padding, size=style.px(style.text))
    return scale_under(sheet, style, cmap, 0.0, 1.0, "each layer's channel mean from its own min to its max",
                       ("min", "max"))
