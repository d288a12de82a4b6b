"""What every page shares: the chosen model (a cached, resident engine) and the chosen image.

The sidebar widgets live in ``app.py`` (the navigation frame), so their state survives page
changes; it stores the choice with :func:`choose`, and pages read it with :func:`current_engine`
and :func:`current_image` (or :func:`require_engine_and_image`); the data set likewise
(:func:`choose_data`, :func:`current_data`, :func:`require_data`). Engines are built once per model
choice with ``st.cache_resource`` and shared by all sessions (the engine is thread-safe); per-user
choices stay in ``st.session_state``.

The pages' caches take the engine and the chosen image themselves: ``hash_funcs=HASH_FUNCS`` hashes
them by their keys (:func:`engine_key`, :attr:`ChosenImage.key`), never by their contents.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import runpy
import sys
import urllib.parse
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import streamlit as st
from PIL import Image

from cnnvis_core import CnnvisError, Engine, load_image_with_notes, loaders, zoo
from cnnvis_core.data import Dataset
from cnnvis_core.demo import CLASSES, HELD_OUT_SEED_START, sample
from cnnvis_core.errors import WeightsUnavailableError
from cnnvis_core.sheets import Style, sheet_png

from . import memo
from .memo import cached

#: the navigation frame every page runs in
APP = Path(__file__).resolve().parents[1] / "app.py"
#: first seed of the dashboard's sample images (held out from training)
SAMPLE_SEED_START = HELD_OUT_SEED_START + 20_000_000
SAMPLE_COUNT = 16


@dataclass(frozen=True)
class ModelChoice:
    """A hashable description of the model a user picked (the engine cache's key)."""

    source: str  # "demo" | "torchvision" | "file" (state dict) | "timm" | "modelfile" (.pt2/.onnx) | "factory"
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
        if self.source == "modelfile":
            return f"model file {self.file_name}"
        if self.source == "factory":
            return f"{self.arch}()"
        prefix = "timm " if self.source == "timm" else ""
        return f"{prefix}{self.arch} ({'pretrained' if self.weights else 'random weights'})"

    @property
    def markdown_title(self) -> str:
        """:attr:`title` for markdown: the user's file name in it shown as it is (:func:`plain`)."""
        return self.title.replace(self.file_name, plain(self.file_name)) if self.file_name else self.title

    @property
    def random(self) -> bool:
        """A torchvision or timm architecture with random (untrained) weights."""
        return self.source in ("torchvision", "timm") and self.weights is None

    @property
    def stem(self) -> str:
        """The model in a file name: ``demonet``, ``resnet18``, ``resnet18_random``,
        ``resnet18_my_weights``."""
        if self.source == "demo":
            return "demonet"
        if self.source == "file":
            return safe_stem(self.arch, Path(self.file_name).stem)
        if self.source == "modelfile":
            return safe_stem(Path(self.file_name).stem)
        if self.source == "factory":
            return safe_stem(self.arch.replace(":", "_"))
        return safe_stem(self.arch, "random") if self.random else self.arch

    @property
    def weights_text(self) -> str:
        """The weights in words, for notes saved with downloads."""
        if self.source == "demo":
            return "bundled demo weights (8 drawn shapes)"
        if self.source == "file":
            return f"weights file {self.file_name}"
        if self.source == "modelfile":
            return f"as stored in {self.file_name}"
        if self.source == "factory":
            return f"as built by {self.arch}"
        if self.random:
            return "random (untrained) weights"
        return f"{'timm' if self.source == 'timm' else 'torchvision'} pretrained weights ({self.weights})"


#: each engine built by :func:`_build_engine` → ``repr`` of its model choice (its caches' key)
_ENGINE_KEYS: weakref.WeakKeyDictionary[Engine, str] = weakref.WeakKeyDictionary()


@st.cache_resource(max_entries=4, show_spinner="Loading the model…")
def _build_engine(choice: ModelChoice, _file_bytes: bytes | None = None) -> Engine:
    if choice.source == "demo":
        engine = Engine.demo()
    elif choice.source == "file":
        named = io.BytesIO(_file_bytes)
        named.name = choice.file_name  # messages name the user's file, not "in-memory bytes"
        engine = Engine.from_torchvision(choice.arch, weights=named)
    elif choice.source == "modelfile":
        named = io.BytesIO(_file_bytes)
        named.name = choice.file_name
        engine = Engine.from_file(named)
    elif choice.source == "timm":
        engine = Engine.from_timm(choice.arch, weights=choice.weights)
    elif choice.source == "factory":
        engine = Engine.from_factory(choice.arch)
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
    return zoo.list_architectures()


@st.cache_data(show_spinner=False)
def timm_architectures() -> list[str]:
    """The timm model names the sidebar offers (``timm.list_models()``)."""
    return loaders.list_timm_models()


def timm_pretrained(name: str) -> bool:
    """Whether timm's pretrained weights of ``name`` are cached or downloadable (bounded probe)."""
    return loaders.timm_pretrained_available(name)


def server_factory(argv: list[str] | None = None) -> str | None:
    """The model factory the server was started with: ``streamlit run app.py -- --model pkg.mod:build``
    or the environment variable ``CNNVIS_MODEL``; None when neither is given."""
    args = list(sys.argv[1:] if argv is None else argv)
    for i, arg in enumerate(args):
        if arg == "--model" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--model="):
            return arg.split("=", 1)[1]
    return os.environ.get("CNNVIS_MODEL") or None


def pretrained_status(arch: str) -> zoo.PretrainedStatus:
    """Whether ``arch``'s pretrained weights are cached or downloadable (looked at on every run:
    the cache is one file check, a download probe is bounded and remembered by the library)."""
    return zoo.pretrained_status(arch)


#: the dashboard's words for the library's ways out of missing pretrained weights
UNAVAILABLE_ADVICE = ("Or turn off *Pretrained weights* in the sidebar (random weights: structure, not "
                      "knowledge), or choose *Weights file* and upload a state dict.")


def unavailable_message(status: zoo.PretrainedStatus) -> str:
    """Why ``status``'s weights cannot be had here, and what to do, in the dashboard's words."""
    return (f"The pretrained weights of {status.arch} are not in the cache and cannot be downloaded here "
            f"(no connection to {urllib.parse.urlsplit(status.url).hostname}). To use them offline, download "
            f"{status.url} elsewhere and put the file at `{status.path}`. {UNAVAILABLE_ADVICE}")


def error_message(error: CnnvisError, choice: ModelChoice | None = None) -> str:
    """``error`` as the page shows it (markdown): the library's advice in code terms (``weights=None``)
    replaced by the sidebar's choices, the user's file name as plain text (:func:`plain`)."""
    message = str(error)
    if isinstance(error, WeightsUnavailableError) and choice is not None and choice.arch:
        message = message.replace(zoo.unavailable_advice(choice.arch), UNAVAILABLE_ADVICE)
    if choice is not None and choice.file_name:  # the user's file name, as the library quotes it
        name = os.path.basename(choice.file_name)
        message = message.replace(name, plain(name))
    return message


def load_error_message(error: CnnvisError, choice: ModelChoice) -> str:
    """Why ``choice``'s model could not be loaded, as the sidebar says it: :func:`error_message`, led
    by the user's file name where the library's words do not name it (weights of another architecture)."""
    message = error_message(error, choice)
    name = os.path.basename(choice.file_name)
    if name and plain(name) not in message:
        message = f"{plain(name)}: {message}"
    return message


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


@cached()
def decode_upload(upload_id: str, _data: bytes) -> tuple[Image.Image, list[str]]:
    """Decode an uploaded file once per upload (raises :class:`cnnvis_core.InputError`)."""
    return load_image_with_notes(_data)


def sample_label(index: int) -> str:
    _, labels, _ = sample_image(index)
    return f"Sample {index + 1}: {CLASSES[labels[0]]}"


@cached()
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

    @property
    def is_upload(self) -> bool:
        return self.key.startswith("upload:")

    @property
    def stem(self) -> str:
        """The image in a file name: an upload's own name without its extension (``chelsea``),
        a sample as ``sample1_ring``."""
        if self.is_upload:
            return safe_stem(Path(self.name).stem) or "upload"
        return safe_stem(self.name.lower().replace("sample ", "sample").replace(": ", "_"))


#: ``hash_funcs`` of every cache that takes the engine or the chosen image. Streamlit matches these
#: by the argument's exact type (``module.qualname``), not by ``isinstance``: a subclass of either
#: needs its own entry.
HASH_FUNCS = {Engine: engine_key, ChosenImage: lambda chosen: chosen.key}
memo.KEYS.update(HASH_FUNCS)  # the byte-bounded cache (dashboard.memo) knows them by the same keys


@dataclass(frozen=True)
class Problem:
    """Why there is no model (or data set) to use, in words for a person: ``level`` ``info``
    (something is still to be chosen), ``warning`` (the model cannot be had or failed to load) or
    ``error`` (an unusable input: a missing folder, an unreadable archive)."""

    level: str
    text: str

    def show(self) -> None:
        getattr(st, self.level)(self.text, icon="ℹ️" if self.level == "info" else "⚠️")


def choose(engine: Engine | None, image: ChosenImage | None, model: ModelChoice | None = None,
           problem: Problem | None = None) -> None:
    """Store the sidebar's choice for the page this run shows: the engine (None: no usable
    model), the image, the model choice, and ``problem``: why there is no engine (a model that
    failed to load, or what is still to be chosen), in words for the page."""
    st.session_state["_engine"] = engine
    st.session_state["_image"] = image
    st.session_state["_model_choice"] = model
    st.session_state["_model_problem"] = problem


@dataclass(frozen=True)
class ChosenData:
    """The data set a user picked in the sidebar: the :class:`Dataset` (None when it cannot be used),
    its name for people (``24 demo samples``, ``folder /data/val``, ``archive val.zip``), and why it
    cannot be used (``problem``, in words for the page)."""

    dataset: Dataset | None
    name: str
    problem: Problem | None = None


def choose_data(data: ChosenData | None) -> None:
    """Store the sidebar's data set choice for the page this run shows."""
    st.session_state["_data"] = data


def current_data() -> ChosenData | None:
    """The data set chosen in the sidebar (also when it cannot be used: see its ``problem``)."""
    return st.session_state.get("_data")


def require_data() -> ChosenData:
    """The chosen data set; without a usable one, why not in the page, and the page stops here."""
    data = current_data()
    if data is None or data.dataset is None:
        if data is not None and data.problem is not None:
            data.problem.show()
        else:
            st.info("Choose a data set in the sidebar (*Data set*).")
        st.stop()
    return data


def current_model_choice() -> ModelChoice | None:
    """What the sidebar chose as the model (also when it could not be loaded)."""
    return st.session_state.get("_model_choice")


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


def _no_model() -> None:
    """Say in the page why there is no model (it failed to load, or is still to be chosen), and
    stop the page."""
    problem = st.session_state.get("_model_problem")
    if problem is not None:
        problem.show()
    else:
        st.info("Choose a model in the sidebar.")
    st.stop()


def require_engine() -> Engine:
    """The chosen model's engine; without one, why not in the page, and the page stops here."""
    engine = current_engine()
    if engine is None:
        _no_model()
    return engine


def require_engine_and_image() -> tuple[Engine, ChosenImage]:
    """The chosen engine and image; without both, why not in the page, and the page stops here."""
    engine, chosen = current_engine(), current_image()
    if engine is None:
        _no_model()
    if chosen is None:
        st.info("Choose an image in the sidebar.")
        st.stop()
    return engine, chosen


def model_caveat(chosen: ChosenImage | None = None) -> str | None:
    """What the chosen model's answers cannot mean, in words for a page that shows predictions
    or class maps: the demo model knows 8 drawn shapes only; random weights know nothing."""
    choice = current_model_choice()
    if choice is None:
        return None
    if choice.source == "demo":
        shapes = ", ".join(CLASSES)
        photo = (" This image is not one of its drawings, so its answer (however confident) means nothing."
                 if chosen is not None and chosen.is_upload else "")
        return (f"The demo model knows {len(CLASSES)} drawn shapes only ({shapes}): any picture gets one of "
                f"them, a photo too, often with high confidence.{photo}")
    if choice.random:
        return ("Random weights: this model has learned nothing. Its maps show the architecture's structure, "
                "not knowledge, and its classes and confidences are chance.")
    return None


def show_error(error: CnnvisError) -> None:
    """A CnnvisError as a readable message in the page."""
    st.error(error_message(error, current_model_choice()), icon="⚠️")


#: how wide sheets are drawn: the main column of the wide layout on a 1400 px window is about 940 px.
#: They are shown at exactly the size they are drawn (``st.image`` would resample a larger picture
#: down, bilinearly), so their labels, drawn with a real font at that size, stay sharp.
SHEET_WIDTH = 900


def sheet_style(width: int = SHEET_WIDTH) -> Style:
    """The :class:`Style` of a sheet shown ``width`` pixels wide."""
    return Style(width=width)


@dataclass(frozen=True)
class Picture:
    """A picture to show and to download: its PNG, and the width to show it at (its own width
    in displayed pixels: the page shows it at exactly that size, never enlarged or resampled)."""

    png: bytes
    width: int


def picture(sheet: np.ndarray, style: Style) -> Picture:
    """A sheet drawn with ``style`` as a :class:`Picture`."""
    return Picture(sheet_png(sheet), style.shown(sheet))


def safe_stem(*parts: str) -> str:
    """A file-name stem from ``parts`` joined by ``_``: letters, digits, ``-``, ``_`` and ``.``
    kept, anything else replaced by ``_``."""
    joined = "_".join(str(part) for part in parts)
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in joined).strip("_")


#: what Streamlit's markdown reads as markup (CommonMark's punctuation, LaTeX's ``$``, the emoji and
#: colour directives' ``:``, HTML's ``<``, ``>`` and ``&``)
_MARKUP = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:&=])")


#: where GFM's autolink literals start (``https://``, ``www.``, an e-mail's ``@``). Streamlit's markdown
#: turns them into links *after* parsing, from the text that escapes leave, so a backslash cannot stop
#: them (tested in a browser): an invisible word joiner (U+2060) after ``:``, ``www`` or ``@`` does.
_AUTOLINK = re.compile(r"(?i)(?<=:)(?=//)|(?<=\bwww)(?=\.)|(?<=@)")
_WORD_JOINER = "\u2060"


def plain(text: object) -> str:
    """``text`` (a file or folder name, a message quoting one) to show as it is in markdown
    (``st.markdown``, ``st.caption``, ``st.error``, labels): every markup character escaped with a
    backslash, line breaks as spaces, and web addresses kept from becoming links (see ``_AUTOLINK``)."""
    flat = re.sub(r"\s*[\r\n]+\s*", " ", str(text))
    return _MARKUP.sub(r"\\\1", _AUTOLINK.sub(_WORD_JOINER, flat))
