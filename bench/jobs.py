"""Benchmark: data-set jobs against plain batched inference, and the Ray executor with 1 and 2 workers.

    python bench/jobs.py [--images 256] [--rounds 5] [--batch-size 32] [--ray-images 512] [--no-ray] [--threads N]

On the demo model (128×128, CPU) and ``--images`` demo samples saved as PNG files, it times side by
side, interleaved (median of ``--rounds``; wall-clock, and this process's CPU time, the steadier
measure on a machine others share):

- from the files: plain batched inference (read, decode, preprocess, forward; no hooks; the next
  batch read in a background thread as the jobs do) against the local executor's dataset-examples
  job (k = 9) and channel-statistics job on the default layers (every conv and ReLU: 14 layers),
  and the examples job checkpointing its shards into a results folder;
- from tensors in memory (the decoding left out): the plain forward against the two jobs' map and
  merge, which is what the hooks and the merge cost;
- reading alone (decode and preprocess).

Then the examples job on ``--ray-images`` files on a local Ray with 1 and 2 workers (actors), each
once, and the local executor on the same files. A Ray job starts its actors afresh (a process each
that imports torch and builds the engine): the time until the first shard comes back is shown
apart, and the rate after it.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cnnvis_core import Engine, jobs
from cnnvis_core.data import Dataset
from cnnvis_core.demo import HELD_OUT_SEED_START, sample
from cnnvis_core.jobs.api import examples_job, stats_job
from cnnvis_core.pruning import default_layers


def write_images(folder: Path, count: int) -> Dataset:
    for i in range(count):
        sample(HELD_OUT_SEED_START + 20_000_000 + i)[0].save(folder / f"{i:05d}.png")
    return Dataset.from_path(folder)


def plain(engine: Engine, ds: Dataset, batch_size: int, prefetch: bool = True) -> None:
    for batch in ds.batches(engine, batch_size, prefetch=prefetch):
        with engine.session(), torch.inference_mode():
            engine.forward(batch.x)


def mapped(engine: Engine, ds: Dataset, job, batches: list) -> None:
    state = job.empty()
    for batch in batches:
        state = job.merge(state, job.map(engine, batch, ds, state))


def medians(cases: dict, rounds: int) -> dict[str, tuple[float, float]]:
    """``{case: (median wall seconds, median CPU seconds of this process)}``, the cases interleaved in
    a shuffled order each round after one untimed round (see :func:`bench.timing.interleaved_medians`).
    CPU time counts every thread of the process (the read-ahead one too) and not the time other
    processes take: on a shared machine it is the steadier measure of the work done."""
    for fn in cases.values():
        fn()
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
    order = list(cases)
    for _ in range(rounds):
        random.Random(len(times[order[0]])).shuffle(order)
        for name in order:
            wall, cpu = time.perf_counter(), time.process_time()
            cases[name]()
            times[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    return {name: (statistics.median(t[0] for t in values), statistics.median(t[1] for t in values))
            for name, values in times.items()}


def local_bench(engine: Engine, ds: Dataset, rounds: int, batch_size: int, scratch: Path) -> None:
    examples, stats = examples_job(engine), stats_job(engine)
    batches = list(ds.batches(engine, batch_size))
    n = len(ds)
    counter = iter(range(1 << 30))
    cases = {
        "plain inference (files)": lambda: plain(engine, ds, batch_size),
        "plain, no read-ahead (files)": lambda: plain(engine, ds, batch_size, prefetch=False),
        "examples job, local (files)": lambda: jobs.dataset_examples(engine, ds, batch_size=batch_size),
        "stats job, local (files)": lambda: jobs.channel_stats(engine, ds, batch_size=batch_size),
        "examples job + checkpoints (files)": lambda: jobs.dataset_examples(
            engine, ds, batch_size=batch_size, out=scratch / f"run{next(counter)}"),
        "read + preprocess only": lambda: list(ds.batches(engine, batch_size)),
        "plain forward (tensors)": lambda: _forward_all(engine, batches),
        "examples map + merge (tensors)": lambda: mapped(engine, ds, examples, batches),
        "stats map + merge (tensors)": lambda: mapped(engine, ds, stats, batches),
    }
    found = medians(cases, rounds)
    print(f"\nlocal executor, {n} PNG files of 128×128, batch {batch_size}, {len(examples.layers)} layers, "
          f"median of {rounds} (ratios: to the plain case of the same group):")
    width = max(map(len, found))
    print(f"  {'':<{width}}  {'wall img/s':>10} {'ratio':>6}   {'CPU img/s':>10} {'ratio':>6}")
    for name, (wall, cpu) in found.items():
        base = found["plain inference (files)" if "(files)" in name else "plain forward (tensors)"]
        ratios = ("", "") if "only" in name else (f"{base[0] / wall:.2f}", f"{base[1] / cpu:.2f}")
        print(f"  {name:<{width}}  {n / wall:10.1f} {ratios[0]:>6}   {n / cpu:10.1f} {ratios[1]:>6}")


def _forward_all(engine: Engine, batches: list) -> None:
    with engine.session(), torch.inference_mode():
        for batch in batches:
            engine.forward(batch.x)


def _timed_job(engine: Engine, ds: Dataset, batch_size: int, shard: int, **options) -> tuple[float, float, int]:
    """``(seconds, seconds until the first shard came back, images by then)`` of one examples job."""
    first: list[tuple[float, int]] = []
    began = time.perf_counter()

    def progress(p: jobs.Progress) -> None:
        if p.shards >= 1 and not first:
            first.append((time.perf_counter() - began, p.done))

    jobs.dataset_examples(engine, ds, batch_size=batch_size, shard_size=shard, progress=progress, **options)
    return time.perf_counter() - began, first[0][0], first[0][1]


def ray_bench(engine: Engine, ds: Dataset, batch_size: int) -> None:
    import ray

    from cnnvis_core.jobs.ray_executor import connect
    started = time.perf_counter()
    connect(ray)
    shard = max(batch_size, len(ds) // 16 // batch_size * batch_size)
    layers = len(default_layers(engine))
    print(f"\nRay {ray.__version__}: local Ray started in {time.perf_counter() - started:.1f} s; {len(ds)} PNG files "
          f"in {len(ds) // shard} shards, examples job (k = 9, {layers} layers), batch {batch_size}")
    local, _, _ = _timed_job(engine, ds, batch_size, shard)
    print(f"  {'local executor':<16} {len(ds) / local:6.1f} img/s ({local:.1f} s)")
    for workers in (1, 2):
        seconds, first, done = _timed_job(engine, ds, batch_size, shard, executor="ray", workers=workers)
        steady = (len(ds) - done) / max(1e-9, seconds - first)
        label = f"Ray, {workers} worker{'s' if workers > 1 else ''}"
        print(f"  {label:<16} {len(ds) / seconds:6.1f} img/s ({seconds:.1f} s, of which {first:.1f} s until the first "
              f"shard came back: actors started, engines built); after that {steady:.1f} img/s, "
              f"{steady / (len(ds) / local):.2f}× local")
    ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--ray-images", type=int, default=512)
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    engine = Engine.demo(device="cpu")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs (load average "
          f"{load}); demo model")
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        (root / "images").mkdir()
        ds = write_images(root / "images", max(args.images, args.ray_images))
        local_bench(engine, ds.limit(args.images), args.rounds, args.batch_size, root)
        if not args.no_ray:
            ray_bench(engine, ds.limit(args.ray_images), args.batch_size)


if __name__ == "__main__":
    main()
