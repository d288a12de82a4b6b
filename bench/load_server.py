"""Load bench of the server alone: N dashboard sessions over Streamlit's wire protocol, no browser.

    python bench/load_server.py [--sessions 1 4 8 12] [--rounds 5] [--job-steps 2000] [--stagger 0]
                                [--soak 300]

``bench/load.py`` drives real Chromium tabs; on this 2-core machine the tabs use most of the CPU
(the server's share of the busy CPU was 12–44 %), so its ratios measure the browsers more than the
server. Here each session is a :class:`tests.e2e.wire.WireSession`: the requests and websocket messages a
browser sends (page, scripts, health check, first run, widget changes, uploads, media fetches,
fragment polls), at the cost of a few protobuf messages per action. Same scenario as
``bench/load.py``, per N:

1. **first page**: N sessions open the app at once (static files, websocket, first run, its media);
2. **upload**: each uploads a different image (640×480 to 4000×3000) on the Predictions page at
   once (solo: one of each size, in turn); *lost* when the run after it does not name the file;
3. **quick action** (runs the model): on the CAM page each switches the method (Grad-CAM ↔
   Grad-CAM++ ↔ XGrad-CAM: a forward and a backward pass), ``--rounds`` times;
4. **no-model action**: each moves the opacity slider one step, ``--rounds`` times.

From N ≥ 2 on, a long job runs beside them (a filter optimisation of every channel of the default
layer, ``--job-steps`` steps at 32 px, started by one more session whose page polls it). Solo runs
without it, so the ratios include the job's cost; the row ``1 + job`` is one session beside the job,
the job's cost alone. ``--stagger S`` starts each session's action
after a random delay in ``[0, S)`` s (a class does not click in unison); 0 is the worst case, all
at the same instant. Printed: medians and ratios to solo, lost uploads, failed media, exception
boxes, and the CPU seconds of the server and of this client over the actions. ``--soak K``: one
session, K interactions over 50 uploaded images, pages, methods and sliders, with the server's RSS
every 2 s.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from load import (  # the browser bench's server, images, probes and table
    METHODS,
    OPACITY,
    Tally,
    arguments,
    machine_cpu,
    process_cpu,
    report,
    report_soak,
    rss_series,
    served,
    upload_images,
)

from tests.e2e.wire import Counts, WireSession  # the repository is on the path (load put it there)

CAM_PAGE = "Class activation maps"
#: the uploads cycle through this many sizes, 640×480 to 4000×3000 (:func:`load.upload_images`)
SIZES = 4


@dataclass
class Clock:
    """CPU seconds at a start: the server's, this client's, the machine's."""

    server: float
    client: float
    machine: float

    @classmethod
    def now(cls, pid: int) -> Clock:
        return cls(process_cpu(pid), time.process_time(), machine_cpu())


async def staggered(action, stagger: float, rng: random.Random):
    """``action()`` after a random delay in ``[0, stagger)`` s."""
    if stagger:
        await asyncio.sleep(rng.uniform(0, stagger))
    return await action()


async def one_round(url: str, n: int, rounds: int, images: list[tuple[str, bytes]], pid: int,
                    stagger: float) -> tuple[Tally, float]:
    """The scenario for ``n`` sessions; the tally and this client's CPU seconds."""
    tally, counts, rng = Tally(), Counts(), random.Random(n)
    sessions = [WireSession(url, counts) for _ in range(n)]
    start = Clock.now(pid)
    tally.first = list(await asyncio.gather(*(staggered(s.open, stagger, rng) for s in sessions)))
    uploads = await asyncio.gather(*(staggered(lambda s=s, i=i: s.upload("Image", *images[i % len(images)]),
                                               stagger, rng) for i, s in enumerate(sessions)))
    if n == 1:  # solo uploads every size once, one after the other, as N ≥ 4 sessions upload them at once
        uploads += [await sessions[0].upload("Image", *image) for image in images[1:SIZES]]
    tally.upload = [u for u in uploads if u is not None]
    tally.lost_uploads = sum(u is None for u in uploads)
    await asyncio.gather(*(s.go_to(CAM_PAGE) for s in sessions))
    opacity = sessions[0].widget("slider", OPACITY)
    for r in range(rounds):
        method = METHODS[r % len(METHODS)]
        tally.quick += await asyncio.gather(*(staggered(lambda s=s, m=method: s.set("selectbox", "Method", m),
                                                        stagger, rng) for s in sessions))
        value = opacity.default[0] + (opacity.step if r % 2 == 0 else 0.0)
        tally.display += await asyncio.gather(*(staggered(lambda s=s, v=value: s.set("slider", OPACITY, v),
                                                          stagger, rng) for s in sessions))
    end = Clock.now(pid)
    tally.server_cpu, tally.machine_cpu = end.server - start.server, end.machine - start.machine
    tally.failed_media, tally.exceptions = counts.failed_media, counts.exceptions
    await asyncio.gather(*(s.close() for s in sessions))
    return tally, end.client - start.client


