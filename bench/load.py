"""Load bench: N browser sessions at once on a real dashboard server, with a long job beside them.

    python bench/load.py [--sessions 1 4 8 12] [--rounds 3] [--soak 120] [--job-steps 2000]

One ``streamlit run app.py`` on a free port and one headless Chromium (``/usr/bin/chromium``), a
browser context per session, all driven at the same time (Playwright's async API). For each N:

1. **first page**: N sessions open the app at once; the time until each one's first run is over;
2. **upload** (on the Predictions page): each uploads a different image (up to 4000×3000) at once;
   an upload is *lost* when no run shows its file's name within 120 s;
3. **quick action** (runs the model): on the CAM page, each switches the method (Grad-CAM ↔
   Grad-CAM++ ↔ XGrad-CAM, a forward and a backward pass), ``--rounds`` times;
4. **no-model action**: each moves the opacity slider one step, ``--rounds`` times.

From N ≥ 2 on, a long job runs beside them: a filter optimisation started by one more session
(every channel of the page's default layer, ``--job-steps`` steps at 32 px), kept alive by that
session's page polling it. Solo (N = 1) runs without it, so the ratios include the job's cost.
Every action's latency runs from the browser event to the end of the run it triggered. Failed
``/media/`` requests and exception boxes are counted over everything.

Then the **soak**: one session, ``--soak`` interactions cycling through 50 uploaded images (up to
4000×3000), pages, methods, layers and sliders; the server's RSS (``/proc/PID/status``) sampled
every 2 s. Printed: per N, the medians and their ratios to solo, lost uploads, failed media
requests and exception boxes; then the RSS series (MB) and its peak and end.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cnnvis_core.cam import TITLES  # noqa: E402
from cnnvis_core.demo import HELD_OUT_SEED_START, sample  # noqa: E402
from tests.e2e.browser import IDLE_JS, RUN_COUNTER_JS  # noqa: E402  (the browser tests' run counter)

CHROMIUM = os.environ.get("CNNVIS_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
METHODS = tuple(TITLES[m] for m in ("gradcam++", "xgradcam", "gradcam"))
OPACITY = "Opacity of the map"
TIMEOUT_MS = 300_000

try:
    from playwright.async_api import TimeoutError as PlaywrightTimeout
except ImportError:  # reported when main() imports playwright
    PlaywrightTimeout = TimeoutError


@dataclass
class Tally:
    """What one N's sessions measured."""

    first: list[float] = field(default_factory=list)
    upload: list[float] = field(default_factory=list)
    quick: list[float] = field(default_factory=list)
    display: list[float] = field(default_factory=list)
    lost_uploads: int = 0
    failed_media: int = 0
    exceptions: int = 0
    #: CPU seconds over the actions (first page to the last slider move): the server's, the machine's
    server_cpu: float = 0.0
    machine_cpu: float = 0.0


