"""The convolution behind a channel, and its kernel slices (as the Kernels page draws them)."""

from __future__ import annotations

import numpy as np
from torch import nn

from ..core import ModelCore
from ..kernels import filter_slices
from ..sheets import Style

#: layers that act on each channel alone: a channel after them is still the conv's filter
ELEMENTWISE = {"BatchNorm2d", "ReLU", "ReLU6", "LeakyReLU", "GELU", "SiLU", "Hardswish", "ELU", "Identity",
               "Dropout", "Dropout2d", "Sigmoid", "Tanh"}


def source_conv(core: ModelCore, layer: str) -> str | None:
    """The ``Conv2d`` whose filter ``c`` makes channel ``c`` of ``layer``: the layer itself, or the
    conv right before it through per-channel layers only (batch norm, activations); else None."""
    infos = core.layers()
    names = [i.name for i in infos]
    if layer not in names:
        return None
    channels = infos[names.index(layer)].output_shape[0] if infos[names.index(layer)].output_shape else None
    for info in reversed(infos[:names.index(layer) + 1]):
        module = core.module(info.name)
        if isinstance(module, nn.Conv2d):
            return info.name if module.out_channels == channels else None
        if info.kind not in ELEMENTWISE:
            return None
    return None


def kernel_slices(core: ModelCore, layer: str, channel: int, style: Style | None = None,
                  cmap: str = "gray", tile: int = 40) -> tuple[str, np.ndarray] | None:
    """``(conv name, picture)`` of the filter behind ``channel`` of ``layer``: one tile per input
    channel, each scaled on its own (with a ``style``, labelled and fitted to its width; else
    plain tiles of at least ``tile`` pixels); None when no conv is behind the layer (reads the
    weights only: no forward pass)."""
    conv = source_conv(core, layer)
    if conv is None:
        return None
    weight = core.module(conv).weight.detach().float().cpu()
    if style is not None:
        return conv, filter_slices(weight, int(channel), "each", cmap, style=style)
    return conv, filter_slices(weight, int(channel), "each", cmap, min_tile=tile, labels=tile >= 24)
