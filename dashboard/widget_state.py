"""Small helpers for widgets whose state must outlive a view switch or a change of range."""

from __future__ import annotations

import streamlit as st


def persist(*keys: str) -> None:
    """Keep these widgets' values while they are not drawn (another view is shown).

    Streamlit drops the state of a widget that a run does not draw; writing the value back
    at the top of the page (Streamlit's documented idiom) keeps it. Call before the widgets,
    and create them without an explicit default (use :func:`default`).
    """
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
