"""Caches bounded by bytes, not by entry count, and computations shared by everyone who asks at once.

A count bound says nothing about memory: one entry may be a 150 MB capture of every layer of a
ResNet-50, another a 2 kB list of classes. :class:`ByteLRU` keeps the total :func:`size_of` its
values under a budget, dropping the least recently used first, and :meth:`ByteLRU.get_or_build`
runs a missing value's computation once however many threads ask for it at the same time (the
others wait for it and share its result), so three sessions asking for the same Score-CAM run
one computation.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import TypeVar

import numpy as np
import torch
from PIL import Image

T = TypeVar("T")

#: how deep :func:`size_of` follows containers and attributes
_DEPTH = 6


def size_of(value: object) -> int:
    """About how many bytes ``value`` holds: arrays, tensors, images and byte strings by their
    buffers, containers, dataclasses and plain objects by their parts (each object counted once;
    followed :data:`_DEPTH` levels deep), anything else by ``sys.getsizeof``."""
    return _size(value, set(), 0)


def _size(value: object, seen: set[int], depth: int) -> int:
    if id(value) in seen:
        return 0
    seen.add(id(value))
    if isinstance(value, np.ndarray):
        return int(value.nbytes) + 112
    if isinstance(value, torch.Tensor):
        return int(value.element_size() * value.nelement()) + 160
    if isinstance(value, Image.Image):
        return int(value.width * value.height * len(value.getbands())) + 200
    if isinstance(value, (bytes, bytearray, memoryview, str, int, float, bool, type(None))):
        return sys.getsizeof(value)
    if depth >= _DEPTH:
        return sys.getsizeof(value)
    parts = _parts(value)
    return sys.getsizeof(value) + sum(_size(part, seen, depth + 1) for part in parts)


def _parts(value: object) -> list[object]:
    """What a container or object holds (its items, its fields or attributes)."""
    if isinstance(value, dict):
        return [*value.keys(), *value.values()]
    if isinstance(value, (list, tuple, set, frozenset)):
        return list(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [getattr(value, f.name) for f in dataclasses.fields(value)]
    attributes = getattr(value, "__dict__", None)
    if isinstance(attributes, dict):
        return list(attributes.values())
    slots = getattr(type(value), "__slots__", ())
    return [getattr(value, s) for s in ((slots,) if isinstance(slots, str) else slots) if hasattr(value, s)]


class ByteLRU:
    """``key → value``, least recently used dropped first while the sizes add up to more than
    ``budget`` bytes (a value larger than the whole budget is returned but not kept). Thread-safe."""

    def __init__(self, budget: int) -> None:
        self.budget = int(budget)
        self._lock = threading.Lock()
        self._items: OrderedDict[Hashable, tuple[object, int]] = OrderedDict()
        self._bytes = 0
        self._building: dict[Hashable, threading.Event] = {}

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._items

    @property
    def bytes(self) -> int:
        """The bytes the kept values hold (as :func:`size_of` counts them)."""
        with self._lock:
            return self._bytes

    def get(self, key: Hashable, default: object = None) -> object:
        """The value under ``key`` (now the most recently used), else ``default``."""
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return default
            self._items.move_to_end(key)
            return item[0]

    def put(self, key: Hashable, value: object, size: int | None = None) -> None:
        """Keep ``value`` under ``key`` (``size``: its bytes, measured when not given)."""
        size = size_of(value) if size is None else int(size)
        with self._lock:
            self._drop(key)
            if size > self.budget:
                return
            self._items[key] = (value, size)
            self._bytes += size
            while self._bytes > self.budget:
                self._drop(next(iter(self._items)))

    def _drop(self, key: Hashable) -> None:
        item = self._items.pop(key, None)
        if item is not None:
            self._bytes -= item[1]

    def discard(self, key: Hashable) -> None:
        """Forget ``key`` (nothing happens when it is not kept)."""
        with self._lock:
            self._drop(key)

    def clear(self, where: Callable[[Hashable], bool] | None = None) -> None:
        """Forget every value (or those whose key satisfies ``where``)."""
        with self._lock:
            for key in [k for k in self._items if where is None or where(k)]:
                self._drop(key)

    def get_or_build(self, key: Hashable, build: Callable[[], T], on_wait: Callable[[], None] | None = None) -> T:
        """The value under ``key``, built with ``build()`` when missing. Whoever asks while another
        thread builds it waits for that build (``on_wait()`` called once, first) and shares its
        value; if that build fails, the waiter builds it itself (so one user's error or stop
        never becomes another's)."""
        missing = object()
        while True:
            with self._lock:
                item = self._items.get(key)
                if item is not None:
                    self._items.move_to_end(key)
                    return item[0]  # type: ignore[return-value]
                running = self._building.get(key)
                if running is None:
                    done = self._building[key] = threading.Event()
                    break
            if on_wait is not None:
                on_wait()
                on_wait = None
            running.wait()
            value = self.get(key, missing)
            if value is not missing:
                return value  # type: ignore[return-value]
            # the build failed, or its value was too big to keep: build it here
            with self._lock:
                if self._building.get(key) is None:
                    done = self._building[key] = threading.Event()
                    break
        try:
            value = build()
            self.put(key, value)
            return value
        finally:
            with self._lock:
                self._building.pop(key, None)
            done.set()
