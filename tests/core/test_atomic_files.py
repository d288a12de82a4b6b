"""Restart safety (issue 16, item 5): a write that is interrupted leaves the old file whole and no
half-written file where a reader (``jobs.find``, ``jobs.load``, a resumed job) would see it; a result
save that dies between its table and its manifest leaves the old result whole; the temporaries of a
killed write are swept when their folder is opened again."""

from __future__ import annotations

import errno
import json
import os
import time

import pytest

from cnnvis_core import jobs
from cnnvis_core.data import Dataset
from cnnvis_core.jobs import files
from cnnvis_core.jobs.runner import ShardStore

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


# ---------------------------------------------------------------------------- a save that dies half-way
def _tables(folder) -> list[str]:
    return sorted(p.name for p in folder.glob("*.parquet"))


def _age(path, seconds: float) -> None:
    """Make ``path`` look last written ``seconds`` ago."""
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_a_result_save_that_dies_before_its_manifest_keeps_the_old_result(tmp_path, demo_engine, monkeypatch):
    """The table of the new save is renamed into place, then the process dies before the manifest's
    rename: the folder still reads as the old result, whole (never the old manifest with the new table)."""
    folder = tmp_path / "stats"
    old = jobs.channel_stats(demo_engine, Dataset.demo(4), LAYERS, out=folder)
    new = jobs.channel_stats(demo_engine, Dataset.demo(6), LAYERS)
    manifest = json.loads((folder / files.MANIFEST).read_text())
    real = os.replace

    def die_at_the_manifest(source, target):
        if os.path.basename(target) == files.MANIFEST:
            raise KeyboardInterrupt("killed between the two renames (test)")
        real(source, target)

    monkeypatch.setattr(files.os, "replace", die_at_the_manifest)
    with pytest.raises(KeyboardInterrupt):
        new.save(folder)
    monkeypatch.undo()

    assert json.loads((folder / files.MANIFEST).read_text()) == manifest
    again = jobs.load(folder)
    assert again.images == old.images == 4 and again.fingerprint == old.fingerprint
    assert (again.peak[LAYERS[0]] == old.peak[LAYERS[0]]).all()
    assert len(_tables(folder)) == 2  # the new table is there, but no manifest names it
    # the next save commits; it removes the table it replaces, and the dead save's once stale
    for name in _tables(folder):
        if name != manifest["files"]["table"]:
            _age(folder / name, files.STALE_S + 60)
    new.save(folder)
    assert _tables(folder) == [json.loads((folder / files.MANIFEST).read_text())["files"]["table"]]
    assert jobs.load(folder).images == new.images == 6


def test_a_result_saved_before_save_ids_loads_and_is_replaced_whole(tmp_path, demo_engine):
    """Folders of the earlier format (``stats.parquet``, named by the manifest) still load; a new save
    there removes the old table once its manifest is committed."""
    folder = tmp_path / "stats"
    old = jobs.channel_stats(demo_engine, Dataset.demo(4), LAYERS, out=folder)
    manifest = json.loads((folder / files.MANIFEST).read_text())
    (folder / manifest["files"]["table"]).rename(folder / "stats.parquet")
    manifest["files"]["table"] = "stats.parquet"
    (folder / files.MANIFEST).write_text(json.dumps(manifest))
    assert jobs.load(folder).images == 4
    old.save(folder)
    assert _tables(folder) != ["stats.parquet"] and len(_tables(folder)) == 1
    assert jobs.load(folder).images == 4


def test_a_result_whose_table_is_missing_says_so(tmp_path, demo_engine):
    folder = tmp_path / "stats"
    jobs.channel_stats(demo_engine, Dataset.demo(4), LAYERS, out=folder)
    [table] = folder.glob("*.parquet")
    table.unlink()
    with pytest.raises(jobs.JobError, match=r"half-written result.*Run the job again") as caught:
        jobs.load(folder)
    assert str(folder) in str(caught.value)


# ---------------------------------------------------------------------------- temporaries of killed writes
def _leftovers(folder):
    """A stale and a fresh temporary of the atomic writer, and files that are not its temporaries."""
    stale, fresh = folder / ".x.parquet.ab12.tmp", folder / ".y.parquet.cd34.tmp"
    others = [folder / "notes.tmp", folder / ".hidden", folder / ".z.parquet.ef56.tmp.keep"]
    for path in (stale, fresh, *others):
        path.write_bytes(b"half of a file")
    (folder / ".dir.parquet.gh78.tmp").mkdir()
    for path in (stale, *others, folder / ".dir.parquet.gh78.tmp"):
        _age(path, files.STALE_S + 60)
    return stale, fresh, others


def test_sweep_removes_only_stale_temporaries_of_the_atomic_writer(tmp_path):
    stale, fresh, others = _leftovers(tmp_path)
    assert files.sweep_temporaries(tmp_path) == [stale]
    assert not stale.exists() and fresh.exists() and all(p.exists() for p in others)
    assert (tmp_path / ".dir.parquet.gh78.tmp").is_dir()
    assert files.sweep_temporaries(tmp_path, older_than_s=0) == [fresh]
    assert files.sweep_temporaries(tmp_path / "missing") == []


def test_opening_a_results_folder_sweeps_stale_temporaries(tmp_path, demo_engine):
    folder = tmp_path / "stats"
    jobs.channel_stats(demo_engine, Dataset.demo(4), LAYERS, out=folder)
    stale, fresh, _others = _leftovers(folder)
    assert jobs.load(folder).images == 4
    assert not stale.exists() and fresh.exists()
    # the same job again with the same folder (the resume path): found finished, swept too
    _age(fresh, files.STALE_S + 60)
    assert jobs.channel_stats(demo_engine, Dataset.demo(4), LAYERS, out=folder).images == 4
    assert not fresh.exists()


def test_resuming_a_job_sweeps_its_shard_folder(tmp_path):
    shards = tmp_path / "run" / "shards"
    shards.mkdir(parents=True)
    stale, fresh = shards / ".000003.parquet.k9x2.tmp", shards / ".000004.parquet.p0q1.tmp"
    stale.write_bytes(b"half a shard")
    fresh.write_bytes(b"a shard being written")
    _age(stale, files.STALE_S + 60)
    ShardStore(tmp_path / "run", {"kind": "test"})
    assert not stale.exists() and fresh.exists()
