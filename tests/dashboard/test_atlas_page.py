"""Issue 15 in the dashboard: the Atlas page over a small stored dataset-examples result of the demo
model — the grid, the search box, the unit page opened by query parameters (k crops with the
channel's map, the histogram, kernel slices, the logit view), and a second visit that runs no model
pass."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from cnnvis_core import Engine, jobs
from cnnvis_core.data import Dataset
from dashboard import atlas as glue
from tests.dashboard.apptest import APP, open_app
from tests.dashboard.pages_13 import ok as _ok

ATLAS = "pages/atlas.py"
LAYERS = ["features.conv3", "features.relu7"]
K = 6


@pytest.fixture(scope="module")
def stored(tmp_path_factory) -> Path:
    """A results folder holding one dataset-examples result of the demo model over 48 samples."""
    root = tmp_path_factory.mktemp("results")
    jobs.dataset_examples(Engine.demo(device="cpu"), Dataset.demo(48), LAYERS, k=K, batch_size=16,
                          out=root / "examples")
    return root


@pytest.fixture(autouse=True)
def results_env(stored, monkeypatch) -> Path:
    monkeypatch.setenv("CNNVIS_RESULTS", str(stored))
    return stored


def _captions(at: AppTest) -> list[str]:
    return [img.caption for image in at.get("image") for img in image.proto.imgs]


def _forwards(at: AppTest) -> int:
    return at.session_state["_engine"].counters.snapshot()[0]


def _subheaders(at: AppTest) -> list[str]:
    return [s.value for s in at.subheader]


def test_the_grid_shows_the_channels_and_the_search_jumps_to_one():
    at = open_app()
    at.switch_page(ATLAS)
    _ok(at)
    assert at.selectbox(key="atlas_layer").value == "features.relu7"
    cells = [c for c in _captions(at) if c.startswith("channel ")]
    assert len(cells) == glue.PER_PAGE and cells[0].startswith("channel 0 ·")
    at.radio(key="atlas_order").set_value("peak")
    _ok(at)
    peaks = [float(c.split("peak ")[1].split(" ")[0]) for c in _captions(at) if c.startswith("channel ")]
    assert peaks == sorted(peaks, reverse=True) and len(peaks) == glue.PER_PAGE
    at.text_input(key="atlas_search").input("999")
    _ok_with_error = at.run()
    assert any("does not exist" in e.value for e in _ok_with_error.error)
    at.text_input(key="atlas_search").input("channel 5")
    _ok(at)
    assert at.query_params["channel"] in ("5", ["5"])
    assert "features.relu7 · channel 5" in _subheaders(at)


def test_a_unit_page_by_query_parameters_and_a_second_visit_runs_no_model_pass():
    at = open_app()
    at.query_params["layer"] = "features.relu7"
    at.query_params["channel"] = "7"
    at.switch_page(ATLAS)
    before = _forwards(at)
    _ok(at)
    assert "features.relu7 · channel 7" in _subheaders(at)
    assert _forwards(at) - before == 1, "the maps over the crops: ONE forward pass of the top images"
    crops = [c for c in _captions(at) if c.startswith("#")]
    assert len(crops) == K and crops[0].startswith("#1 · ")
    assert len(at.get("plotly_chart")) == 2, "the histogram and the logit view"
    assert "Kernel slices of features.conv7, filter 7" in _subheaders(at)
    assert "Logit view" in _subheaders(at)
    at.button(key="atlas_next").click()
    _ok(at)
    assert "features.relu7 · channel 8" in _subheaders(at)
    at.button(key="atlas_prev").click()
    again = _forwards(at)
    _ok(at)
    assert "features.relu7 · channel 7" in _subheaders(at)
    assert _forwards(at) == again, "a second visit ran the model"
    at.slider(key="atlas_alpha").set_value(0.9)
    _ok(at)
    assert _forwards(at) == again, "the opacity slider ran the model"
    at.button(key="atlas_back").click()
    _ok(at)
    assert "channel" not in at.query_params and any(c.startswith("channel 0 ·") for c in _captions(at))


def test_a_conv_layer_has_kernels_but_no_logit_view(results_env):
    at = open_app()
    at.query_params["layer"] = "features.conv3"
    at.query_params["channel"] = "2"
    at.switch_page(ATLAS)
    _ok(at)
    assert "features.conv3 · channel 2" in _subheaders(at)
    assert "Kernel slices of features.conv3, filter 2" in _subheaders(at)
    assert "Logit view" not in _subheaders(at) and len(at.get("plotly_chart")) == 1


def test_feature_visualisations_run_on_demand_under_a_progress_bar_and_are_kept(monkeypatch):
    monkeypatch.setattr(glue, "FV_SETTINGS", {"steps": 3, "size": 64})
    at = open_app()
    at.query_params["layer"] = "features.relu7"
    at.query_params["channel"] = "20"  # channels no other test opens (caches are per process)
    at.switch_page(ATLAS)
    _ok(at)
    assert not [c for c in _captions(at) if c.startswith("seed ")]
    at.number_input(key="atlas_fv_seeds").set_value(2)
    _ok(at)
    at.button(key="atlas_fv_run").click()
    _ok(at)
    run = at.session_state[glue.FV_KEY]
    assert at.get("progress") or run.done, "no progress bar while the visualisations run"
    for job in run.jobs:
        assert job.wait(120) and job.error is None
    _ok(at)
    assert [c for c in _captions(at) if c.startswith("seed ")] == ["seed 0", "seed 1"]
    assert not [b for b in at.button if b.key == "atlas_fv_run"], "nothing left to compute"
    kept = _forwards(at)
    at.button(key="atlas_next").click()
    _ok(at)
    at.button(key="atlas_prev").click()
    _ok(at)
    assert [c for c in _captions(at) if c.startswith("seed ")] == ["seed 0", "seed 1"]
    assert _forwards(at) == kept + 1, "only channel 21's maps ran; channel 20's pictures came from the caches"
    at.button(key="atlas_back").click()
    _ok(at)
    assert _captions(at).count("feature visualisation") == 1, "the grid shows the cached visualisation of channel 20"


def test_the_page_requested_before_the_navigation_ran_gets_the_frame():
    """A bookmark of a unit page on a fresh server: the page runs alone first (see apptest.py)."""
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["layer"] = "features.relu7"
    at.query_params["channel"] = "3"
    at.switch_page(ATLAS)
    _ok(at)
    assert [t.value for t in at.sidebar.title] == ["cnnvis"]
    assert [h.value for h in at.header] == ["Unit atlas"]
    assert "features.relu7 · channel 3" in _subheaders(at)


def test_the_deconvnet_projections_of_the_examples_run_once():
    at = open_app()
    at.query_params["layer"] = "features.relu7"
    at.query_params["channel"] = "30"  # a channel no other test opens
    at.switch_page(ATLAS)
    _ok(at)
    assert not [c for c in _captions(at) if c.startswith("deconvnet")]
    before = _forwards(at)
    at.toggle(key="atlas_deconv").set_value(True)
    _ok(at)
    assert [c for c in _captions(at) if c.startswith("deconvnet")] == [f"deconvnet #{n + 1}" for n in range(K)]
    assert _forwards(at) - before == K, "one pass per example"
    at.toggle(key="atlas_deconv").set_value(False)
    _ok(at)
    at.toggle(key="atlas_deconv").set_value(True)
    _ok(at)
    assert _forwards(at) - before == K, "the projections are cached"


def test_the_page_s_polls_keep_its_visualisations_running_and_they_stop_without_them(monkeypatch):
    """The optimisation runs stop once nobody polls them (a closed tab): the atlas page's reads of
    its visualisations are those polls, and must keep a long run going."""
    from types import SimpleNamespace

    from cnnvis_core import Engine
    from dashboard import optimize

    monkeypatch.setattr(optimize, "ABANDON_SECONDS", 0.5)
    monkeypatch.setattr(glue, "FV_SETTINGS", {"steps": 100_000, "size": 32})
    monkeypatch.setattr(glue, "st", SimpleNamespace(session_state={}))
    monkeypatch.setattr(glue, "session_id", lambda: "tab")
    engine = Engine.demo(device="cpu")
    run = glue.start_visualisations(engine, "features.relu2", 3, 1)
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:  # the page's fragment, polling
        assert glue.current_visualisations("features.relu2", 3) is run
        time.sleep(0.1)
    assert not run.jobs[0].done and not run.jobs[0].stopping(), "a polled visualisation was stopped"
    assert run.jobs[0].wait(30), "nobody polls: the run should stop by itself"
    assert run.jobs[0].result.cancelled
