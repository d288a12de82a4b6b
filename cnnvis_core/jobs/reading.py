"""One forward pass of a batch with a reduction of each chosen layer's output, taken in the hook.

Outputs are read through the layer's layout (:func:`~cnnvis_core.layouts.channels_first`): a
vision transformer block's tokens ``(B, P + h·w, D)`` are ``D`` channels over the ``h×w`` patch
grid (prefix tokens excluded), a Swin stage's ``(B, H, W, C)`` is permuted to ``(B, C, H, W)``.

Each layer's output is reduced inside its tap (to a few numbers per image and channel) as soon as
the layer has run, so nothing of the size of a feature map outlives its layer, and an in-place
operation further on (``ReLU(inplace=True)``) cannot change what was read. Every tap stops the
forward: once the last chosen layer has run, the rest of the network is skipped.

Reductions that need an intermediate the size of a map (a comparison mask) write it into a
per-thread :func:`scratch` buffer instead of a fresh tensor: a fresh large CPU tensor is new pages
from the kernel, whose first touch cost more than the comparison itself.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch
from torch import nn

from ..core import ModelCore
from ..hooks import Action, tapped
from ..layouts import channels_first
from .base import JobError

T = TypeVar("T")


def reduced_outputs(core: ModelCore, x: torch.Tensor, names: Sequence[str],
                    reduce: Callable[[str, torch.Tensor], T]) -> dict[str, T]:
    """``{name: reduce(name, maps)}`` of the named layers from ONE counted forward pass of ``x``
    (the session and the taps held for this batch only): ``maps`` ``(B, C, h, w)`` read through the
    layer's layout; a vector output ``(B, F)`` is given as ``(B, F, 1, 1)``."""
    found: dict[str, T] = {}
    infos = {name: core.layer(name) for name in names}

    def action(name: str) -> Action:
        def act(_module: nn.Module, _inputs: tuple, output: object) -> None:
            if isinstance(output, torch.Tensor) and output.dim() >= 2:
                maps = channels_first(infos[name], output)
                maps = maps if maps.dim() == 4 else maps.reshape(*maps.shape[:2], -1, 1)
                found[name] = reduce(name, maps.detach())
        return act

    with core.session(), torch.inference_mode(), tapped([core.tap(n, action(n), stop=True) for n in names]):
        core.forward(x)
    missing = [n for n in names if n not in found]
    if missing:
        raise JobError(f"These layers gave no tensor with channels: {', '.join(missing)}.")
    return found


_scratch = threading.local()


def scratch(like: torch.Tensor) -> torch.Tensor:
    """A float32 tensor of ``like``'s shape on its device, from a buffer kept per thread (grown as
    needed; :func:`release` frees it). Its content is garbage; each use overwrites it whole."""
    buffer = getattr(_scratch, "buffer", None)
    if buffer is None or buffer.numel() < like.numel() or buffer.device != like.device:
        buffer = _scratch.buffer = torch.empty(like.numel(), dtype=torch.float32, device=like.device)
    return buffer[:like.numel()].view(like.shape)


def release() -> None:
    """Free this thread's :func:`scratch` buffer."""
    _scratch.buffer = None
