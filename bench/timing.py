"""Timing helpers shared by the benchmark scripts: cases measured side by side, interleaved."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def timed(fn: Callable[[], object]) -> float:
    """Seconds one call of ``fn`` takes."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved_medians(cases: dict[str, Callable[[], object]], rounds: int,
                        warm_up: bool = True) -> dict[str, float]:
    """Median seconds of every case: each round runs every case once, in turn, so that a change
    in the machine's load touches all cases alike; with ``warm_up``, one untimed round first."""
    if warm_up:
        for fn in cases.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            times[name].append(timed(fn))
    return {name: statistics.median(values) for name, values in times.items()}