# ---------------------------------------------------------------------------- server
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(results: Path, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
               "--server.headless", "true", "--server.address", "127.0.0.1", "--browser.gatherUsageStats",
               "false", "--server.fileWatcherType", "none"]
    with open(log, "wb") as out:
        server = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                  env={**os.environ, "CNNVIS_RESULTS": str(results), "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as answer:
                if answer.status == 200:
                    return server, url
        except OSError:
            time.sleep(0.25)
    server.kill()
    raise SystemExit(f"the server did not start; see {log}")


@contextmanager
def served(log_name: str) -> Iterator[tuple[subprocess.Popen, str]]:
    """A real server (:func:`start_server`) over a temporary results folder, its log in
    ``out/log_name``; stopped when the block ends, however it ends."""
    with tempfile.TemporaryDirectory() as results:
        log = ROOT / "out" / log_name
        log.parent.mkdir(exist_ok=True)
        server, url = start_server(Path(results), log)
        try:
            yield server, url
        finally:
            server.terminate()
            server.wait(timeout=30)


TICK = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def machine_cpu() -> float:
    """CPU seconds every core of the machine has been busy (all processes: the server, Chromium, …)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    return (sum(values) - values[3] - values[4]) / TICK  # less idle and iowait


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children's (Streamlit runs in one process), MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# ---------------------------------------------------------------------------- images
def upload_images(count: int) -> list[tuple[str, bytes]]:
    """``count`` JPEGs of demo shapes at sizes from 640×480 up to 4000×3000."""
    sizes = [(640, 480), (1600, 1200), (2400, 1800), (4000, 3000)]
    out = []
    for i in range(count):
        image = sample(HELD_OUT_SEED_START + 30_000_000 + i)[0].resize(sizes[i % len(sizes)])
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=85)
        out.append((f"load_{i:02d}_{image.width}x{image.height}.jpg", buffer.getvalue()))
    return out


# ---------------------------------------------------------------------------- one session
class Session:
    """One browser context on the dashboard."""

    def __init__(self, context, url: str, tally: Tally) -> None:
        self.context, self.url, self.tally = context, url, tally
        self.page = None

    async def runs(self) -> int:
        return int(await self.page.evaluate("window.__cnnvisRunsDone || 0"))

    async def timed(self, action) -> float:
        """Seconds from ``action`` until the run it triggered is over."""
        before = await self.runs()
        started = time.perf_counter()
        await action()
        await self.idle_after(before)
        took = time.perf_counter() - started
        self.tally.exceptions += await self.page.get_by_test_id("stException").count()
        return took

    async def idle_after(self, before: int) -> None:
        """Wait for the run after the count ``before`` to end; a rerun over within one frame (all
        cached) may never show as running, so after 10 s an idle app will do."""
        try:
            await self.page.wait_for_function(IDLE_JS, arg=before, timeout=10_000, polling=50)
        except PlaywrightTimeout:
            await self.page.wait_for_function(IDLE_JS, arg=0, timeout=TIMEOUT_MS, polling=50)

    async def open(self) -> float:
        self.page = await self.context.new_page()
        self.page.on("requestfailed", self._failed)
        started = time.perf_counter()
        await self.page.goto(self.url, timeout=TIMEOUT_MS)
        await self.page.wait_for_function(IDLE_JS, arg=0, timeout=TIMEOUT_MS, polling=50)
        return time.perf_counter() - started

    def _failed(self, request) -> None:
        if "/media/" in request.url:
            self.tally.failed_media += 1

    async def upload(self, name: str, data: bytes) -> float | None:
        zone = self.page.locator('[data-testid="stFileUploaderDropzone"][aria-label="Image"]')
        # the Predictions page's caption names the file (the uploader's chip shortens long names)
        chip = self.page.get_by_test_id("stMain").get_by_text(f"{name} · ", exact=False)
        started = time.perf_counter()
        await zone.locator("input[type=file]").set_input_files({"name": name, "mimeType": "image/jpeg",
                                                                "buffer": data})
        try:
            await chip.first.wait_for(timeout=120_000)
            await self.page.wait_for_function(IDLE_JS, arg=0, timeout=TIMEOUT_MS, polling=50)
        except Exception:  # noqa: BLE001 - a lost upload is what is being counted
            return None
        return time.perf_counter() - started

    async def go_to(self, title: str) -> float:
        link = self.page.get_by_test_id("stTopNav").get_by_role("link", name=re.compile(rf"{re.escape(title)}$"))
        return await self.timed(link.click)

    async def select(self, label: str, option: str) -> float:
        box = self.page.get_by_role("combobox", name=label, exact=True)
        await box.click()
        choice = self.page.get_by_role("listbox", name=label).get_by_role("option", name=option, exact=True)
        return await self.timed(choice.first.click)

    async def nudge(self, label: str, key: str) -> float:
        handle = self.page.locator(f'[data-testid="stSlider"] input[type=range][aria-label="{label}"]')
        await handle.focus()
        return await self.timed(lambda: self.page.keyboard.press(key))


async def new_session(browser, url: str, tally: Tally) -> Session:
    context = await browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(120_000)  # a click on a saturated machine
    await context.add_init_script(RUN_COUNTER_JS)
    return Session(context, url, tally)


# ---------------------------------------------------------------------------- scenarios
async def staggered(action, stagger: float, rng: random.Random):
    """``action()`` after a random delay in ``[0, stagger)`` s (people do not click in unison)."""
    if stagger:
        await asyncio.sleep(rng.uniform(0, stagger))
    return await action()


async def one_round(browser, url: str, n: int, rounds: int, images: list[tuple[str, bytes]], pid: int,
                    stagger: float = 0.0) -> Tally:
    tally = Tally()
    rng = random.Random(n)
    sessions = [await new_session(browser, url, tally) for _ in range(n)]
    cpu = process_cpu(pid), machine_cpu()
    tally.first = list(await asyncio.gather(*(staggered(s.open, stagger, rng) for s in sessions)))
    uploads = await asyncio.gather(*(staggered(lambda s=s, i=i: s.upload(*images[i % len(images)]), stagger, rng)
                                     for i, s in enumerate(sessions)))
    tally.upload = [u for u in uploads if u is not None]
    tally.lost_uploads = sum(u is None for u in uploads)
    await asyncio.gather(*(s.go_to("Class activation maps") for s in sessions))
    for r in range(rounds):
        method = METHODS[r % len(METHODS)]
        tally.quick += await asyncio.gather(*(staggered(lambda s=s, m=method: s.select("Method", m), stagger, rng)
                                              for s in sessions))
        key = "ArrowRight" if r % 2 == 0 else "ArrowLeft"
        tally.display += await asyncio.gather(*(staggered(lambda s=s, k=key: s.nudge(OPACITY, k), stagger, rng)
                                                for s in sessions))
    tally.server_cpu, tally.machine_cpu = process_cpu(pid) - cpu[0], machine_cpu() - cpu[1]
    for s in sessions:
        await s.context.close()
    return tally


async def long_job(browser, url: str, steps: int) -> Session:
    """A filter optimisation of every channel of a layer kept running (its page polls it) beside the sessions."""
    job = await new_session(browser, url, Tally())
    await job.open()
    await job.go_to("Filter optimisation")
    page = job.page
    all_units = page.get_by_role("radiogroup", name="Units").get_by_text(re.compile(r"^All \d+ channels"))
    await job.timed(all_units.click)
    expander = page.get_by_test_id("stExpander").get_by_text("Custom settings")
    await job.timed(expander.click)
    for label, value in (("Steps", str(steps)), ("Image size", "32")):
        box = page.get_by_role("spinbutton", name=re.compile(rf"^{label}"))
        await box.first.fill(value)
        await job.timed(lambda box=box: box.first.press("Enter"))
    await job.timed(page.get_by_role("button", name=re.compile(r"^Optimise")).click)
    return job


@asynccontextmanager
async def rss_series(pid: int) -> AsyncIterator[list[tuple[float, float]]]:
    """The server's RSS while the block runs: ``(seconds, MB)`` every 2 s."""
    series: list[tuple[float, float]] = []
    started, stop = time.monotonic(), asyncio.Event()

    async def sample() -> None:
        while not stop.is_set():
            series.append((time.monotonic() - started, rss_mb(pid)))
            await asyncio.sleep(2)

    sampler = asyncio.create_task(sample())
    try:
        yield series
    finally:
        stop.set()
        await sampler


async def soak(browser, url: str, interactions: int, images: list[tuple[str, bytes]], pid: int,
               series: list[tuple[float, float]]) -> Tally:
    tally = Tally()
    session = await new_session(browser, url, tally)
    await session.open()
    async with rss_series(pid) as sampled:
        for done in range(0, interactions, 6):
            name, data = images[(done // 6) % len(images)]
            await session.go_to("Predictions")
            if await session.upload(name, data) is None:
                tally.lost_uploads += 1
            await session.go_to("Layer browser")
            await session.go_to("Class activation maps")
            await session.select("Method", METHODS[(done // 6) % len(METHODS)])
            await session.go_to("Kernels")
    series.extend(sampled)
    await session.context.close()
    return tally


# ---------------------------------------------------------------------------- report
def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def report(results: dict[int | str, Tally]) -> None:
    """The table: a row per entry, in order, the first being the solo run the ratios divide by."""
    solo = next(iter(results.values()))
    print("\n| sessions | first page s (× solo) | upload s (× solo) | quick action s (× solo) | no-model action s "
          "(× solo) | lost uploads | failed media | exception boxes | server's share of the busy CPU |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for n, t in results.items():
        cells = []
        for name in ("first", "upload", "quick", "display"):
            value, base = median(getattr(t, name)), median(getattr(solo, name))
            cells.append(f"{value:.2f} ({value / base:.1f}×)")
        share = f"{t.server_cpu / t.machine_cpu:.0%} of {t.machine_cpu:.0f} s" if t.machine_cpu else "n/a"
        print(f"| {n} | {' | '.join(cells)} | {t.lost_uploads} | {t.failed_media} | {t.exceptions} | {share} |")


def report_soak(interactions: int, lost: int, failed_media: int, exceptions: int, rss: list[float]) -> None:
    """The soak's counts and its RSS series (MB, every 2 s)."""
    print(f"\nSoak: {interactions} interactions, 50 images up to 4000×3000: lost uploads {lost}, "
          f"failed media {failed_media}, exception boxes {exceptions}")
    print("RSS (MB) every 2 s: " + " ".join(f"{mb:.0f}" for mb in rss))
    print(f"RSS start {rss[0]:.0f} MB, peak {max(rss):.0f} MB, end {rss[-1]:.0f} MB "
          f"(budget CNNVIS_CACHE_MB={os.environ.get('CNNVIS_CACHE_MB', '1024 (default)')})")


async def main(args: argparse.Namespace) -> None:
    from playwright.async_api import async_playwright

    images = upload_images(50)
    with served("bench-load-streamlit.log") as (server, url):
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            warm = await new_session(browser, url, Tally())  # the engine loads once, before any timing
            await warm.open()
            await warm.go_to("Class activation maps")
            await warm.context.close()
            found: dict[int, Tally] = {}
            for n in args.sessions:
                job = await long_job(browser, url, args.job_steps) if n > 1 and args.job_steps else None
                found[n] = await one_round(browser, url, n, args.rounds, images, server.pid, args.stagger)
                if job is not None:
                    await job.context.close()
                print(f"N = {n}: done ({len(found[n].quick)} quick actions)", flush=True)
            report(found)
            if args.soak:
                series: list[tuple[float, float]] = []
                tally = await soak(browser, url, args.soak, images, server.pid, series)
                report_soak(args.soak, tally.lost_uploads, tally.failed_media, tally.exceptions,
                            [mb for _, mb in series])
            await browser.close()


def arguments(description: str, rounds: int, soak: int) -> argparse.Namespace:
    """The load benches' command line (``rounds`` and ``soak`` their defaults)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 4, 8, 12])
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--soak", type=int, default=soak, help="interactions of the soak (0: none)")
    parser.add_argument("--job-steps", type=int, default=2000, help="steps of the long job (0: none)")
    parser.add_argument("--stagger", type=float, default=0.0,
                        help="each session's action starts after a random delay in [0, S) s (0: all at once)")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(arguments(__doc__.split("\n\n")[0], rounds=3, soak=120)))
