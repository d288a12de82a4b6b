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
from .sheets import enlarge, enlarge_factor, grid_shape, layout, titled_sheet

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


# ---------------------------------------------------------------------------- pictures
def rgb_kernels(weight: torch.Tensor, scaling: str = "each", ncols: int | None = None,
                min_tile: int = 40, labels: bool = True) -> np.ndarray:
    """Every filter of a conv with 3 input channels as one RGB tile, all in one uint8 image.

    Tile ``o`` shows ``W[o]`` with its input channels as red, green, blue.
    """
    if weight.dim() != 4 or weight.shape[1] != 3:
        raise InputError(f"RGB tiles need filters with 3 input channels; this layer's weight is "
                         f"{tuple(weight.shape)}. Use the per-channel view instead.")
    unit = unit_tiles(weight, scaling).permute(0, 2, 3, 1).numpy()
    rgb = np.clip(unit * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return _sheet(rgb, [str(o) for o in range(weight.shape[0])], ncols or 8, min_tile, labels)


def filter_slices(weight: torch.Tensor, out_channel: int, scaling: str = "each", cmap: str = "gray",
                  ncols: int | None = None, min_tile: int = 40, labels: bool = True) -> np.ndarray:
    """The slices ``W[o, i]`` of one filter, one tile per input channel ``i``, as one image.

    ``shared`` scaling uses ``m = max |W|`` over the whole layer, so filters compare.
    """
    if not 0 <= out_channel < weight.shape[0]:
        n = weight.shape[0]
        raise InputError(f"Output channel {out_channel} does not exist: the layer has {n} (0–{n - 1}).")
    unit = unit_tiles(weight[out_channel], scaling, float(weight.abs().max()))
    return _sheet(colorize(unit.numpy(), cmap), [str(i) for i in range(weight.shape[1])], ncols, min_tile, labels)


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
                cmap: str = "gray", min_tile: int = 24) -> KernelPage:
    """Page ``page`` (from 0) of every slice ``W[o, i]``, ``per_page`` tiles per page.

    Rows hold ``min(in, 32)`` tiles, so for narrow layers one row is one filter.
    """
    n_out, n_in = int(weight.shape[0]), int(weight.shape[1])
    total = n_out * n_in
    pages = page_count(total, per_page)
    if not 0 <= page < pages:
        raise InputError(f"Page {page + 1} does not exist: this layer's {total} kernels make {pages} page(s).")
    start, stop = page * per_page, min(total, (page + 1) * per_page)
    flat = weight.reshape(total, *weight.shape[2:])[start:stop]
    unit = unit_tiles(flat, scaling, float(weight.abs().max()))
    ncols = min(n_in, 32)
    image = _sheet(colorize(unit.numpy(), cmap), (), ncols, min_tile, labels=False)
    return KernelPage(image, page, pages, start, stop, divmod(start, n_in), divmod(stop - 1, n_in), ncols)


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