async def long_job(url: str, steps: int, seed: int) -> WireSession:
    """A filter optimisation of every channel of the default layer, polled by its session's page;
    a seed of its own per row (the engine keeps finished units: the same run again would be instant)."""
    job = WireSession(url)
    await job.open()
    await job.go_to("Filter optimisation")
    units = job.widget("radio", "Units")
    await job.set("radio", "Units", next(o for o in units.options if o.startswith("All")))
    await job.set("number_input", "Steps", steps)
    await job.set("number_input", "Image size", 32)
    await job.set("number_input", "Seed", seed)
    await job.set("button", "Optimise", True)
    return job


async def soak(url: str, interactions: int, images: list[tuple[str, bytes]], pid: int) -> tuple[Counts, int, list]:
    """One session, ``interactions`` actions; its counts, lost uploads and the RSS series."""
    counts, lost = Counts(), 0
    session = WireSession(url, counts)
    async with rss_series(pid) as series:
        await session.open()
        for done in range(0, interactions, 6):
            name, data = images[(done // 6) % len(images)]
            await session.go_to("Predictions")
            lost += await session.upload("Image", name, data) is None
            await session.go_to("Layer browser")
            await session.go_to(CAM_PAGE)
            await session.set("selectbox", "Method", METHODS[(done // 6) % len(METHODS)])
            await session.go_to("Kernels")
    await session.close()
    return counts, lost, series


async def main(args: argparse.Namespace) -> None:
    images = upload_images(50)
    with served("bench-load-server-streamlit.log") as (server, url):
        warm = WireSession(url)  # the engine loads once, before any timing
        await warm.open()
        await warm.go_to(CAM_PAGE)
        await warm.close()
        found: dict[int | str, Tally] = {}
        client: dict[int | str, float] = {}
        rounds = [(n, n > 1 and args.job_steps > 0) for n in args.sessions]
        if args.job_steps and 1 in args.sessions:
            rounds.insert(args.sessions.index(1) + 1, (1, True))  # the job's own cost: solo beside it
        for n, with_job in rounds:
            label = f"{n} + job" if n == 1 and with_job else n
            job = await long_job(url, args.job_steps, seed=len(found)) if with_job else None
            found[label], client[label] = await one_round(url, n, args.rounds, images, server.pid, args.stagger)
            if job is not None:
                await job.close()
            print(f"N = {label}: done ({len(found[label].quick)} quick actions)", flush=True)
        print(f"\nServer alone, over the wire (stagger {args.stagger:g} s, long job "
              f"{args.job_steps} steps beside N ≥ 2):")
        report(found)
        print("\nThis client's CPU over the actions: " + ", ".join(
            f"N = {n}: {client[n]:.1f} s ({client[n] / max(found[n].machine_cpu, 1e-9):.0%} of the busy CPU)"
            for n in client))
        if args.soak:
            counts, lost, series = await soak(url, args.soak, images, server.pid)
            report_soak(args.soak, lost, counts.failed_media, counts.exceptions, [mb for _, mb in series])


if __name__ == "__main__":
    asyncio.run(main(arguments(__doc__.split("\n\n")[0], rounds=5, soak=0)))
