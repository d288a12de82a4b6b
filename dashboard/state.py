"""What every page shares: the chosen model (a cached, resident engine) and the chosen image.

The sidebar widgets live in ``app.py`` (the navigation frame), so their state survives page
changes; it stores the choice with :func:`choose`, and pages read it with :func:`current_engine`
and :func:`current_image` (or :func:`require_engine_and_image`). Engines are built once per model
choice with ``st.cache_resource`` and shared by all sessions (the engine is thread-safe); per-user
choices stay in ``st.session_state``.

The pages' caches take the engine and the chosen image themselves: ``hash_funcs=HASH_FUNCS`` hashes
them by their keys (:func:`engine_key`, :attr:`ChosenImage.key`), never by their contents.
"""

from __future__ import annotations

import hashlib
import runpy
import weakref
from dataclasses import dataclass
from pathlib import Path

import streamlit as st
from PIL import Image

from cnnvis_core import CnnvisError, Engine, load_image_with_notes
from cnnvis_core.demo import CLASSES, HELD_OUT_SEED_START, sample
from cnnvis_core.zoo import list_architectures

#: the navigation frame every page runs in
APP = Path(__file__).resolve().parents[1] / "app.py"
#: first seed of the dashboard's sample images (held out from training)
SAMPLE_SEED_START = HELD_OUT_SEED_START + 20_000_000
SAMPLE_COUNT = 16


@dataclass(frozen=True)
class ModelChoice:
    """A hashable description of the model a user picked (the engine cache's key)."""

    source: str  # "demo" | "torchvision" | "file"
    arch: str = ""
    weights: str | None = "DEFAULT"  # torchvision: "DEFAULT" or None (random)
    file_digest: str = ""
    file_name: str = ""

    @property
    def title(self) -> str:
        if self.source == "demo":
            return "Demo model (DemoNet, shapes)"
        if self.source == "file":
            return f"{self.arch} with {self.file_name}"
        return f"{self.arch} ({'pretrained' if self.weights else 'random weights'})"


#: each engine built by :func:`_build_engine` → ``repr`` of its model choice (its caches' key)
_ENGINE_KEYS: weakref.WeakKeyDictionary[Engine, str] = weakref.WeakKeyDictionary()


@st.cache_resource(max_entries=4, show_spinner="Loading the model…")
def _build_engine(choice: ModelChoice, _file_bytes: bytes | None = None) -> Engine:
    if choice.source == "demo":
        engine = Engine.demo()
    elif choice.source == "file":
        engine = Engine.from_torchvision(choice.arch, weights=_file_bytes)
    else:
        engine = Engine.from_torchvision(choice.arch, weights=choice.weights)
    _ENGINE_KEYS[engine] = repr(choice)
    return engine


def engine_for(choice: ModelChoice, file_bytes: bytes | None = None) -> Engine:
    """The resident engine of ``choice`` (built on first use, then shared)."""
    return _build_engine(choice, file_bytes)


def engine_key(engine: Engine) -> str:
    """What the caches know ``engine`` by: its model choice, or its name and id for an engine
    built elsewhere (a test's)."""
    return _ENGINE_KEYS.get(engine) or f"{engine.name}@{id(engine)}"


@st.cache_data(show_spinner=False)
def architectures() -> list[str]:
    """The torchvision architectures the sidebar offers."""
    return list_architectures()


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


@st.cache_data(max_entries=32, show_spinner=False)
def decode_upload(upload_id: str, _data: bytes) -> tuple[Image.Image, list[str]]:
    """Decode an uploaded file once per upload (raises :class:`cnnvis_core.InputError`)."""
    return load_image_with_notes(_data)


def sample_label(index: int) -> str:
    _, labels, _ = sample_image(index)
    return f"Sample {index + 1}: {CLASSES[labels[0]]}"


@st.cache_data(max_entries=64, show_spinner=False)
def sample_image(index: int) -> tuple[Image.Image, list[int], list]:
    """The dashboard's ``index``-th sample image (held-out seeds of the demo generator)."""
    return sample(SAMPLE_SEED_START + index)


@dataclass(frozen=True)
class ChosenImage:
    """The image a user picked, with a key for caches and the notes of its loading."""

    image: Image.Image
    key: str
    name: str
    notes: tuple[str, ...] = ()


#: ``hash_funcs`` of every cache that takes the engine or the chosen image. Streamlit matches these
#: by the argument's exact type (``module.qualname``), not by ``isinstance``: a subclass of either
#: needs its own entry.
HASH_FUNCS = {Engine: engine_key, ChosenImage: lambda chosen: chosen.key}


def choose(engine: Engine | None, image: ChosenImage | None) -> None:
    """Store the sidebar's choice (None: nothing usable) for the page this run shows."""
    st.session_state["_engine"] = engine
    st.session_state["_image"] = image


def current_engine() -> Engine | None:
    """The engine of the model chosen in the sidebar, or None if it could not be built."""
    return st.session_state.get("_engine")


def current_image() -> ChosenImage | None:
    """The image chosen in the sidebar, or None when none is usable."""
    return st.session_state.get("_image")


def require_frame() -> None:
    """Make sure the page runs inside ``app.py``'s navigation frame (its sidebar); call it first.

    Streamlit treats a ``pages/`` folder as the old file-based page list until ``st.navigation``
    has run once in the server process: a page URL opened first on a fresh server (a bookmark,
    a reload after a restart) runs that page file alone, with no model or image choice. Such a
    run executes ``app.py`` in its place, which switches Streamlit to ``app.py``'s navigation and
    shows the same page inside the frame in this same run (no rerun, so no click is lost), then
    stops.
    """
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        runpy.run_path(str(APP), run_name="__main__")
        st.stop()


def require_engine() -> Engine:
    """The chosen model's engine; without one, a hint in the page and the page stops here."""
    engine = current_engine()
    if engine is None:
        st.info("Choose a model in the sidebar.")
        st.stop()
    return engine


def require_engine_and_image() -> tuple[Engine, ChosenImage]:
    """The chosen engine and image; without both, a hint in the page and the page stops here."""
    engine, chosen = current_engine(), current_image()
    if engine is None or chosen is None:
        st.info("Choose a model and an image in the sidebar.")
        st.stop()
    return engine, chosen


def show_error(error: CnnvisError) -> None:
    """A CnnvisError as a readable message in the page."""
    st.error(str(error), icon="⚠️")


def safe_stem(*parts: str) -> str:
    """A file-name stem from ``parts`` joined by ``_``: letters, digits, ``-``, ``_`` and ``.``
    kept, anything else replaced by ``_``."""
    joined = "_".join(str(part) for part in parts)
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in joined).strip("_")
