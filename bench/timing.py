"""Timing helpers shared by the benchmark scripts: cases measured side by side, interleaved."""

from __future__ import annotations

import random
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
    """Median seconds of every case: each round runs every case once, so that a change in the
    machine's load touches all cases alike; with ``warm_up``, one untimed round first.

    The order of the cases is shuffled in every round (seeded): a millisecond-scale call pays for
    what the previous case left in the caches, and in a fixed order a case would always follow
    the same neighbour.
    """
    if warm_up:
        for fn in cases.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in cases}
    order = list(cases)
    shuffle = random.Random(0).shuffle
    for _ in range(rounds):
        shuffle(order)
        for name in order:
            times[name].append(timed(cases[name]))
    return {name: statistics.median(values) for name, values in times.items()}
