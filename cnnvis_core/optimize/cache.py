"""A small LRU of optimised images, one per model (in the core's cache), bounded by bytes (thread-safe).

Results are kept per unit, keyed by everything that decides the picture (layer, objective,
unit, settings, seed); since items of a batch don't interact, a request mixing cached and new
units optimises only the new ones, as one batch.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import TypeVar

import numpy as np

from ..budget import ByteLRU
from ..core import ModelCore
from ..errors import ModelError

C = TypeVar("C", bound=ModelCore)
#: where a core keeps its optimised images (:attr:`ModelCore.cache`)
CACHE_KEY = "optimized images"

#: bytes of images each engine's cache may hold
DEFAULT_BUDGET = 64 * 1024 * 1024


class ResultCache(ByteLRU):
    """``key → (image, activation)``, least recently used dropped first once over ``budget`` bytes
    of images."""

    def __init__(self, budget: int = DEFAULT_BUDGET) -> None:
        super().__init__(budget)

    def put(self, key: Hashable, image: np.ndarray, activation: float) -> None:  # type: ignore[override]
        image = np.array(image, copy=True)
        image.setflags(write=False)
        super().put(key, (image, float(activation)), size=image.nbytes)


def results_cache(core: ModelCore) -> ResultCache:
    """The optimised images of one model (created on first use, dropped with the core)."""
    return core.cache.get(CACHE_KEY, ResultCache)


def background_twin(core: C) -> C:
    """A twin of ``core`` for an optimisation in a background thread (:meth:`ModelCore.replica`:
    its own modules and lock, the same tensors) that keeps its images in ``core``'s cache, so that
    everyone asking ``core`` finds them; ``core`` itself when its model cannot be copied."""
    try:
        twin = core.replica()
    except ModelError:
        return core
    twin.cache.get(CACHE_KEY, lambda: results_cache(core))
    return twin
