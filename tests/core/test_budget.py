"""The byte-bounded cache: sizes, eviction by bytes, one computation for many askers."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

from cnnvis_core.budget import ByteLRU, size_of


def test_sizes_count_buffers_and_their_containers():
    array = np.zeros((100, 100), np.float32)  # 40,000 bytes
    assert 40_000 <= size_of(array) < 41_000
    assert 4 * 1000 <= size_of(torch.zeros(1000)) < 4 * 1000 + 1000
    assert 3 * 64 * 32 <= size_of(Image.new("RGB", (64, 32))) < 3 * 64 * 32 + 1000
    nested = {"a": [array, array], "b": (torch.zeros(500, dtype=torch.float64),)}
    # the same array twice is one buffer
    assert 40_000 + 4_000 <= size_of(nested) < 40_000 + 4_000 + 2_000

    class Holder:
        def __init__(self) -> None:
            self.maps = {"x": np.ones(10_000, np.uint8)}
            self.me = self  # a cycle

    assert 10_000 <= size_of(Holder()) < 12_000


def test_least_recently_used_go_first_once_over_budget():
    cache = ByteLRU(budget=3_500)
    for key in "abc":
        cache.put(key, b"", size=1_000)
    assert cache.get("a") == b""  # a is now the most recent
    cache.put("d", b"", size=1_000)  # 4,000 > 3,500: b (least recent) goes
    assert "b" not in cache and all(k in cache for k in "acd") and cache.bytes == 3_000
    cache.put("huge", b"", size=10_000)  # larger than the whole budget: not kept, nothing else lost
    assert "huge" not in cache and len(cache) == 3
    cache.put("a", b"", size=2_500)  # replacing a value counts its new size only
    assert cache.bytes <= 3_500 and "a" in cache
    cache.clear(lambda key: key == "a")
    assert "a" not in cache


def test_many_askers_share_one_computation():
    cache = ByteLRU(budget=1 << 20)
    calls, waited = [], []
    start = threading.Barrier(6)

    def build() -> np.ndarray:
        calls.append(threading.get_ident())
        time.sleep(0.3)
        return np.arange(10)

    results = []

    def ask() -> None:
        start.wait()
        results.append(cache.get_or_build("k", build, on_wait=lambda: waited.append(1)))

    threads = [threading.Thread(target=ask) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1, f"{len(calls)} computations for one key"
    assert len(waited) == 5 and all(r is results[0] for r in results)


def test_a_failed_computation_is_not_shared_the_waiter_computes_its_own():
    cache = ByteLRU(budget=1 << 20)
    first_started = threading.Event()

    def failing() -> int:
        first_started.set()
        time.sleep(0.2)
        raise RuntimeError("the first asker's session was stopped")

    errors, values = [], []

    def first() -> None:
        try:
            cache.get_or_build("k", failing)
        except RuntimeError as error:
            errors.append(error)

    thread = threading.Thread(target=first)
    thread.start()
    first_started.wait()
    values.append(cache.get_or_build("k", lambda: 42))
    thread.join()
    assert len(errors) == 1 and values == [42] and cache.get("k") == 42


def test_a_value_too_big_to_keep_is_still_returned():
    cache = ByteLRU(budget=100)
    value = cache.get_or_build("k", lambda: np.zeros(1000))
    assert value.shape == (1000,) and "k" not in cache


@pytest.mark.parametrize("budget", [0, 1])
def test_a_tiny_budget_keeps_nothing(budget):
    cache = ByteLRU(budget)
    cache.put("k", np.zeros(10))
    assert len(cache) == 0 and cache.bytes == 0
