"""A small LRU of optimised images, one per model (in the core's cache), bounded by bytes (thread-safe).

Results are kept per unit, keyed by everything that decides the picture (layer, objective,
unit, settings, seed); since items of a batch don't interact, a request mixing cached and new
units optimises only the new ones, as one batch.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable

import numpy as np

from ..core import ModelCore

#: bytes of images each engine's cache may hold
DEFAULT_BUDGET = 64 * 1024 * 1024


class ResultCache:
    """``key → (image, activation)``, least recently used dropped first once over ``budget`` bytes."""

    def __init__(self, budget: int = DEFAULT_BUDGET) -> None:
        self.budget = int(budget)
        self._items: OrderedDict[Hashable, tuple[np.ndarray, float]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> tuple[np.ndarray, float] | None:
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
            return item

    def put(self, key: Hashable, image: np.ndarray, activation: float) -> None:
        image = np.array(image, copy=True)
        image.setflags(write=False)
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[0].nbytes
            if image.nbytes > self.budget:
                return
            self._items[key] = (image, float(activation))
            self._bytes += image.nbytes
            while self._bytes > self.budget:
                _, (dropped, _) = self._items.popitem(last=False)
                self._bytes -= dropped.nbytes

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


def results_cache(core: ModelCore) -> ResultCache:
    """The optimised images of one model (created on first use, dropped with the core)."""
    return core.cache.get("optimized images", ResultCache)
