"""Batch sizes for the many independent forward passes of Score-CAM and kin, and of the metrics.

The largest batch allowed comes from the memory available: on a GPU the free memory that
``torch.cuda.mem_get_info`` reports, on the CPU the free physical pages (``os.sysconf``),
of which a quarter (at most 2 GiB) may hold one batch's activations. Within that bound the
size is tuned by timing, because a bigger batch is not always faster on a CPU (once a batch's
maps no longer stay in cache). The first batches of a job double in size while the time per
image falls; the best size is remembered (in a dict the caller keeps, the core's per-model
cache) for the model and input shape, and later jobs start from it. No work is wasted: every
trial batch is part of the job.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence

import torch

from ..layers import LayerInfo

#: the largest batch ever used
MAX_BATCH = 256
_CPU_BUDGET_CAP = 2 * 2**30
#: how many input shapes a remembered-sizes dict keeps
_REMEMBERED_KEYS = 64

#: key → (batch size, settled)
Remembered = dict[tuple, tuple[int, bool]]


def free_memory(device: torch.device) -> int:
    """Bytes free for new tensors on ``device`` (a conservative 1 GiB when it cannot be told)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 2**30


def memory_cap(device: torch.device, layers: Sequence[LayerInfo], input_shape: Sequence[int],
               element_size: int = 4) -> int:
    """How many inputs of ``input_shape`` one batch may hold: every layer's output counted (an
    over-estimate of what inference keeps alive), against a share of the free memory."""
    per_item = sum(_numel(info.output_shape) for info in layers) + 2 * _numel(input_shape)
    free = free_memory(device)
    budget = free // 2 if device.type == "cuda" else min(free // 4, _CPU_BUDGET_CAP)
    return max(1, min(MAX_BATCH, budget // max(1, per_item * element_size)))


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def run_batched(total: int, work: Callable[[int, int], None], cap: int, remembered: Remembered, key: tuple) -> None:
    """Call ``work(start, stop)`` over ``range(total)`` in consecutive batches of at most ``cap``.

    Until a size is settled for ``key``, sizes double from 1 (or from where an earlier job
    stopped tuning), each size running two batches and judged by the second: the first
    batch of a new shape also pays one-time set-up (oneDNN, for one, builds its kernels per
    shape), which made small sizes look best. Doubling goes on while the time per item
    stays within 10 % of the best seen; once a size is clearly slower, or the cap is reached,
    the best size is settled and later jobs use it at once.
    """
    cap = max(1, int(cap))
    size, settled = remembered.get(key, (1, False))
    size = min(size, cap)
    settled = settled or size >= cap
    best_size, best_rate, runs_at_size = size, float("inf"), 0
    start = 0
    while start < total:
        stop = min(total, start + size)
        began = time.perf_counter()
        work(start, stop)
        rate = (time.perf_counter() - began) / (stop - start)
        full, start = stop - start == size, stop
        if settled or not full:
            continue
        runs_at_size += 1
        if runs_at_size < 2:  # the first batch of this size: set-up included, not judged
            continue
        if rate < best_rate:
            best_size, best_rate = size, rate
        if rate <= best_rate * 1.10 and size < cap:
            size, runs_at_size = min(size * 2, cap), 0
        else:
            size, settled = best_size, True
    if settled:
        _remember(remembered, key, (size, True))
    elif best_rate < float("inf"):  # the job ended while tuning: the next one goes on from the best size
        _remember(remembered, key, (best_size, False))


def _remember(remembered: Remembered, key: tuple, value: tuple[int, bool]) -> None:
    if len(remembered) >= _REMEMBERED_KEYS:
        remembered.clear()
    remembered[key] = value
