"""Convolution kernels as pictures and numbers: RGB tiles, per-input slices, all kernels paged,
weight histograms and per-filter norms.

A conv weight ``W`` has shape ``(out, in, kh, kw)``: output channel ``o`` is computed by the
filter ``W[o]``, made of one ``kh × kw`` slice ``W[o, i]`` per input channel ``i``.

- First-layer filters with 3 input channels are shown as RGB tiles, as in Krizhevsky et al.,
  "ImageNet Classification with Deep Convolutional Neural Networks" (NeurIPS 2012, fig. 3).
- Two scalings: ``each`` stretches every tile to its own ``[min, max]`` (shows the shape of a
  kernel, like ``make_grid(scale_each=True)``); ``shared`` maps the whole layer through one
  symmetric scale ``w ↦ (w / m + 1) / 2`` with ``m = max |W|`` (zero is mid-gray or the centre
  of a diverging colormap; shows sign and relative strength).
- Per-filter norms ``‖W[o]‖₁`` and ``‖W[o]‖₂``, the smallest flagged: the pruning criterion of
  Li et al., "Pruning Filters for Efficient ConvNets" (ICLR 2017).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .core import ModelCore
from .errors import InputError, LayerError
from .features import page_count
from .render import colorize
from .sheets import (
    Style,
    axis_sheet,
    enlarge,
    enlarge_factor,
    fit_grid,
    grid_shape,
    layout,
    scale_under,
    titled_sheet,
    value_range,
)

#: kernel scalings: each tile on its own, or one symmetric scale for the layer
SCALINGS: tuple[str, ...] = ("each", "shared")


# ---------------------------------------------------------------------------- finding weights
def conv_names(core: ModelCore) -> list[str]:
    """Qualified names of the model's 2-D convolutions, in definition order."""
    return core.named_modules_of_type(nn.Conv2d)


def conv_weight(core: ModelCore, name: str) -> torch.Tensor:
    """A copy of the weight ``(out, in / groups, kh, kw)`` of conv ``name``, float32 on the CPU.

    :class:`LayerError` when ``name`` is not a 2-D convolution; the message lists those that are.
    """
    try:
        module = core.module(name) if name else None
    except KeyError:
        module = None
    if not isinstance(module, nn.Conv2d):
        convs = conv_names(core)
        what = f"a {type(module).__name__}" if module is not None else "not a layer of this model"
        shown = ", ".join(convs[:12]) + (f" … ({len(convs)} in all)" if len(convs) > 12 else "")
        hint = f"The convolutions are: {shown}." if convs else "This model has no 2-D convolution."
        raise LayerError(f"{name!r} is {what}, not a 2-D convolution, so it has no kernels to show. {hint}")
    return module.weight.detach().float().cpu().clone()


# ---------------------------------------------------------------------------- scaling
def unit_tiles(tiles: torch.Tensor, scaling: str, bound: float | None = None) -> torch.Tensor:
    """Tiles ``(N, …)`` → [0, 1].

    ``each``: every tile ``(t - min t) / (max t - min t)`` over all its values (an RGB tile is
    scaled as a whole); ``shared``: ``(t / m + 1) / 2`` with ``m = bound`` (default
    ``max |tiles|``), so 0 ↦ 0.5.
    """
    x = tiles.detach().float()
    if scaling == "each":
        flat = x.reshape(x.shape[0], -1)
        shape = (-1,) + (1,) * (x.dim() - 1)
        lo, hi = flat.amin(1).view(shape), flat.amax(1).view(shape)
        span = hi - lo
        unit = (x - lo) / torch.where(span > 1e-12, span, torch.ones_like(span))
        return torch.where(span > 1e-12, unit, torch.full_like(unit, 0.5))
    if scaling == "shared":
        m = float(x.abs().max()) if bound is None else float(bound)
        if m <= 1e-12:
            return torch.full_like(x, 0.5)
        return (x / m + 1.0).mul_(0.5).clamp_(0.0, 1.0)
    raise InputError(f"Unknown kernel scaling {scaling!r}; use one of {', '.join(SCALINGS)}.")


#: gaps between kernel tiles: dark, so that they show against the white centre of a diverging map
KERNEL_BACKGROUND = (64, 64, 64)
#: gaps and caption strips of labelled kernel sheets: a light gray that a white (zero) kernel stands out
#: from while the dark labels stay readable
LABELLED_BACKGROUND = (200, 200, 200)


def _sheet(rgb: np.ndarray, names: Sequence[str], ncols: int | None, min_tile: int, labels: bool,
           padding: int = 2) -> np.ndarray:
    tiles = enlarge(rgb, enlarge_factor(min(rgb.shape[1:3]), min_tile))
    _, cols = grid_shape(len(tiles), ncols)
    if labels:
        return titled_sheet(tiles, [(name,) for name in names], cols, padding + 1, size=10,
                            background=LABELLED_BACKGROUND)
    return layout(tiles, cols, padding, KERNEL_BACKGROUND)


#: what a kernel picture's colour scale says, by scaling
_SCALE_LABELS = {"each": "each kernel from its own min to its max (printed under it)",
                 "shared": "weight, one symmetric scale for the layer (0 in the middle)"}


