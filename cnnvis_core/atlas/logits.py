"""The "logit view" of a channel (OpenAI Microscope): for a channel that reaches the classifier
through global average pooling, the classes whose logits it raises and lowers most.

If ``logits = W · GAP(A) + b``, one more unit of channel ``c``'s mean activation adds ``W[k, c]``
to class ``k``'s logit: the column ``W[:, c]`` is the channel's direct effect on every class. The
head is read from the model's structure, with no forward pass: after ``layer`` (in execution
order) only containers that end with it, then an adaptive or global average pool to ``1 × 1``, an
optional ``Flatten``, and a ``Linear`` with ``C`` inputs that is the model's last layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..core import ModelCore

_FLATTEN = {"Flatten"}


@dataclass(frozen=True)
class ClassWeight:
    """A class, its name and the weight ``W[class, channel]``."""

    index: int
    label: str
    weight: float


@dataclass(frozen=True)
class LogitView:
    """A channel's ``n`` most raised classes (largest weight first) and ``n`` most lowered
    (most negative first), read from the linear layer ``linear``."""

    layer: str
    channel: int
    linear: str
    raises: tuple[ClassWeight, ...]
    lowers: tuple[ClassWeight, ...]


def _is_pool(module: nn.Module, shape: tuple[int, ...]) -> bool:
    if isinstance(module, nn.AdaptiveAvgPool2d):
        return tuple(shape[-2:]) == (1, 1) or len(shape) == 1
    return False


def classifier_of(core: ModelCore, layer: str) -> str | None:
    """The name of the linear layer that reads the global average of ``layer``'s channels, or None
    (see the module docstring)."""
    infos = core.layers()
    names = [i.name for i in infos]
    if layer not in names:
        return None
    start = names.index(layer)
    channels = infos[start].output_shape[0] if infos[start].output_shape else None
    pooled = False
    for info in infos[start + 1:]:
        module = core.module(info.name)
        if not pooled and layer.startswith(info.name + ".") and tuple(info.output_shape) == tuple(
                infos[start].output_shape):
            continue  # a container that ends with the layer (it outputs the layer's tensor)
        if not pooled and _is_pool(module, tuple(info.output_shape)):
            pooled = True
            continue
        if pooled and info.kind in _FLATTEN:
            continue
        fits = pooled and isinstance(module, nn.Linear) and module.in_features == channels and info is infos[-1]
        return info.name if fits else None
    return None


def logit_view(core: ModelCore, layer: str, channel: int, n: int = 5) -> LogitView | None:
    """The channel's :class:`LogitView` (``n`` classes each way, at most half the classes each, so
    none is listed twice), or None where the layer does not feed the classifier through global
    pooling. Reads weights only: no forward pass."""
    linear = classifier_of(core, layer)
    if linear is None:
        return None
    module = core.module(linear)
    with torch.no_grad():
        column = module.weight.detach()[:, int(channel)].float().cpu().numpy()
    order = np.lexsort((np.arange(column.size), -column))  # largest first, ties by class index
    low = np.lexsort((np.arange(column.size), column))
    n = min(int(n), max(1, column.size // 2))  # few classes: each shown once, on its side
    categories = list(core.categories or [])

    def named(k: int) -> ClassWeight:
        return ClassWeight(int(k), categories[k] if k < len(categories) else f"class {k}", float(column[k]))

    return LogitView(layer, int(channel), linear, tuple(named(k) for k in order[:n]),
                     tuple(named(k) for k in low[:n]))
