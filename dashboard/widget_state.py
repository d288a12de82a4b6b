"""Widget values that outlive a view switch, a page switch or a change of range.

Streamlit forgets a widget's value at the end of any run that does not draw it: another view
of the same page, or another page. The dashboard keeps every setting for the session with the
idiom Streamlit documents, re-saving the value under its key (``st.session_state[k] =
st.session_state[k]``), which turns it into a plain session value that no run drops:

- a page calls :func:`persist` with its widgets' keys before drawing them; that registers the
  keys for the session and re-saves them;
- ``app.py`` calls :func:`keep_persisted` at the top of every run, before any widget, so the
  registered keys of every page are re-saved on whichever page the run shows.

Rules for a persisted widget: create it without ``value=``/``index=``/``default=`` (give its
first value with :func:`default`: Streamlit warns about a widget given both a default and a
session value), and never persist a file uploader or a button (their state cannot be set).
Options that depend on the model (a layer list, layer types) are checked with :func:`one_of` or
:func:`subset_of` before the widget is drawn; numbers with a changing range with :func:`clamp`.

Example (a page)::

    persist("cam_method", "cam_layer", "cam_opacity")
    default("cam_opacity", 0.5)
    st.slider("Opacity", 0.0, 1.0, key="cam_opacity")
"""

from __future__ import annotations

from collections.abc import Sequence

import streamlit as st

#: the session key holding every persisted widget key (a dict used as an ordered set)
REGISTRY = "_persisted_widget_keys"


def persist(*keys: str) -> None:
    """Keep these widgets' values for the session, also while they are not drawn (another
    view or another page is shown). Call before the widgets are drawn in the run."""
    registry = st.session_state.setdefault(REGISTRY, {})
    for key in keys:
        registry[key] = None
    _resave(keys)


def keep_persisted() -> None:
    """Re-save every key ever passed to :func:`persist` in this session (``app.py`` calls it at
    the top of every run, before any widget)."""
    _resave(tuple(st.session_state.get(REGISTRY, {})))


def _resave(keys: Sequence[str]) -> None:
    for key in keys:
        if key in st.session_state:
            st.session_state[key] = st.session_state[key]


def default(key: str, value: object) -> None:
    """Give a widget its first value through the session (no ``value=``/``index=`` argument)."""
    st.session_state.setdefault(key, value)


def clamp(key: str, low: int, high: int) -> None:
    """Keep a number widget's stored value inside its current (layer-dependent) range."""
    value = st.session_state.get(key)
    if value is not None and not low <= value <= high:
        st.session_state[key] = min(max(value, low), high)


def one_of(key: str, options: Sequence, fallback: object) -> None:
    """Make the stored value of a select widget one of ``options`` (``fallback`` when it is
    missing or no longer offered, e.g. a layer of another model)."""
    if st.session_state.get(key) not in options:
        st.session_state[key] = fallback


def subset_of(key: str, options: Sequence, fallback: Sequence) -> None:
    """Keep only the offered ``options`` in a multiselect's stored value; ``fallback`` when it is
    missing, or when none of its picks is offered any more (another model's layer types)."""
    value = st.session_state.get(key)
    kept = [v for v in value if v in options] if value is not None else []
    st.session_state[key] = kept if kept or value == [] else list(fallback)