def _styled_sheet(rgb: np.ndarray, raw: torch.Tensor, names: Sequence[str], scaling: str, cmap: str, bound: float,
                  style: Style, ncols: int | None = None, label: str | None = None) -> np.ndarray:
    """Tiles fitted to ``style`` (kernels are tiny: at most 96 displayed pixels each), titled with
    ``names`` and, scaled on their own, their min–max (of ``raw``, one tile per item), with the
    colour scale under the sheet."""
    each = scaling == "each"
    factor, cols = fit_grid(len(rgb), rgb.shape[1:3], style.px(style.width),
                            style.px(max(style.min_tile, 64 if each else 0)), style.px(min(style.max_tile, 96)),
                            style.px(style.padding + 1), ncols)
    titles = [(name,) for name in names]
    if each:
        lows, highs = torch.aminmax(raw.detach().float().reshape(len(rgb), -1), dim=1)
        titles = [(name, value_range(lo, hi)) for name, lo, hi in zip(names, lows.tolist(), highs.tolist())]
    sheet = titled_sheet(enlarge(rgb, factor), titles, cols, style.px(style.padding + 1), size=style.px(style.text),
                         background=LABELLED_BACKGROUND)
    return scale_under(sheet, style, cmap, -bound, bound, label or _SCALE_LABELS[scaling],
                       ("min", "max") if each else None)


def input_names(n_inputs: int) -> list[str]:
    """Names of a conv's input channels: ``R``, ``G``, ``B`` for a first layer (3 inputs), else
    their indices."""
    return ["R", "G", "B"] if n_inputs == 3 else [str(i) for i in range(n_inputs)]


# ---------------------------------------------------------------------------- pictures
def rgb_kernels(weight: torch.Tensor, scaling: str = "each", ncols: int | None = None,
                min_tile: int = 40, labels: bool = True, style: Style | None = None) -> np.ndarray:
    """Every filter of a conv with 3 input channels as one RGB tile, all in one uint8 image.

    Tile ``o`` shows ``W[o]`` with its input channels as red, green, blue. With a ``style``
    (:class:`~cnnvis_core.sheets.Style`): fitted to its width, each filter's min–max under it
    (``each``), and a gray scale of one colour channel's weight under the sheet.
    """
    if weight.dim() != 4 or weight.shape[1] != 3:
        raise InputError(f"RGB tiles need filters with 3 input channels; this layer's weight is "
                         f"{tuple(weight.shape)}. Use the per-channel view instead.")
    unit = unit_tiles(weight, scaling).permute(0, 2, 3, 1).numpy()
    rgb = np.clip(unit * 255.0 + 0.5, 0, 255).astype(np.uint8)
    names = [str(o) for o in range(weight.shape[0])]
    if style is not None:
        label = (f"{_SCALE_LABELS[scaling]}; per colour channel R, G, B" if scaling == "shared"
                 else "each filter from its own min to its max over R, G, B (printed under it)")
        return _styled_sheet(rgb, weight, names, scaling, "gray", float(weight.abs().max()), style, ncols or 8,
                             label)
    return _sheet(rgb, names, ncols or 8, min_tile, labels)


def filter_slices(weight: torch.Tensor, out_channel: int, scaling: str = "each", cmap: str = "gray",
                  ncols: int | None = None, min_tile: int = 40, labels: bool = True,
                  style: Style | None = None) -> np.ndarray:
    """The slices ``W[o, i]`` of one filter, one tile per input channel ``i`` (``R``, ``G``,
    ``B`` for a first layer), as one image.

    ``shared`` scaling uses ``m = max |W|`` over the whole layer, so filters compare. With a
    ``style``: fitted to its width, slices scaled on their own with their min–max, and the colour
    scale under the sheet.
    """
    if not 0 <= out_channel < weight.shape[0]:
        n = weight.shape[0]
        raise InputError(f"Output channel {out_channel} does not exist: the layer has {n} (0–{n - 1}).")
    bound = float(weight.abs().max())
    unit = unit_tiles(weight[out_channel], scaling, bound)
    names = input_names(weight.shape[1])
    if style is not None:
        rows_of = ncols or (len(names) if len(names) <= 16 else None)       # a few slices: one row
        return _styled_sheet(colorize(unit.numpy(), cmap), weight[out_channel], names, scaling, cmap, bound, style,
                             rows_of)
    return _sheet(colorize(unit.numpy(), cmap), names, ncols, min_tile, labels)


@dataclass(frozen=True)
class KernelPage:
    """One page of all ``(out, in)`` kernel slices of a layer, flattened row-major (``out`` major).

    ``start`` and ``stop`` index that flat order; ``first`` and ``last`` are the ``(out, in)``
    pairs of the first and last tile; ``ncols`` tiles per row.
    """

    image: np.ndarray
    page: int
    pages: int
    start: int
    stop: int
    first: tuple[int, int]
    last: tuple[int, int]
    ncols: int


