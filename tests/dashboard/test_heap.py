"""The server's heap is frozen once, at the app's first run (dashboard/heap.py)."""

from __future__ import annotations

import gc

from dashboard import heap


def test_the_heap_is_frozen_once_and_what_comes_after_is_collected(monkeypatch):
    monkeypatch.setattr(heap, "_frozen", False)
    assert heap.freeze_startup() is True
    frozen = gc.get_freeze_count()
    assert frozen > 0
    assert heap.freeze_startup() is False, "a second run must not freeze its own garbage for good"
    assert gc.get_freeze_count() == frozen

    class Node:
        pass

    import weakref

    a, b = Node(), Node()
    a.other, b.other = b, a  # a cycle made after the freeze, like a page run's module and functions
    gone = weakref.ref(a)
    del a, b
    gc.collect()
    assert gone() is None, "a cycle made after the freeze is collected"
