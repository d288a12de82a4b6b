"""Restart safety (issue 16, item 5): a write that is interrupted leaves the old file whole and no
half-written file where a reader (``jobs.find``, ``jobs.load``, a resumed job) would see it."""

from __future__ import annotations

import errno
import json
import os

import pytest

from cnnvis_core import jobs
from cnnvis_core.data import Dataset
from cnnvis_core.jobs import files

LAYERS = ["features.relu1"]


class _DiskFull:
    """A file object that writes half of what it is given, then fails (a full disk, a crash)."""

    def __init__(self, real) -> None:
        self.real = real

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.real.close()

    def write(self, data: bytes) -> int:
        self.real.write(data[: len(data) // 2])
        self.real.flush()
        raise OSError(errno.ENOSPC, "No space left on device (test)")


@pytest.fixture()
def failing_writes(monkeypatch):
    """From here on, every write through ``files.atomic_write`` fails half-way."""
    real_fdopen = os.fdopen
    monkeypatch.setattr(files.os, "fdopen", lambda *a, **kw: _DiskFull(real_fdopen(*a, **kw)))


def _visible(folder) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file())


def test_an_interrupted_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, failing_writes):
    target = tmp_path / "manifest.json"
    target.write_text('{"old": true}')
    with pytest.raises(OSError, match="No space left"):
        files.write_json(target, {"new": True, "padding": "x" * 10_000})
    assert json.loads(target.read_text()) == {"old": True}
    assert _visible(tmp_path) == ["manifest.json"]


def test_a_failed_rename_leaves_no_temporary(tmp_path, monkeypatch):
    def refuse(*args):
        raise OSError(errno.EACCES, "rename refused (test)")

    monkeypatch.setattr(files.os, "replace", refuse)
    with pytest.raises(OSError, match="rename refused"):
        files.atomic_write(tmp_path / "a.parquet", b"data")
    assert _visible(tmp_path) == []


def test_a_write_goes_to_a_hidden_temporary_then_is_renamed(tmp_path, monkeypatch):
    seen = []
    real = os.replace
    monkeypatch.setattr(files.os, "replace", lambda a, b: (seen.append((os.path.basename(a), os.path.basename(b))),
                                                          real(a, b)))
    files.atomic_write(tmp_path / "sub" / "stats.parquet", b"data")
    [(temporary, final)] = seen
    assert final == "stats.parquet" and temporary.startswith(".stats.parquet.") and temporary.endswith(".tmp")
    assert (tmp_path / "sub" / "stats.parquet").read_bytes() == b"data"


def test_an_interrupted_result_save_keeps_the_old_result_for_find_and_load(tmp_path, demo_engine, monkeypatch):
    folder = tmp_path / "results" / "stats"
    old = jobs.channel_stats(demo_engine, Dataset.demo(4), LAYERS, out=folder)
    [(found, manifest)] = jobs.find(tmp_path / "results")
    before = _visible(folder)

    real_fdopen = os.fdopen
    monkeypatch.setattr(files.os, "fdopen", lambda *a, **kw: _DiskFull(real_fdopen(*a, **kw)))
    with pytest.raises(OSError, match="No space left"):
        old.save(folder)  # the same result again: the first file written fails half-way
    with pytest.raises(OSError, match="No space left"):
        old.save(tmp_path / "results" / "new")  # a first save: nothing of it may show
    monkeypatch.undo()

    assert jobs.find(tmp_path / "results") == [(found, manifest)]
    assert _visible(folder) == before and not list((tmp_path / "results").rglob("*.tmp"))
    again = jobs.load(folder)
    assert again.images == old.images == 4
    assert (again.peak[LAYERS[0]] == old.peak[LAYERS[0]]).all()
