"""The files of a results folder: Parquet tables and a JSON manifest, written atomically.

Every write goes to a temporary name in the same folder, is flushed to disk, then renamed over
the final name (``os.replace``, atomic on POSIX and Windows): a crash leaves either the old file
or the new one, never half of one. A process killed mid-write (``kill -9``, a power cut) cannot
remove its temporary file; :func:`sweep_temporaries` does, when the folder is next opened.

Why Parquet (via pyarrow) rather than ``.npz`` + JSON: the tables are columnar, typed and
compressed, carry their schema, and open in any data tool without cnnvis (pandas, polars,
DuckDB, Spark, Arrow in any language); a reader can take one layer's rows or a few columns
without reading the rest; and they hold strings (paths, layer names) beside numbers, which
``.npz`` only does through pickled object arrays.
"""

from __future__ import annotations

import datetime
import functools
import importlib.metadata
import io
import json
import os
import platform
import re
import stat
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

#: the manifest's file name in a results folder
MANIFEST = "manifest.json"
#: the format name and version every manifest carries
FORMAT = "cnnvis-job/1"
#: how long (seconds) a leftover temporary file must have gone unwritten before
#: :func:`sweep_temporaries` removes it: a live write renames its temporary within seconds
STALE_S = 300.0
#: the names of :func:`atomic_write`'s temporary files: ``.NAME.XXXXXXXX.tmp``
_TEMPORARY = re.compile(r"^\..+\.[A-Za-z0-9_]+\.tmp$")


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename.

    The temporary file is hidden (``.name.XXXX.tmp``, beside ``path``), flushed to disk before the
    rename, and removed when anything fails; the folder is synced after the rename, so the new name
    survives a power cut too. A reader sees the old file or the new one, never part of one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    """Flush a folder's entries (a rename) to disk, where the system allows it (not on Windows)."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def is_temporary(name: str) -> bool:
    """Whether ``name`` has the shape of :func:`atomic_write`'s temporary files (``.NAME.XXXX.tmp``)."""
    return _TEMPORARY.match(name) is not None


def older_than(path: Path, seconds: float) -> bool:
    """Whether ``path`` is a plain file last written more than ``seconds`` ago (False when it is gone)."""
    try:
        info = path.lstat()
    except OSError:
        return False
    return stat.S_ISREG(info.st_mode) and time.time() - info.st_mtime > seconds


def remove_quietly(path: Path) -> bool:
    """Remove the file ``path``; False when it cannot be (gone already, a read-only folder)."""
    try:
        path.unlink()
    except OSError:
        return False
    return True


def sweep_temporaries(folder: Path, older_than_s: float = STALE_S) -> list[Path]:
    """Remove the temporary files that :func:`atomic_write` left in ``folder`` (not its sub-folders)
    when its process was killed mid-write; returns those removed.

    Only plain files named like its temporaries (``.NAME.XXXX.tmp``) and unwritten for more than
    ``older_than_s`` seconds go, so a concurrent writer's live temporary is kept. Best effort: a
    missing or read-only folder is left as it is.
    """
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return []
    stale = [p for p in entries if is_temporary(p.name) and older_than(p, older_than_s)]
    return [p for p in stale if remove_quietly(p)]


def table_bytes(table: pa.Table) -> bytes:
    """``table`` as the bytes of a Parquet file (zstd-compressed)."""
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def table_from_bytes(data: bytes) -> pa.Table:
    return pq.read_table(io.BytesIO(data))


def write_table(path: Path, table: pa.Table) -> None:
    atomic_write(path, table_bytes(table))


def read_table(path: Path) -> pa.Table:
    return pq.read_table(path)


def write_json(path: Path, data: dict) -> None:
    atomic_write(path, (json.dumps(data, indent=1, sort_keys=False) + "\n").encode())


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def now() -> str:
    """The time as ISO 8601 in UTC, to the second."""
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()


def versions() -> dict[str, str]:
    """The versions of Python, cnnvis and the libraries a result depends on."""
    out = dict(_installed())
    if "ray" in sys.modules:
        out["ray"] = getattr(sys.modules["ray"], "__version__", "unknown")
    return out


@functools.cache
def _installed() -> tuple[tuple[str, str], ...]:
    out = {"python": platform.python_version()}
    for name in ("cnnvis", "torch", "torchvision", "numpy", "pyarrow", "pillow"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "source tree" if name == "cnnvis" else "not installed"
    return tuple(out.items())
