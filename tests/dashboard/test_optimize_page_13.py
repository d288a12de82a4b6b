"""The filter-optimisation page as issue 13 wants it: settings kept across pages, the Custom settings
panel left open, the time elapsed and left, preview tiles named by their units, Cancel acting in the
click's own run, a cancelled run's files saying so, and a page that polls without starving the run."""

from __future__ import annotations

import re
import time
from pathlib import Path

import tomllib
from streamlit.testing.v1 import AppTest

from tests.dashboard.pages_13 import away_and_back, ok, open_page, record_file_names

PAGE = "pages/optimize.py"
ROOT = Path(__file__).resolve().parents[2]


def _progress(at: AppTest) -> list[str]:
    return [p.proto.text or "" for p in at.get("progress")]


def _four_channels(at: AppTest, preset: str = "lucid") -> AppTest:
    """Channels 20-23 of features.relu4 chosen, with ``preset``."""
    at.selectbox(key="opt_layer").set_value("features.relu4")
    at.radio(key="opt_mode").set_value("List")
    at.selectbox(key="opt_preset").set_value(preset)
    ok(at)
    at.text_input(key="opt_list").set_value("20-23")
    return at


def test_settings_are_kept_when_another_page_was_shown():
    at = _four_channels(open_page(PAGE), "keras")
    at.number_input(key="opt_steps_keras").set_value(7)
    at.number_input(key="opt_size_keras").set_value(48)
    at.number_input(key="opt_lr_keras").set_value(0.5)
    at.number_input(key="opt_seed").set_value(3)
    ok(at)
    away_and_back(at, PAGE)
    assert at.selectbox(key="opt_layer").value == "features.relu4"
    assert at.radio(key="opt_mode").value == "List"
    assert at.text_input(key="opt_list").value == "20-23"
    assert at.selectbox(key="opt_preset").value == "keras"
    assert at.number_input(key="opt_steps_keras").value == 7
    assert at.number_input(key="opt_size_keras").value == 48
    assert at.number_input(key="opt_lr_keras").value == 0.5
    assert at.number_input(key="opt_seed").value == 3
    assert at.button(key="opt_run").label == "Optimise 4 image(s)"


def test_the_custom_settings_panel_stays_open_when_the_objective_changes():
    at = open_page(PAGE)
    [panel] = [e for e in at.expander if e.label == "Custom settings"]
    assert not panel.proto.expanded
    at.session_state["opt_custom"] = True  # what a click on the panel's title sends
    ok(at)
    for kind in ("class", "neuron", "channel"):
        at.radio(key="opt_kind").set_value(kind)
        ok(at)
        [panel] = [e for e in at.expander if e.label == "Custom settings"]
        assert panel.proto.expanded, f"the panel closed when the objective became {kind!r}"


def test_a_run_shows_its_time_and_named_tiles_and_cancel_acts_in_the_click_s_own_run(monkeypatch):
    names = record_file_names(monkeypatch)
    at = _four_channels(open_page(PAGE))
    at.number_input(key="opt_steps_lucid").set_value(4000)
    at.number_input(key="opt_size_lucid").set_value(32)
    ok(at)
    at.button(key="opt_run").click()
    ok(at)
    job = at.session_state["_optimize_job"]
    deadline = time.monotonic() + 60
    while job.progress()[0] < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    ok(at)  # what the page's timer does
    [text] = [t for t in _progress(at) if t.startswith("Step ")]
    assert re.fullmatch(r"Step \d+ of 4000 · \d+ s elapsed · about (\d+ s|\d+ min \d\d s) left", text), text
    tiles = [image for image in at.get("image") if image.captions]
    assert [c for image in tiles for c in image.captions] == ["channel 20", "channel 21", "channel 22", "channel 23"]

    clicked = time.monotonic()
    at.button(key="opt_cancel").click()
    ok(at)
    assert job.done and job.finished - clicked < 1.0, "Cancel took more than a second to stop the run"
    assert any(t.startswith("Cancelled after") for t in _progress(at)), _progress(at)
    steps = job.result.steps_done
    assert f"demo_features.relu4_channel_20_lucid_seed0_cancelled_at_{steps}_of_4000.png" in names, names
    assert f"demo_features.relu4_channel_lucid_seed0_cancelled_at_{steps}_of_4000.zip" in names, names


def test_the_page_polls_once_a_second_and_each_runs_full_collection_skips_the_frozen_libraries():
    """Each poll of a running job is a script run holding the interpreter the optimisation needs
    (bench/dashboard.py measures it): twice a second, each followed by Streamlit's full garbage
    collection of the whole heap (0.3-0.5 s), the job ran many times slower than the engine. The
    collection stays (without it each run's cycles pile up: dashboard/heap.py), over a heap whose
    libraries the app's first run froze: what it walks is only what the sessions made since."""
    import gc

    from dashboard import optimize as view

    assert view.POLL_SECONDS >= 1.0
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["runner"]["postScriptGC"] is True
    open_page("pages/predictions.py")
    assert gc.get_freeze_count() > 100_000, "the libraries' objects were not frozen: every collection walks them"
