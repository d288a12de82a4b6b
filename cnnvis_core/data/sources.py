"""Where a data set's files come from: a folder, a list of paths, a ``.zip`` or ``.tar`` archive, or
the demo generator.

A source lists its files once (names, sizes and times only: no pixels) as :class:`Entry` rows and
reads one file's bytes on demand, so a data set of any size is streamed. Archives are read with
the standard library (:mod:`zipfile`, :mod:`tarfile`), from a path or from bytes (a browser
upload); a reader handle is opened lazily in each process and never pickled, so a source can be
shipped to cluster workers. Every source has a stable *fingerprint* (16 hex digits of SHA-256):
of the relative paths, sizes and modification times for a folder or a list, of the file's bytes
for an archive, of ``(n, seed_start, n_objects)`` for the demo generator.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from ..demo import CLASSES, sample
from ..errors import InputError
from ..images import MAX_BYTES

#: the file name endings read as images (those of :func:`cnnvis_core.load_image`'s formats)
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".mpo"})
#: names left out of listings: hidden files, and what macOS adds to archives
_IGNORED_PARTS = ("__MACOSX",)
_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class Entry:
    """One file of a source: ``key`` (its path inside the folder or archive, or its absolute path),
    ``label`` (the ImageFolder class, the sub-folder's name; None in a flat folder), ``size`` in
    bytes and ``mtime`` in nanoseconds (0 where there is none)."""

    key: str
    label: str | None
    size: int
    mtime: int = 0


@dataclass(frozen=True)
class Loaded:
    """What reading an entry gives: the encoded bytes (or, from the demo generator, the image
    itself), and where the source knows them, the class index and the object's mask."""

    data: bytes | Image.Image
    target: int | None = None
    mask: np.ndarray | None = None


def digest(*parts: object) -> str:
    """16 hex digits of SHA-256 over the parts' text, separated by NUL."""
    h = hashlib.sha256()
    for part in parts:
        h.update(str(part).encode("utf-8", "surrogateescape"))
        h.update(b"\0")
    return h.hexdigest()[:16]


def hidden(key: str) -> bool:
    """True for a name with a hidden part (``.DS_Store``, ``.git/``…) or a ``__MACOSX`` folder."""
    return any(part.startswith(".") or part in _IGNORED_PARTS for part in PurePosixPath(key).parts)


def is_image_name(key: str) -> bool:
    return PurePosixPath(key).suffix.lower() in IMAGE_EXTENSIONS


def with_labels(keys: list[tuple[str, int, int]]) -> list[Entry]:
    """Entries of ``(key, size, mtime)`` rows, labelled ImageFolder-style when every image lies one
    folder or more below the common root (the first folder below it is the label); a single
    folder that holds everything (``val/…`` in an archive) is looked through first."""
    parts = [PurePosixPath(key).parts for key, _, _ in keys]
    images = [p for p, (key, _, _) in zip(parts, keys) if is_image_name(key)]
    skip = 0
    while images and all(len(p) > skip + 1 for p in images) and len({p[skip] for p in images}) == 1:
        skip += 1
    labelled = bool(images) and all(len(p) > skip + 1 for p in images)
    return [Entry(key, p[skip] if labelled and len(p) > skip + 1 else None, size, mtime)
            for p, (key, size, mtime) in zip(parts, keys)]


# ---------------------------------------------------------------------------- sources
class Source:
    """What every source offers (see the module docstring)."""

    kind = "source"

    def entries(self) -> list[Entry]:
        raise NotImplementedError

    def read(self, entry: Entry) -> Loaded:
        raise NotImplementedError

    def fingerprint(self) -> str:
        raise NotImplementedError

    def describe(self) -> dict:
        """JSON-ready: what the source is, enough to open it again where it can be."""
        raise NotImplementedError

    def path(self, entry: Entry) -> str:
        """Where a person finds the file: an absolute path, ``archive.zip::member`` or ``demo:seed=N``."""
        return entry.key


class FolderSource(Source):
    """Every file below ``root`` (recursive, hidden ones left out), in sorted order."""

    kind = "folder"

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).resolve()
        self._entries: list[Entry] | None = None

    def entries(self) -> list[Entry]:
        if self._entries is None:
            rows = []
            for folder, dirs, files in os.walk(self.root):
                dirs[:] = sorted(d for d in dirs if not hidden(d))
                for name in sorted(files):
                    full = Path(folder, name)
                    key = full.relative_to(self.root).as_posix()
                    if hidden(key) or not full.is_file():
                        continue
                    stat = full.stat()
                    rows.append((key, stat.st_size, stat.st_mtime_ns))
            rows.sort()
            self._entries = with_labels(rows)
        return self._entries

    def read(self, entry: Entry) -> Loaded:
        return Loaded(_read_file(self.root / entry.key))

    def fingerprint(self) -> str:
        return digest("folder", *(f"{e.key}|{e.size}|{e.mtime}" for e in self.entries()))

    def describe(self) -> dict:
        return {"kind": self.kind, "path": str(self.root)}

    def path(self, entry: Entry) -> str:
        return str(self.root / entry.key)


