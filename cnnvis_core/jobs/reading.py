"""One forward pass of a batch with a reduction of each chosen layer's output, taken in the hook.

Outputs are read through the layer's layout (:func:`~cnnvis_core.layouts.channels_first`): a
vision transformer block's tokens ``(B, P + h·w, D)`` are ``D`` channels over the ``h×w`` patch
grid (prefix tokens excluded), a Swin stage's ``(B, H, W, C)`` is permuted to ``(B, C, H, W)``.

Each layer's output is reduced inside its tap (to a few numbers per image and channel) as soon as
the layer has run, so nothing of the size of a feature map outlives its layer, and an in-place
operation further on (``ReLU(inplace=True)``) cannot change what was read. Every tap stops the
forward: once the last chosen layer has run, the rest of the network is skipped.

On a CPU where torch leaves cores idle (``torch.get_num_threads()`` below the core count, as a job
on one thread beside its read-ahead), reductions asked to overlap run in ONE worker thread instead, overlapping
the rest of the forward: the statistics job's four passes over each map then cost no wall time
(``bench/jobs.py``: 0.76× of plain inference in the hook, 1.02× overlapped). A map handed over is
still the network's tensor, which an in-place operation further on could change before the worker
reads it; its version counter tells (views share it): any map whose version moved between its tap
and the end of the forward makes the batch run again with the reductions in the hooks, and that
layer is reduced in its hook from then on. Everything else (a GPU, every core busy) reduces in the
hook.

Reductions that need an intermediate the size of a map (a comparison mask) write it into a
per-thread :func:`scratch` buffer instead of a fresh tensor: a fresh large CPU tensor is new pages
from the kernel, whose first touch cost more than the comparison itself.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import torch
from torch import nn

from ..core import ModelCore
from ..hooks import Action, tapped
from ..layouts import channels_first
from .base import JobError

T = TypeVar("T")


def reduced_outputs(core: ModelCore, x: torch.Tensor, names: Sequence[str],
                    reduce: Callable[[str, torch.Tensor], T], overlap: bool = False) -> dict[str, T]:
    """``{name: reduce(name, maps)}`` of the named layers from ONE counted forward pass of ``x``
    (the session and the taps held for this batch only): ``maps`` ``(B, C, h, w)`` read through the
    layer's layout; a vector output ``(B, F)`` is given as ``(B, F, 1, 1)``. With ``overlap``, the
    reductions overlap the forward where cores are idle (see the module docstring; worth it for
    reductions that are torch passes over whole maps, as the statistics'); the result is the same."""
    in_hook = core.cache.get("reduced in the hook", set)  # layers seen changed in place after their tap
    overlap = overlap and _cores_idle(x.device)
    found = _one_pass(core, x, names, reduce, overlap, in_hook)
    missing = [n for n in names if n not in found]
    if missing:
        raise JobError(f"These layers gave no tensor with channels: {', '.join(missing)}.")
    return found


def _cores_idle(device: torch.device) -> bool:
    return device.type == "cpu" and torch.get_num_threads() < (os.cpu_count() or 1)


def _one_pass(core: ModelCore, x: torch.Tensor, names: Sequence[str], reduce: Callable[[str, torch.Tensor], T],
              overlap: bool, in_hook: set[str]) -> dict[str, T]:
    found: dict[str, T] = {}
    handed: dict[str, tuple[torch.Tensor, int, Future]] = {}
    infos = {name: core.layer(name) for name in names}

    def action(name: str) -> Action:
        def act(_module: nn.Module, _inputs: tuple, output: object) -> None:
            if isinstance(output, torch.Tensor) and output.dim() >= 2:
                maps = channels_first(infos[name], output)
                maps = (maps if maps.dim() == 4 else maps.reshape(*maps.shape[:2], -1, 1)).detach()
                if overlap and name not in in_hook:
                    handed[name] = (maps, maps._version, _worker().submit(reduce, name, maps))
                else:
                    found[name] = reduce(name, maps)
        return act

    # no_grad, not inference_mode, when maps are handed over: inference tensors keep no version counter
    mode = torch.no_grad() if overlap else torch.inference_mode()
    with core.session(), mode, tapped([core.tap(n, action(n), stop=True) for n in names]):
        core.forward(x)
    found.update({name: future.result() for name, (_maps, _version, future) in handed.items()})
    changed = {name for name, (maps, version, _future) in handed.items() if maps._version != version}
    if changed:  # changed in place before the worker surely read it: again, these layers in the hook
        in_hook.update(changed)
        return _one_pass(core, x, names, reduce, overlap, in_hook)
    return found


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _worker() -> ThreadPoolExecutor:
    """The one thread that reduces handed-over maps (made on first use)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(1, thread_name_prefix="cnnvis-reduce")
        return _pool


_scratch = threading.local()


def scratch(like: torch.Tensor) -> torch.Tensor:
    """A float32 tensor of ``like``'s shape on its device, from a buffer kept per thread (grown as
    needed; :func:`release` frees it). Its content is garbage; each use overwrites it whole."""
    buffer = getattr(_scratch, "buffer", None)
    if buffer is None or buffer.numel() < like.numel() or buffer.device != like.device:
        with torch.inference_mode(False):  # a normal tensor: written in place in and out of inference mode
            buffer = _scratch.buffer = torch.empty(like.numel(), dtype=torch.float32, device=like.device)
    return buffer[:like.numel()].view(like.shape)


def release() -> None:
    """Free this thread's :func:`scratch` buffer (and the reduction worker's)."""
    _scratch.buffer = None
    if _pool is not None:
        _pool.submit(_release_here).result()


def _release_here() -> None:
    _scratch.buffer = None
