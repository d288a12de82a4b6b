"""The files of a results folder: Parquet tables and a JSON manifest, written atomically.

Every write goes to a temporary name in the same folder, is flushed to disk, then renamed over
the final name (``os.replace``, atomic on POSIX and Windows): a crash leaves either the old file
or the new one, never half of one.

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
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

#: the manifest's file name in a results folder
MANIFEST = "manifest.json"
#: the format name and version every manifest carries
FORMAT = "cnnvis-job/1"


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
