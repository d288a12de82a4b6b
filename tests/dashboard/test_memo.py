"""The dashboard's cache: keyed like the pages ask, bounded by the bytes of what it keeps."""

from __future__ import annotations

import numpy as np

from cnnvis_core import Engine
from cnnvis_core.budget import ByteLRU
from dashboard import memo
from dashboard.state import ChosenImage  # registers the engine and image keys


def test_results_are_kept_per_arguments_and_engines_by_their_keys(monkeypatch):
    monkeypatch.setattr(memo, "STORE", ByteLRU(1 << 20))
    runs: list[tuple] = []

    @memo.cached()
    def work(engine: Engine, chosen: ChosenImage, scale: float, options: dict) -> np.ndarray:
        runs.append((engine.name, chosen.key, scale))
        return np.full(10, scale)

    a, b = Engine.demo(device="cpu"), Engine.demo(device="cpu")
    image = ChosenImage(None, "sample:1", "sample 1")  # type: ignore[arg-type]
    same_key = ChosenImage(None, "sample:1", "another label")  # type: ignore[arg-type]
    first = work(a, image, 2.0, {"x": [1]})
    assert work(a, same_key, 2.0, {"x": [1]}) is first  # images by their key; an unhashable dict by content
    work(b, image, 2.0, {"x": [1]})  # another engine object: another key
    work(a, image, 3.0, {"x": [1]})
    work(a, image, 2.0, {"x": [2]})
    assert len(runs) == 4
    work.clear()
    work(a, image, 2.0, {"x": [1]})
    assert len(runs) == 5


def test_the_store_drops_the_least_recently_used_by_bytes(monkeypatch):
    monkeypatch.setattr(memo, "STORE", ByteLRU(3 * 8_000 + 1_000))  # room for three 8 kB arrays
    runs: list[int] = []

    @memo.cached()
    def block(i: int) -> np.ndarray:
        runs.append(i)
        return np.zeros(1_000)  # 8,000 bytes

    for i in range(4):
        block(i)
    assert memo.STORE.bytes <= memo.STORE.budget and len(memo.STORE) == 3
    block(3)
    block(0)  # the oldest was dropped: computed again
    assert runs == [0, 1, 2, 3, 0]


def test_the_budget_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv(memo.BUDGET_ENV, "64")
    assert memo.budget_bytes() == 64 * 1024 * 1024
    monkeypatch.setenv(memo.BUDGET_ENV, "lots")
    assert memo.budget_bytes() == memo.DEFAULT_MB * 1024 * 1024


def test_unhashable_arguments_are_keyed_by_their_whole_content(monkeypatch):
    monkeypatch.setattr(memo, "STORE", ByteLRU(1 << 20))
    big = np.zeros(10_000)
    other = big.copy()
    other[5_000] = 1.0  # repr of both arrays is the same "[0. 0. ... 0.]"
    assert repr(big) == repr(other)
    assert memo.key_of(big) != memo.key_of(other) and memo.key_of(big) == memo.key_of(big.copy())
