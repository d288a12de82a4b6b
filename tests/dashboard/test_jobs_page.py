"""Issue 14 in the dashboard: the sidebar's data set, the Jobs page (background jobs with progress,
cancel, resume, de-duplication, the finished results) and the Dead channels page reading a finished
statistics job. Every test writes into its own results folder (``CNNVIS_RESULTS``)."""

from __future__ import annotations

import io
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from cnnvis_core import Engine, InputError, jobs
from cnnvis_core.data import Dataset
from cnnvis_core.demo import sample
from dashboard import datasets
from dashboard import jobs as glue
from dashboard.dead import dead_rows
from dashboard.state import ChosenData, plain
from dashboard.workers import CANCELLED, DONE, DatasetJob, JobPool
from tests.dashboard.apptest import open_app

JOBS, DEAD = "pages/jobs.py", "pages/dead.py"
WAIT_S = 180


@pytest.fixture(autouse=True)
def results(tmp_path, monkeypatch) -> Path:
    """A results folder of this test's own; every job of the server's pool ended at the end."""
    root = tmp_path / "results"
    monkeypatch.setenv("CNNVIS_RESULTS", str(root))
    yield root
    for job in glue.pool().jobs():
        job.cancel()
        job.wait(60)


def _ok(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    return at


def _forwards(at: AppTest) -> int:
    return at.session_state["_engine"].counters.snapshot()[0]


def _png(seed: int) -> bytes:
    buffer = io.BytesIO()
    sample(seed)[0].save(buffer, "PNG")
    return buffer.getvalue()


def _zip(names: list[str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for n, name in enumerate(names):
            archive.writestr(name, _png(100 + n) if name.endswith(".png") else b"notes")
    return buffer.getvalue()


def _texts(elements) -> list[str]:
    return [getattr(e, "value", None) or getattr(e, "label", "") for e in elements]


# ---------------------------------------------------------------------------- the Jobs page
def test_a_stats_job_runs_in_the_background_shows_progress_and_is_listed_when_done(results):
    at = open_app()
    at.switch_page(JOBS)
    _ok(at)
    at.number_input(key="data_demo_count").set_value(24)
    _ok(at)
    assert any("24 demo samples · 24 images" in c for c in _texts(at.sidebar.caption))
    assert at.radio(key="job_kind").value == "channel_stats"
    assert not [e for e in at.main.expander], "no result yet"

    at.button(key="job_start").click()
    _ok(at)
    # the click's run ends at once, with the job queued or under way (it runs in a worker thread)
    [bar] = at.get("progress")
    assert bar.proto.text.startswith(("Waiting", "Starting", "0 of", "24 of")), bar.proto.text
    assert any((b.key or "").startswith("job_cancel_") for b in at.button)
    job = glue.pool().jobs()[0]                    # the server's pool, as the page sees it
    assert job.request.kind == "channel_stats" and job.folder.parent == results

    deadline = time.monotonic() + WAIT_S
    while not at.success and time.monotonic() < deadline:
        time.sleep(0.3)
        _ok(at)                                     # what the fragment's timer does
    assert [s.value for s in at.success] and "Done" in at.success[0].value
    assert job.status == DONE and job.started is not None and job.progress().done == 24
    [folder] = [p.parent for p in results.glob("channel_stats-*/manifest.json")]
    assert not (folder / "shards").exists(), "the checkpoints go once the result is saved"

    titles = [e.label for e in at.main.expander]
    assert len(titles) == 1 and "Channel statistics · 24 demo samples · 24 images" in titles[0].replace("\\", "")
    assert any(plain(folder) in c for c in _texts(at.caption))
    [table] = at.dataframe
    stats = jobs.load(folder)
    assert list(table.value["layer"]) == stats.layers
    assert list(table.value["dead (ε = 0)"]) == [len(layer.dead) for layer in stats.dead(0.0).layers]
    assert [b.label for b in at.get("download_button")] == ["Folder (ZIP)"]

    forwards = _forwards(at)                        # the same job again: loaded, not run
    at.button(key="job_start").click()
    _ok(at)
    glue.pool().jobs()[0].wait(WAIT_S)
    _ok(at)
    assert any("had run already" in s.value for s in at.success), _texts(at.success)
    assert _forwards(at) == forwards
    assert len(at.main.expander) == 1


def test_the_cancel_button_stops_a_running_job_and_leaves_no_result(results):
    at = open_app()
    at.switch_page(JOBS)
    _ok(at)
    at.number_input(key="data_demo_count").set_value(2000)
    at.multiselect(key="job_layers").set_value(["features.relu1"])
    _ok(at)
    at.button(key="job_start").click()
    _ok(at)
    job = glue.pool().jobs()[0]
    deadline = time.monotonic() + WAIT_S
    while (job.progress() is None or job.progress().done < 32) and time.monotonic() < deadline:
        time.sleep(0.2)
    _ok(at)
    assert any(" of 2,000 images · " in (p.proto.text or "") for p in at.get("progress")), \
        [p.proto.text for p in at.get("progress")]
    [cancel] = [b for b in at.button if (b.key or "").startswith("job_cancel_")]
    cancel.click()
    _ok(at)
    assert job.wait(WAIT_S) and job.status == CANCELLED, job.status
    _ok(at)
    assert any("Cancelled after" in i.value for i in at.info), _texts(at.info)
    assert job.progress().done < 2000
    assert not list(results.glob("*/manifest.json")) and not at.main.expander


def test_the_zip_of_a_result_holds_its_manifest_and_table(results, demo_engine):
    folder = results / "stats"
    jobs.channel_stats(demo_engine, Dataset.demo(8), layers=["features.relu1"], out=folder)
    with zipfile.ZipFile(io.BytesIO(glue.folder_zip(folder))) as archive:
        names = sorted(archive.namelist())
    assert len(names) == 2 and names[0] == "stats/manifest.json"
    assert names[1].startswith("stats/stats.") and names[1].endswith(".parquet")


def test_a_cancelled_job_leaves_no_result_and_resumes_from_its_shards(results, monkeypatch):
    """Glue level: the job is cancelled once two of its six shards are written (deterministic: from
    its own progress report); no result, the two shards stay; the same job started again runs the
    four other shards only and gives the result of an uninterrupted run."""
    engine = Engine.demo(device="cpu")
    data = ChosenData(Dataset.demo(48), "48 demo samples")
    request = glue.make_request(engine, "demo", data, "channel_stats", layers=["features.relu2", "features.relu7"],
                                batch_size=8, shard_size=8)
    folder = glue.folder_of(request)
    report = DatasetJob._report

    def cancel_after_two_shards(self, progress):
        report(self, progress)
        if progress.shards >= 2:
            self.cancel()
    monkeypatch.setattr(DatasetJob, "_report", cancel_after_two_shards)
    pool = JobPool(workers=1)
    job, attached = pool.start(request, engine, data.dataset, folder)
    assert not attached and job.wait(WAIT_S)
    assert job.status == CANCELLED, job.error
    assert not (folder / "manifest.json").exists() and glue.finished_results(engine) == []
    assert sorted(p.name for p in (folder / "shards").glob("*.parquet")) == ["000000.parquet", "000001.parquet"]
    assert "Cancelled after 16 of 48 images" in glue.status_line(job)

    monkeypatch.setattr(DatasetJob, "_report", report)
    before = engine.counters.snapshot()[0]
    again, attached = pool.start(request, engine, data.dataset, folder)
    assert again is not job and not attached and again.wait(WAIT_S)
    assert again.status == DONE, again.error
    assert engine.counters.snapshot()[0] - before == 4, "only the four shards still to do may run"
    [item] = glue.finished_results(engine)
    assert item.folder == folder
    whole = jobs.channel_stats(engine, Dataset.demo(48), layers=["features.relu2", "features.relu7"], batch_size=8,
                               shard_size=8)
    resumed = jobs.load(folder)
    for layer in whole.layers:
        np.testing.assert_array_equal(resumed.peak[layer], whole.peak[layer])
        np.testing.assert_array_equal(resumed.mean[layer], whole.mean[layer])


def test_starting_the_same_job_while_it_runs_attaches_to_it(results):
    engine = Engine.demo(device="cpu")
    data = ChosenData(Dataset.demo(400), "400 demo samples")
    pool = JobPool(workers=1)

    def start(layers: list[str]) -> tuple[DatasetJob, bool]:
        request = glue.make_request(engine, "demo", data, "channel_stats", layers=layers, batch_size=4)
        return pool.start(request, engine, data.dataset, glue.folder_of(request))
    first, attached = start(["features.relu1"])
    second, again = start(["features.relu1"])
    other, different = start(["features.relu2"])        # other settings: another job, queued behind
    try:
        assert not attached and again and second is first
        assert not different and other is not first and other.status == "queued"
        assert [j.request.settings for j in pool.jobs()] == [other.request.settings, first.request.settings]
    finally:
        for job in (other, first):                      # the queued one first: it must never start
            job.cancel()
        assert other.wait(WAIT_S) and first.wait(WAIT_S)
    assert other.status == CANCELLED and other.started is None, "a queued job cancelled never starts"


def test_requests_name_a_job_by_what_decides_it_and_a_cam_job_runs_in_a_worker(results, demo_engine):
    data = ChosenData(Dataset.demo(2), "2 demo samples")

    def folder(**settings) -> Path:
        return glue.folder_of(glue.make_request(demo_engine, "demo", data, **settings))
    assert folder(kind="channel_stats") == folder(kind="channel_stats", layers=glue.layer_options(demo_engine))
    assert folder(kind="channel_stats") != folder(kind="channel_stats", layers=["features.relu1"])
    assert folder(kind="cam_quality", methods=["layercam", "gradcam"]) == \
        folder(kind="cam_quality", methods=["gradcam", "layercam"])
    assert folder(kind="dataset_examples", k=3) != folder(kind="dataset_examples", k=4)
    other = ChosenData(Dataset.demo(3), "3 demo samples")
    assert glue.folder_of(glue.make_request(demo_engine, "demo", other, "channel_stats")) != \
        folder(kind="channel_stats")
    with pytest.raises(InputError, match="at least one"):
        folder(kind="cam_quality", methods=[])
    with pytest.raises(InputError, match="gradcam"):
        folder(kind="cam_quality", methods=["no_such_cam"])

    request = glue.make_request(demo_engine, "demo", data, "cam_quality", methods=["gradcam"], steps=2)
    job, _ = JobPool(workers=1).start(request, demo_engine, data.dataset, glue.folder_of(request))
    assert job.wait(WAIT_S) and job.status == DONE, job.error
    [item] = glue.finished_results(demo_engine, "cam_quality")
    assert [row["method"] for row in glue.quality_rows(item.manifest)] == ["Grad-CAM"]
    assert glue.settings_text(request) == "Grad-CAM · 2 steps"


def test_every_job_kind_gives_a_summary_on_the_page(results, demo_engine):
    """Results made by the library (as the command line would, into the same folder) are listed
    for the model with their summaries: CAM quality's means with intervals, the examples' extent."""
    ds = Dataset.demo(4)
    jobs.cam_quality(demo_engine, ds, methods=("gradcam",), steps=2, out=results / "cq")
    jobs.dataset_examples(demo_engine, ds, layers=["features.relu1"], k=2, out=results / "ex")
    at = open_app()
    at.switch_page(JOBS)
    _ok(at)
    assert len(at.main.expander) == 2
    [table] = at.dataframe
    row = table.value.iloc[0]
    assert row["method"] == "Grad-CAM" and row["images"] == 4
    assert row["deletion AUC (lower is better)"].count("[") == 1 and row["pointing game"].endswith("%]")
    assert any("k = 2 images for each of 16 channels in 1 layers" in m.replace("\\", "")
               for m in _texts(at.markdown))


# ---------------------------------------------------------------------------- the sidebar's data set
def test_a_bad_folder_an_empty_one_and_a_bad_archive_say_so_without_a_traceback(tmp_path):
    at = open_app()
    at.switch_page(JOBS)
    _ok(at)
    at.radio(key="data_source").set_value("path")
    at.run()
    assert not at.exception
    assert at.button(key="job_start").disabled
    assert any("Type the path" in i.value for i in at.info)

    at.text_input(key="data_path").set_value(str(tmp_path / "no_such_folder"))
    at.run()
    assert not at.exception and at.button(key="job_start").disabled
    [message] = {e.value for e in at.error}
    assert "No such folder or archive" in message and plain(tmp_path / "no_such_folder") in message

    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no image here")
    at.text_input(key="data_path").set_value(str(tmp_path / "empty"))
    at.run()
    assert not at.exception
    assert any("No image files found" in e.value for e in at.error), _texts(at.error)

    at.radio(key="data_source").set_value("upload")
    at.run()
    at.file_uploader(key="data_upload").set_value(("broken.zip", b"not an archive at all", "application/zip"))
    at.run()
    assert not at.exception and at.button(key="job_start").disabled
    assert any("neither a zip nor a tar" in e.value for e in at.error), _texts(at.error)


def test_a_folder_with_an_odd_name_is_used_and_shown_as_it_is(tmp_path):
    folder = tmp_path / "my_*val* [v2]"
    for label in ("circle", "star"):
        (folder / label).mkdir(parents=True)
        for n in range(2):
            (folder / label / f"{n}.png").write_bytes(_png(n + (10 if label == "star" else 0)))
    at = open_app()
    at.radio(key="data_source").set_value("path")
    at.run()
    at.text_input(key="data_path").set_value(str(folder))
    _ok(at)
    [caption] = [c for c in _texts(at.sidebar.caption) if c.startswith("Data set:")]
    assert caption == f"Data set: {plain('folder ' + str(folder))} · 4 images · 2 classes"
    assert "\\*val\\* \\[v2\\]" in caption, "markdown in the name must be escaped"


def test_an_uploaded_archive_is_kept_on_the_server_by_its_content(results):
    data = _zip(["cats/a.png", "cats/b.png", "dogs/c.png", "README.txt"])
    at = open_app()
    at.radio(key="data_source").set_value("upload")
    at.run()
    at.file_uploader(key="data_upload").set_value(("val set.zip", data, "application/zip"))
    _ok(at)
    [caption] = [c for c in _texts(at.sidebar.caption) if c.startswith("Data set:")]
    assert "archive val set\\.zip · 3 images · 2 classes · 1 other files left out" in caption, caption
    [kept] = list((results / "uploads").glob("*/*"))
    assert kept.read_bytes() == data and kept.name == "val_set.zip"
    assert kept.parent.name == datasets.digest(data)
    assert datasets.store(data, "another name.zip") == kept, "the same bytes are kept once"
    assert not [p for p in (results / "uploads").rglob(".*")], "no temporary file left"
    assert at.session_state["_data"].dataset.root_fingerprint == Dataset.from_path(data).root_fingerprint


def test_plain_escapes_markdown():
    assert plain("a_b*c* [x](y) $5 :red[z] <b>\nnext") == \
        "a\\_b\\*c\\* \\[x\\]\\(y\\) \\$5 \\:red\\[z\\] \\<b\\> next"


# ---------------------------------------------------------------------------- the Dead channels page
def test_the_dead_page_reads_a_finished_stats_job_without_running_the_model(results, demo_engine):
    stats = jobs.channel_stats(demo_engine, Dataset.demo(16), out=results / "stats16")
    peaks = np.concatenate([stats.peak[name] for name in stats.layers])
    eps = float(np.quantile(peaks, 0.2))                         # a fifth of the channels are dead
    expected = stats.dead(eps)
    assert 0 < expected.total < peaks.size

    at = open_app()
    forwards = _forwards(at)
    at.session_state["dead_source"] = "job"
    at.session_state["dead_eps"] = eps
    at.switch_page(DEAD)
    _ok(at)
    assert at.selectbox(key="dead_job").value == str(results / "stats16")
    metrics = {m.label: m.value for m in at.metric}
    assert int(metrics["Dead channels"]) == expected.total
    [table] = at.dataframe
    rows = dead_rows(expected)
    assert list(table.value["layer"]) == [r["layer"] for r in rows]
    assert list(table.value["dead channels"]) == [r["dead channels"] for r in rows]
    assert not at.toggle(key="dead_job_check").value
    assert _forwards(at) == forwards, "reading a finished job must run no model pass"

    at.toggle(key="dead_job_check").set_value(True)             # the masked check on its images: runs
    _ok(at)
    assert "Largest logit change" in {m.label for m in at.metric}
    assert _forwards(at) - forwards == 2, "one plain and one masked forward of the job's 16 images"


def test_the_dead_page_without_a_finished_stats_job_says_where_to_start_one(results):
    at = open_app()
    at.session_state["dead_source"] = "job"
    at.switch_page(DEAD)
    _ok(at)
    assert any("No finished statistics job" in i.value for i in at.info), _texts(at.info)


def test_a_job_runs_on_a_twin_of_the_engine_and_lets_it_go_when_it_ends(results, demo_engine):
    """The twin (its own lock and caches) is the job's while it is queued or runs; the pool remembers
    ended jobs, not their twins (a CAM job's twin holds a folded copy of the weights)."""
    import gc
    import weakref

    data = ChosenData(Dataset.demo(2), "2 demo samples")
    request = glue.make_request(demo_engine, "demo", data, "cam_quality", methods=["gradcam"], steps=2)
    pool = JobPool(workers=1)
    with demo_engine.session():  # the engine's lock held by a page: the job still runs
        job, _ = pool.start(request, demo_engine, data.dataset, glue.folder_of(request))
        twin = weakref.ref(job.engine)
        assert job.engine is not demo_engine and job.engine.model is not demo_engine.model
        assert job.wait(WAIT_S) and job.status == DONE, job.error
    assert job.engine is None and job in pool.jobs()
    gc.collect()
    assert twin() is None, "nothing keeps the ended job's twin"
