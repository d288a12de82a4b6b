"""The dashboard's cache: every page's results in one store bounded by bytes, shared by all sessions.

``st.cache_data`` and ``st.cache_resource`` bound each function's cache by its number of entries,
which bounds nothing in bytes (an all-layer capture of a ResNet-50 is ~150 MB, a list of classes
2 kB). :func:`cached` keeps every page's results in one :class:`~cnnvis_core.budget.ByteLRU` of
``CNNVIS_CACHE_MB`` megabytes (default :data:`DEFAULT_MB`), least recently used dropped first,
and runs a result's computation once however many sessions ask for it at the same moment (the
others wait for it, under the same spinner).

Arguments make the key: the engine and the chosen image by their keys (``HASH_FUNCS`` of
:mod:`dashboard.state`), other hashable values as they are, anything else by a digest of its pickle; parameters
whose names start with ``_`` are left out of it (as Streamlit's caches do: an upload's bytes, named
by its id). Values are
shared, not copied: callers never change what they get. Exceptions are not kept. No widgets here.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import os
import pickle
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

from cnnvis_core.budget import ByteLRU

F = TypeVar("F", bound=Callable[..., Any])

#: the environment variable holding the budget in megabytes
BUDGET_ENV = "CNNVIS_CACHE_MB"
DEFAULT_MB = 1024


def budget_bytes() -> int:
    """The cache's budget: ``CNNVIS_CACHE_MB`` megabytes (default :data:`DEFAULT_MB`)."""
    text = os.environ.get(BUDGET_ENV, "").strip()
    try:
        megabytes = float(text) if text else DEFAULT_MB
    except ValueError:
        megabytes = DEFAULT_MB
    return int(max(megabytes, 1.0) * 1024 * 1024)


STORE = ByteLRU(budget_bytes())
#: type → key function for arguments hashed by a key rather than their content (set by dashboard.state)
KEYS: dict[type, Callable[[Any], Hashable]] = {}


def key_of(value: object) -> Hashable:
    """The part of a cache key that ``value`` gives."""
    for kind, key in KEYS.items():
        if isinstance(value, kind):
            return (kind.__name__, key(value))
    try:
        hash(value)
    except TypeError:  # by content: a digest of its pickle (repr would shorten a long array: collisions)
        try:
            return ("pickled", hashlib.sha256(pickle.dumps(value, protocol=5)).hexdigest())
        except (pickle.PicklingError, TypeError, AttributeError):
            return ("repr", repr(value))
    return value


def cached(spinner: str | None = None) -> Callable[[F], F]:
    """Cache the decorated function's results in :data:`STORE` (see the module docstring);
    ``spinner``: the text shown while the result is computed (or waited for) in a page. The
    function gains ``.clear()``, which forgets its results."""
    def decorate(function: F) -> F:
        name = f"{function.__module__}.{function.__qualname__}"
        signature = inspect.signature(function)

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            key = (name, tuple((k, key_of(v)) for k, v in bound.arguments.items() if not k.startswith("_")))
            missing = object()
            found = STORE.get(key, missing)
            if found is not missing:
                return found
            if spinner is None or get_script_run_ctx(suppress_warning=True) is None:
                return STORE.get_or_build(key, lambda: function(*args, **kwargs))
            with st.spinner(spinner):
                return STORE.get_or_build(key, lambda: function(*args, **kwargs))

        wrapper.clear = lambda: STORE.clear(lambda key: isinstance(key, tuple) and key[0] == name)  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]
    return decorate
