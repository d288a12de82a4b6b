"""Glue of the sidebar's *Data set* choice (``app.py``): the demo generator's samples, a folder or
archive on the server, or an uploaded archive, opened as a :class:`~cnnvis_core.data.Dataset`.
No widgets here.

An uploaded archive is kept on the server, under the results folder
(``uploads/<content hash>/<file name>``, written through a temporary name and a rename), so that a
job streams it from a file (as it streams a folder) and its results can open it again for crops;
the same bytes uploaded again, under any name, reuse the stored file. Listing a folder reads
names, sizes and times only; the listing is kept :data:`LIST_SECONDS` (a folder's fingerprint, which
names it in results, follows its files' changes after that).
"""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path

import streamlit as st

from cnnvis_core import CnnvisError, InputError
from cnnvis_core.data import Dataset
from cnnvis_core.jobs.files import atomic_write, sweep_temporaries

from .memo import cached
from .results import results_root
from .state import ChosenData, Problem, digest, plain, safe_stem

#: the sidebar's sources, as it names them
SOURCES = {"demo": "Demo generator", "path": "Folder or archive on the server", "upload": "Uploaded archive"}
#: the upload's accepted endings (``.tar.gz`` ends with ``gz``)
ARCHIVE_TYPES = ["zip", "tar", "tgz", "gz", "bz2", "xz"]
DEFAULT_DEMO_SAMPLES = 200
MAX_DEMO_SAMPLES = 100_000
#: where uploaded archives are kept, under the results folder
UPLOADS = "uploads"
#: how long a listing of a folder or archive is reused
LIST_SECONDS = 60


@cached()
def demo_data(count: int) -> ChosenData:
    """``count`` samples of the demo generator (seeds never used in training), with their masks
    (cached: the sidebar asks for them on every run of every page)."""
    try:
        dataset = Dataset.demo(int(count))
    except CnnvisError as error:
        return _problem(f"demo:{count}", str(error))
    return ChosenData(dataset, f"{len(dataset):,} demo samples")


def path_data(text: str) -> ChosenData:
    """The folder (recursive; an ImageFolder tree gets labels) or archive at ``text`` on the server."""
    text = (text or "").strip().strip("'\"")
    if not text:
        return ChosenData(None, "no folder", Problem("info", "Type the path of a folder or an archive on the server "
                                                             "in the sidebar (*Data set*)."))
    path = Path(text).expanduser()
    try:
        return ChosenData(opened(str(path.resolve())), f"{'folder' if path.is_dir() else 'archive'} {path}")
    except CnnvisError as error:
        return _problem(text, str(error))


def upload_data(file_id: str, name: str, data: bytes) -> ChosenData:
    """An uploaded ``.zip``/``.tar`` archive, kept on the server (see the module docstring)."""
    try:
        stored = stored_archive(file_id, name, data)
        return ChosenData(opened(str(stored)), f"archive {name}")
    except CnnvisError as error:
        return _problem(name, str(error))


def _problem(what: str, message: str) -> ChosenData:
    return ChosenData(None, what, Problem("error", f"Data set: {plain(message)}"))


@st.cache_resource(max_entries=16, ttl=LIST_SECONDS, show_spinner="Listing the data set…")
def opened(path: str) -> Dataset:
    """The data set at ``path`` (listed once per :data:`LIST_SECONDS`); :class:`InputError` when it
    is missing, holds no image, or is an archive that cannot be read."""
    try:
        return Dataset.from_path(path)
    except CnnvisError:
        raise
    except (OSError, EOFError, zipfile.BadZipFile, tarfile.TarError) as error:
        raise InputError(f"Cannot read {Path(path).name}: {error}.") from error


@st.cache_resource(max_entries=8, show_spinner="Keeping the archive on the server…")
def stored_archive(file_id: str, name: str, _data: bytes) -> Path:
    """Where the uploaded archive ``file_id`` is kept (written on its first use)."""
    return store(_data, name)


def store(data: bytes, name: str, root: Path | None = None) -> Path:
    """Keep ``data`` as ``<root>/uploads/<content hash>/<name>`` (default root: the results folder),
    unless the same bytes are kept there already (under any name); the path either way."""
    if not data:
        raise InputError(f"{name} is empty.")
    folder = (root or results_root()) / UPLOADS / digest(data)
    sweep_temporaries(folder)
    kept = sorted(p for p in folder.glob("*") if p.is_file() and not p.name.startswith("."))
    if kept:
        return kept[0]
    target = folder / (safe_stem(Path(name).name).lstrip(".") or "upload")
    atomic_write(target, data)
    return target


def summary(data: ChosenData) -> str:
    """One line for the sidebar: what the data set is and how many images it has (markdown-safe)."""
    dataset = data.dataset
    if dataset is None:
        return plain(data.name)
    others = f" · {len(dataset.ignored):,} other files left out" if dataset.ignored else ""
    labels = f" · {len(dataset.classes)} classes" if dataset.classes else ""
    return f"{plain(data.name)} · {len(dataset):,} images{labels}{others}"