class ListSource(Source):
    """The files of a list of paths, in the order given (absolute paths are their keys)."""

    kind = "list"

    def __init__(self, paths: list[str | os.PathLike]) -> None:
        self.paths = [str(Path(p).resolve()) for p in paths]
        self._entries: list[Entry] | None = None

    def entries(self) -> list[Entry]:
        if self._entries is None:
            rows = []
            for path in self.paths:
                try:
                    stat = os.stat(path)
                    rows.append(Entry(path, None, stat.st_size, stat.st_mtime_ns))
                except OSError:
                    rows.append(Entry(path, None, -1, 0))  # read() says why
            self._entries = rows
        return self._entries

    def read(self, entry: Entry) -> Loaded:
        return Loaded(_read_file(Path(entry.key)))

    def fingerprint(self) -> str:
        return digest("list", *(f"{e.key}|{e.size}|{e.mtime}" for e in self.entries()))

    def describe(self) -> dict:
        return {"kind": self.kind, "paths": list(self.paths)}


class ArchiveSource(Source):
    """A ``.zip`` or ``.tar`` (optionally gzip/bz2/xz-compressed) archive, from a path or bytes.

    Members are read in the order asked; a compressed tar is only cheap to read front to back,
    which is how jobs read it (shards in order; on a cluster each worker reads ahead to its shard).
    """

    kind = "archive"

    def __init__(self, path: str | os.PathLike | None = None, data: bytes | None = None, name: str = "") -> None:
        self.file = str(Path(path).resolve()) if path is not None else None
        self.data = data
        self.name = name or (Path(self.file).name if self.file else "upload")
        self.format = self._sniff()
        self._entries: list[Entry] | None = None
        self._handle: zipfile.ZipFile | tarfile.TarFile | None = None
        self._members: dict[str, tarfile.TarInfo] = {}
        self._lock = threading.Lock()
        self._fingerprint: str | None = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.update(_handle=None, _members={}, _lock=None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _open_bytes(self) -> io.BufferedIOBase:
        return io.BytesIO(self.data) if self.data is not None else open(self.file, "rb")

    def _sniff(self) -> str:
        with self._open_bytes() as f:
            if zipfile.is_zipfile(f):
                return "zip"
        try:
            with self._open_bytes() as f, tarfile.open(fileobj=f, mode="r:*"):
                return "tar"
        except (tarfile.TarError, OSError, EOFError) as error:
            raise InputError(f"{self.name} is neither a zip nor a tar archive ({error}).") from error

    def _reader(self) -> zipfile.ZipFile | tarfile.TarFile:
        if self._handle is None:
            stream = self._open_bytes()
            if self.format == "zip":
                self._handle = zipfile.ZipFile(stream)
            else:
                self._handle = tarfile.open(fileobj=stream, mode="r:*")  # noqa: SIM115 - kept open, per process
                self._members = {m.name: m for m in self._handle.getmembers() if m.isfile()}
        return self._handle

    def entries(self) -> list[Entry]:
        if self._entries is None:
            with self._lock:
                reader = self._reader()
                if isinstance(reader, zipfile.ZipFile):
                    rows = [(i.filename, i.file_size, 0) for i in reader.infolist() if not i.is_dir()]
                else:
                    rows = [(m.name, m.size, int(m.mtime) * 10**9) for m in self._members.values()]
            self._entries = with_labels(sorted(r for r in rows if not hidden(r[0])))
        return self._entries

    def read(self, entry: Entry) -> Loaded:
        if entry.size > MAX_BYTES:
            raise InputError(f"The file is {entry.size / 2**20:.1f} MB, over the limit of {MAX_BYTES / 2**20:.0f} MB.")
        with self._lock:
            reader = self._reader()
            try:
                if isinstance(reader, zipfile.ZipFile):
                    return Loaded(reader.read(entry.key))
                member = reader.extractfile(self._members[entry.key])
                return Loaded(member.read() if member is not None else b"")
            except (KeyError, OSError, EOFError, zipfile.BadZipFile, tarfile.TarError) as error:
                raise InputError(f"Cannot read {entry.key} from {self.name}: {error}.") from error

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            h = hashlib.sha256()
            with self._open_bytes() as f:
                for chunk in iter(lambda: f.read(_CHUNK), b""):
                    h.update(chunk)
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    def describe(self) -> dict:
        return {"kind": self.kind, "path": self.file, "name": self.name, "format": self.format}

    def path(self, entry: Entry) -> str:
        return f"{self.file or self.name}::{entry.key}"


class DemoSource(Source):
    """``n`` samples of the demo generator from seed ``seed_start`` on: the image, the class of its
    (first) object and that object's mask."""

    kind = "demo"

    def __init__(self, n: int, seed_start: int, n_objects: int = 1) -> None:
        if int(n) < 1:
            raise InputError(f"A demo data set needs at least one sample, got n={n}.")
        self.n, self.seed_start, self.n_objects = int(n), int(seed_start), int(n_objects)

    def entries(self) -> list[Entry]:
        return [Entry(f"seed={self.seed_start + i}.png", None, 0) for i in range(self.n)]

    def read(self, entry: Entry) -> Loaded:
        image, labels, masks = sample(seed_of(entry.key), self.n_objects)
        return Loaded(image, int(labels[0]), masks[0])

    def fingerprint(self) -> str:
        return digest("demo", self.n, self.seed_start, self.n_objects)

    def describe(self) -> dict:
        return {"kind": self.kind, "n": self.n, "seed_start": self.seed_start, "n_objects": self.n_objects}

    def path(self, entry: Entry) -> str:
        return f"demo:{entry.key}"

    @property
    def classes(self) -> list[str]:
        return list(CLASSES)


def seed_of(key: str) -> int:
    """The seed of a demo entry's key (``seed=123.png`` → 123)."""
    return int(key.removeprefix("demo:").removeprefix("seed=").removesuffix(".png"))


def _read_file(path: Path) -> bytes:
    try:
        size = path.stat().st_size
    except OSError as error:
        raise InputError(f"Cannot read '{path}': {error.strerror or error}.") from error
    if size > MAX_BYTES:
        raise InputError(f"The file is {size / 2**20:.1f} MB, over the limit of {MAX_BYTES / 2**20:.0f} MB.")
    try:
        return path.read_bytes()
    except OSError as error:
        raise InputError(f"Cannot read '{path}': {error.strerror or error}.") from error


def open_source(source: object) -> Source:
    """The source of ``source``: a folder, an archive path, archive bytes, a binary file object
    (an upload; read into memory, as the browser's upload already is), or a list of paths."""
    if isinstance(source, Source):
        return source
    if isinstance(source, (bytes, bytearray, memoryview)):
        return ArchiveSource(data=bytes(source))
    if hasattr(source, "read"):
        name = os.path.basename(str(getattr(source, "name", "") or "")) or "upload"
        real = getattr(source, "name", None)
        if isinstance(real, str) and os.path.isfile(real):
            return ArchiveSource(real)
        if getattr(source, "seekable", lambda: False)():
            source.seek(0)
        data = source.read()
        if not isinstance(data, (bytes, bytearray)):
            raise InputError("The archive must be opened in binary mode ('rb').")
        return ArchiveSource(data=bytes(data), name=name)
    if isinstance(source, (list, tuple)):
        if not source:
            raise InputError("The list of image paths is empty.")
        return ListSource(list(source))
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            return FolderSource(path)
        if path.is_file():
            return ArchiveSource(path)
        raise InputError(f"No such folder or archive: '{path}'.")
    raise InputError(f"Cannot read a data set from a {type(source).__name__}; give a folder, an archive "
                     "(path, bytes or file object) or a list of image paths.")