def kernel_page(weight: torch.Tensor, page: int = 0, per_page: int = 256, scaling: str = "each",
                cmap: str = "gray", min_tile: int = 24, style: Style | None = None) -> KernelPage:
    """Page ``page`` (from 0) of every slice ``W[o, i]``, ``per_page`` tiles per page.

    Rows hold :func:`kernel_columns` tiles, so for narrow layers one row is one filter. With a
    ``style``: the axes are labelled (filter on the left, per row; input on top, per column) and
    the colour scale goes under the sheet; ``min_tile`` stays the tiles' displayed size (give
    ``per_page`` from :func:`whole_rows` so that pages start at a row).
    """
    n_out, n_in = int(weight.shape[0]), int(weight.shape[1])
    total = n_out * n_in
    pages = page_count(total, per_page)
    if not 0 <= page < pages:
        raise InputError(f"Page {page + 1} does not exist: this layer's {total} kernels make {pages} page(s).")
    start, stop = page * per_page, min(total, (page + 1) * per_page)
    flat = weight.reshape(total, *weight.shape[2:])[start:stop]
    bound = float(weight.abs().max())
    unit = unit_tiles(flat, scaling, bound)
    ncols = kernel_columns(n_in)
    first, last = divmod(start, n_in), divmod(stop - 1, n_in)
    if style is None:
        image = _sheet(colorize(unit.numpy(), cmap), (), ncols, min_tile, labels=False)
    else:
        factor, ncols = fit_grid(len(flat), tuple(flat.shape[1:]), style.px(style.width), style.px(min_tile),
                                 style.px(64), style.px(style.padding), ncols)    # few columns: larger tiles
        tiles = enlarge(colorize(unit.numpy(), cmap), factor)
        rows = -(-len(flat) // ncols)
        image = axis_sheet(tiles, ncols, _row_labels(start, rows, ncols, n_in), _column_labels(start, ncols, n_in),
                           "filter", "input channel" if n_in <= ncols else "input channel (the row's first + column)",
                           style.px(style.padding), style.px(style.text), KERNEL_BACKGROUND)
        each = scaling == "each"
        image = scale_under(image, style, cmap, -bound, bound,
                            "each kernel from its own min to its max" if each else _SCALE_LABELS["shared"],
                            ("min", "max") if each else None)
    return KernelPage(image, page, pages, start, stop, first, last, ncols)


def kernel_columns(n_inputs: int) -> int:
    """Tiles per row of a kernel page: all of a filter's inputs when they are at most 32, else
    the largest divisor of ``n_inputs`` from 8 to 32 (every filter then starts a row), else 32."""
    if n_inputs <= 32:
        return n_inputs
    return next((d for d in range(32, 7, -1) if n_inputs % d == 0), 32)


def whole_rows(n_inputs: int, per_page: int) -> int:
    """``per_page`` rounded down to whole rows of :func:`kernel_columns` (at least one row), so
    that every page starts at a row: with at most 32 inputs, at a filter's first kernel."""
    cols = kernel_columns(n_inputs)
    return max(cols, per_page // cols * cols)


def _row_labels(start: int, rows: int, ncols: int, n_in: int) -> list[str]:
    """Each row of a kernel page: its filter, and where a filter spans rows, its first input."""
    labels = []
    for r in range(rows):
        o, i = divmod(start + r * ncols, n_in)
        labels.append(str(o) if n_in <= ncols else f"{o} · {i}+")
    return labels


def _column_labels(start: int, ncols: int, n_in: int) -> list[str]:
    """Each column of a kernel page: its input channel (R, G, B for a first layer), or where a
    filter spans rows, the offset from the row's first input."""
    if n_in <= ncols:
        return input_names(n_in)
    return [f"+{j}" for j in range(ncols)]


# ---------------------------------------------------------------------------- numbers
def weight_histogram(weight: torch.Tensor, bins: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(counts, edges)`` of all the layer's weights in ``bins`` equal bins; by default Rice's
    rule, ``2·n^(1/3)`` bins for ``n`` weights, kept between 10 and 80."""
    if bins is None:
        bins = int(min(80, max(10, round(2 * weight.numel() ** (1 / 3)))))
    return np.histogram(weight.detach().float().reshape(-1).numpy(), bins=bins)


@dataclass(frozen=True)
class KernelNorms:
    """Per-filter norms ``l1[o] = Σ |W[o]|``, ``l2[o] = √Σ W[o]²``; ``flagged`` = the filters
    with the smallest L1 norm, smallest first (pruning candidates, Li et al. 2017)."""

    l1: np.ndarray
    l2: np.ndarray
    flagged: tuple[int, ...]


def kernel_norms(weight: torch.Tensor, flag: int | None = None) -> KernelNorms:
    """:class:`KernelNorms` of a conv weight; ``flag`` smallest (default: a tenth, at least 1)."""
    flat = weight.detach().double().reshape(weight.shape[0], -1)
    l1 = flat.abs().sum(1).numpy()
    l2 = flat.pow(2).sum(1).sqrt().numpy()
    k = max(1, weight.shape[0] // 10) if flag is None else max(0, min(int(flag), weight.shape[0]))
    order = np.argsort(l1, kind="stable")[:k]
    return KernelNorms(l1, l2, tuple(int(o) for o in order))
