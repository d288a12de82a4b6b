"""The dashboard against a script: a filter optimisation run from the browser and the same engine call.

A real server (``streamlit run app.py`` on a free localhost port, as the browser tests start it)
driven by headless Chromium through the browser tests' helpers, side by side with
``engine.optimize`` of the same request in this process (demo model, channel objective,
``features.relu4``, units 20-23, 32 steps at 64 px, lucid preset): rounds interleaved, a new
seed each round (the engine caches each unit's image), the median of each printed with their
ratio. The dashboard's figures: the job's own time (its thread, as the page reports it) and the
time from the click to the finished gallery in the browser. Then the cancel latency: a long run
is started, and the time from the click on Cancel to the page saying it was cancelled::

    python bench/dashboard.py [--rounds 3] [--steps 32] [--size 64] [--cancels 3]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.timing import timed
from cnnvis_core import Engine
from cnnvis_core.optimize.cache import results_cache
from tests.e2e.browser import RUN_COUNTER_JS, RUN_TIMEOUT_MS, UI_TIMEOUT_MS, AppPage
from tests.e2e.conftest import CHROMIUM, LAUNCH_ARGS, VIEWPORT, running_server

LAYER = "features.relu4"
UNITS = (20, 21, 22, 23)
#: the page's report of a finished run: "Done: 32 steps in 12.3 s"
DONE = re.compile(r"Done: (\d+) steps in ([\d.]+) s")
CANCELLED = re.compile(r"^Cancelled after")


def set_number(app: AppPage, label: str, value: int) -> None:
    field = app.page.get_by_role("spinbutton", name=label, exact=True)
    field.fill(str(value))
    app.act(lambda: field.press("Enter"))


def open_optimisation(app: AppPage, steps: int, size: int) -> None:
    """The filter-optimisation page set to the bench's request (seed still to set)."""
    app.select("Layer", re.compile(rf"^{re.escape(LAYER)} · "), search=LAYER.split(".")[-1])
    app.choose_radio("Units", "List")
    units = app.page.get_by_role("textbox", name=re.compile(r"^Channels"))
    units.fill(f"{UNITS[0]}-{UNITS[-1]}")
    app.act(lambda: units.press("Enter"))
    expander = app.main().get_by_text("Custom settings", exact=True)
    if not app.page.get_by_role("spinbutton", name="Steps", exact=True).is_visible():
        expander.click()
    set_number(app, "Steps", steps)
    set_number(app, "Image size", size)


def dashboard_run(app: AppPage, seed: int, steps: int) -> tuple[float, float]:
    """``(job seconds as the page reports them, click-to-gallery seconds)`` of one run."""
    set_number(app, "Seed", seed)
    button = app.page.get_by_role("button", name=re.compile(r"^Optimise \d+ image"))
    done = app.main().get_by_text(DONE)
    start = time.perf_counter()
    button.click()
    done.wait_for(state="detached", timeout=UI_TIMEOUT_MS)  # the previous run's report goes first
    done.wait_for(timeout=RUN_TIMEOUT_MS * 5)
    wall = time.perf_counter() - start
    found = DONE.search(done.inner_text())
    assert found and int(found[1]) == steps, done.inner_text()
    app.wait_idle()
    return float(found[2]), wall


def script_run(engine: Engine, seed: int, steps: int, size: int) -> float:
    results_cache(engine).clear()
    return timed(lambda: engine.optimize(LAYER, list(UNITS), "channel", seed=seed, preset="lucid", steps=steps,
                                         size=size))


def cancel_latency(app: AppPage, seed: int) -> float:
    """Seconds from the click on Cancel to the page saying the run was cancelled."""
    set_number(app, "Seed", seed)
    app.page.get_by_role("button", name=re.compile(r"^Optimise \d+ image")).click()
    progress = app.main().get_by_test_id("stProgress").get_by_text(re.compile(r"^Step ([3-9]|\d\d+) of"))
    progress.wait_for(timeout=UI_TIMEOUT_MS)
    cancel = app.main().get_by_role("button", name="Cancel", exact=True)
    start = time.perf_counter()
    cancel.click()
    app.main().get_by_text(CANCELLED).wait_for(timeout=UI_TIMEOUT_MS)
    latency = time.perf_counter() - start
    app.wait_idle()
    return latency


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--cancels", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads of the script and the server (OMP_NUM_THREADS); default: torch's "
                             "own choice (one per core). On a machine other work keeps busy, 1 gives steadier "
                             "figures: two threads on two busy cores wait for each other at every operation")
    parser.add_argument("--post-script-gc", choices=("true", "false"), default=None,
                        help="the server's runner.postScriptGC (default: .streamlit/config.toml's)")
    args = parser.parse_args()
    if args.post_script_gc is not None:
        os.environ["STREAMLIT_RUNNER_POST_SCRIPT_GC"] = args.post_script_gc
    from playwright.sync_api import sync_playwright

    if args.threads is not None:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the server's torch reads it when it starts
        torch.set_num_threads(args.threads)
    engine = Engine.demo(device="cpu")
    script_run(engine, 0, 2, args.size)  # warm-up
    jobs, walls, scripts, cancels = [], [], [], []
    with running_server("bench-dashboard.log") as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        try:
            context = browser.new_context(viewport=VIEWPORT)
            context.set_default_timeout(UI_TIMEOUT_MS)
            context.add_init_script(RUN_COUNTER_JS)
            app = AppPage(context.new_page(), url).open("optimize")  # by URL: whatever the navigation looks like
            open_optimisation(app, args.steps, args.size)
            dashboard_run(app, 1, args.steps)  # warm-up: the model loads, the page's code is imported
            for seed in range(100, 100 + args.rounds):
                job, wall = dashboard_run(app, seed, args.steps)
                script = script_run(engine, seed, args.steps, args.size)
                jobs.append(job)
                walls.append(wall)
                scripts.append(script)
                print(f"  round {seed - 99}: dashboard job {job:6.2f} s · click to gallery {wall:6.2f} s · "
                      f"script {script:6.2f} s", flush=True)
            set_number(app, "Steps", 4000)
            for seed in range(200, 200 + args.cancels):
                cancels.append(cancel_latency(app, seed))
                print(f"  cancel {seed - 199}: {cancels[-1]:.2f} s", flush=True)
        finally:
            browser.close()
    job, wall, script = (statistics.median(v) for v in (jobs, walls, scripts))
    gc = args.post_script_gc or "as configured"
    print(f"demo model, channel objective, {LAYER} units {UNITS[0]}-{UNITS[-1]}, {args.steps} steps at "
          f"{args.size}×{args.size} px, lucid preset, median of {args.rounds} interleaved rounds, "
          f"{torch.get_num_threads()} torch threads, server postScriptGC {gc}")
    print(f"  script (engine.optimize)          {script:8.2f} s")
    print(f"  dashboard job (its thread)        {job:8.2f} s   {job / script:5.2f}× the script")
    print(f"  dashboard, click to gallery       {wall:8.2f} s   {wall / script:5.2f}× the script")
    print(f"  cancel, click to 'Cancelled'      {statistics.median(cancels):8.2f} s median, "
          f"{max(cancels):.2f} s worst of {len(cancels)}")


if __name__ == "__main__":
    main()
