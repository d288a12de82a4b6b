"""Batch sizes for the many independent forward passes of Score-CAM and kin, and of the metrics.

The largest batch allowed comes from the memory available: on a GPU the free memory that
``torch.cuda.mem_get_info`` reports, on the CPU the free physical pages (``os.sysconf``),
of which a quarter (at most 2 GiB) may hold one batch's activations. Within that bound the
size is tuned by timing (:class:`Tuner`), because a bigger batch is not always faster on a
CPU (once a batch's maps no longer stay in cache). The first batches of a job double in size
while the time per image falls; the size found is remembered (in a dict the caller keeps, the
core's per-model cache) for the model and input shape, and later jobs start from it. No work
is wasted: every trial batch is part of the job.
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


def run_batched(total: int, work: Callable[[int, int], None], cap: int, remembered: Remembered, key: tuple,
                after: Callable[[int, int], object] | None = None,
                clock: Callable[[], float] = time.perf_counter) -> None:
    """Call ``work(start, stop)`` over ``range(total)`` in consecutive batches of at most ``cap``,
    then ``after(stop, total)`` (a progress report: outside the timed part, so a slow callback
    never makes a batch size look slow). Sizes come from a :class:`Tuner`, which starts from
    what ``remembered[key]`` holds and leaves there what it learnt.
    """
    tuner = Tuner(cap, remembered.get(key))
    start = 0
    while start < total:
        stop = min(total, start + tuner.size)
        began = clock()
        work(start, stop)
        tuner.observe(stop - start, clock() - began)
        if after is not None:
            after(stop, total)
        start = stop
    _remember(remembered, key, tuner.memory())


class Tuner:
    """The batch size for a run of batches, tuned by timing, robust to a noisy machine.

    Sizes double from 1 (or from the size an earlier job found) while the time per item does
    not get clearly worse. The first batch of each size also pays one-time set-up (oneDNN, for
    one, builds its kernels per shape) and is not judged. Noise on a shared machine only ever
    adds time, so the readings are weighed unevenly: ONE reading within 10 % of the best is
    proof enough that a size is not slower (it moves on), while a size is found clearly slower
    only when :data:`REJECT_AFTER` readings in a row all exceed the best by more than 10 %
    (a stall of the machine cannot stop the search on its own). Reaching the memory cap ends
    the search too. A size found earlier is not taken on trust unless it is the cap: a job
    starting from it tries the next size up, so a size settled on bad evidence heals itself.
    And a settled size that turns slow (three batches in a row over 1.3 × its reference time)
    starts the search again from there.
    """

    #: a size is clearly slower when its time per item exceeds the best by this factor…
    WORSE = 1.10
    #: …in this many readings in a row
    REJECT_AFTER = 3
    #: a settled size has turned slow after this many batches over REGRESSION × its reference
    STRIKES, REGRESSION = 3, 1.30

    def __init__(self, cap: int, remembered: tuple[int, bool] | None = None) -> None:
        self.cap = max(1, int(cap))
        start = min(remembered[0], self.cap) if remembered else 1
        self.size = start
        self.settled = start >= self.cap
        self.best: tuple[int, float] | None = None
        self._runs: dict[int, int] = {}
        self._slow_readings = 0
        self._reference: float | None = None
        self._strikes = 0

    def observe(self, count: int, seconds: float) -> None:
        """One batch of ``count`` items took ``seconds``; a partial (last) batch says nothing."""
        if count != self.size:
            return
        runs = self._runs[self.size] = self._runs.get(self.size, 0) + 1
        if runs == 1:
            return  # set-up included
        rate = seconds / count
        if self.settled:
            self._watch(rate)
        elif self.best is None or rate <= self.best[1] * self.WORSE:
            self._accept(rate)
        else:
            self._slow_readings += 1
            if self._slow_readings >= self.REJECT_AFTER:
                self._settle()

    def _accept(self, rate: float) -> None:
        """The current size is not slower: note it if it is the best, and try the next one up."""
        if self.best is None or rate < self.best[1]:
            self.best = (self.size, rate)
        self._slow_readings = 0
        if self.size < self.cap:
            self.size = min(2 * self.size, self.cap)
        else:
            self._settle()

    def _settle(self) -> None:
        self.size, self.settled = self.best[0], True
        self._reference, self._strikes, self._slow_readings = self.best[1], 0, 0

    def _watch(self, rate: float) -> None:
        if self._reference is None:
            self._reference = rate
            return
        self._strikes = self._strikes + 1 if rate > self._reference * self.REGRESSION else 0
        self._reference = min(self._reference, rate)
        if self._strikes >= self.STRIKES and self.size < self.cap:
            self.settled, self.best = False, None

    def memory(self) -> tuple[int, bool]:
        """What a later job should start from: ``(size, settled)``."""
        if self.settled:
            return self.size, True
        return (self.best[0] if self.best else self.size), False


def _remember(remembered: Remembered, key: tuple, value: tuple[int, bool]) -> None:
    if len(remembered) >= _REMEMBERED_KEYS and key not in remembered:
        remembered.clear()
    remembered[key] = value
