"""Batch sizes for many inference passes: tuned by timing, robust to a noisy machine (fake clocks)."""

from __future__ import annotations

import random

from cnnvis_core.passes.batch_size import Tuner, run_batched


class FakeMachine:
    """A clock and a ``work`` whose batch of ``n`` items costs ``per_item(n) · n`` seconds, plus 20 s of
    set-up the first time a size is seen, plus (with ``spikes``) a random stall on some batches."""

    def __init__(self, per_item: dict[int, float], spikes: float = 0.0, seed: int = 0) -> None:
        self.now, self.per_item, self.spikes = 0.0, per_item, spikes
        self.sizes: list[int] = []
        self.seen: set[int] = set()
        self.random = random.Random(seed)

    def clock(self) -> float:
        return self.now

    def work(self, start: int, stop: int) -> None:
        n = stop - start
        self.now += self.per_item.get(n, 1.0) * n + (0.0 if n in self.seen else 20.0)
        if self.spikes and self.random.random() < self.spikes:
            self.now += 5.0 * n  # another process took the cores for a while: 5× the batch's own time or more
        self.seen.add(n)
        self.sizes.append(n)


#: time per item falls until 8, then rises (the maps of a big batch leave the cache)
CURVE = {1: 1.0, 2: 0.8, 4: 0.6, 8: 0.5, 16: 0.7, 32: 0.9}


def test_sizes_are_judged_after_their_set_up_batch_and_rejected_only_on_repeated_evidence():
    """Judged by first batches (set-up included) size 1 would look best. One good reading moves on;
    a slower size needs three slow readings in a row."""
    machine, remembered = FakeMachine(CURVE), {}
    run_batched(300, machine.work, cap=32, remembered=remembered, key=("k",), clock=machine.clock)
    assert machine.sizes[:12] == [1] * 2 + [2] * 2 + [4] * 2 + [8] * 2 + [16] * 4
    assert set(machine.sizes[12:-1]) == {8} and remembered[("k",)] == (8, True)
    machine.sizes.clear()
    run_batched(120, machine.work, cap=32, remembered=remembered, key=("k",), clock=machine.clock)
    # a later job starts at 8 and tries 16 once more before trusting 8 again
    assert machine.sizes[:6] == [8] * 2 + [16] * 4 and set(machine.sizes[6:-1]) == {8}


def test_a_noisy_machine_does_not_settle_below_the_best_size():
    """Random stalls on a fifth of the batches: the size still grows to where the time per item is
    lowest (the cap, 64, here), in every one of twenty runs with different noise."""
    curve = {n: 1.0 / n ** 0.3 for n in (1, 2, 4, 8, 16, 32, 64)}
    for seed in range(20):
        machine, remembered = FakeMachine(curve, spikes=0.2, seed=seed), {}
        run_batched(1500, machine.work, cap=64, remembered=remembered, key=("k",), clock=machine.clock)
        assert remembered[("k",)] == (64, True), (seed, machine.sizes[:40])


def test_a_size_settled_on_bad_evidence_heals_in_the_next_job():
    machine = FakeMachine({n: 1.0 / n ** 0.3 for n in (1, 2, 4, 8, 16, 32, 64)})
    remembered = {("k",): (2, True)}  # settled too low by an earlier, noisy job
    run_batched(600, machine.work, cap=64, remembered=remembered, key=("k",), clock=machine.clock)
    assert machine.sizes[0] == 2 and remembered[("k",)] == (64, True)


def test_a_slow_progress_report_does_not_count_as_batch_time():
    machine = FakeMachine({n: 1.0 / n ** 0.3 for n in (1, 2, 4, 8, 16)})
    reports: list[tuple[int, int]] = []

    def after(done: int, total: int) -> None:
        machine.now += 50.0  # a page redraw that takes far longer than any batch
        reports.append((done, total))

    remembered = {}
    run_batched(300, machine.work, cap=16, remembered=remembered, key=("k",), after=after, clock=machine.clock)
    assert remembered[("k",)] == (16, True) and reports[-1] == (300, 300) and len(reports) == len(machine.sizes)


def test_a_settled_size_that_turns_slow_is_tuned_again():
    tuner = Tuner(cap=64, remembered=(8, False))
    for size, rate, batches in ((8, 0.5, 2), (16, 0.6, 4)):  # 8 is best; 16 clearly slower: settle at 8
        for _ in range(batches):
            tuner.observe(size, rate * size)
    assert tuner.settled and tuner.size == 8
    for _ in range(3):
        tuner.observe(8, 8 * 0.5)
    assert tuner.settled
    for _ in range(3):  # the machine changed: 8 now takes twice as long, three times in a row
        tuner.observe(8, 8 * 1.0)
    assert not tuner.settled and tuner.size == 8
    tuner.observe(8, 8 * 1.0)  # the search starts again at 8: its new best, then 16
    assert tuner.size == 16 and not tuner.settled
