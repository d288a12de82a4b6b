"""Speed of filter optimisation: batching the units, and stopping the forward at the target layer.

For the demo model on the CPU, all channels of one layer optimised (a) as one batch and
(b) one at a time, at the same steps and size, and the batch (c) with the forward stopped at
the target layer and (d) running the whole network; each case's median over interleaved
rounds, printed with the ratios::

    python bench/optimize.py [--layer features.relu3] [--steps 8] [--size 64] [--rounds 3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.timing import interleaved_medians
from cnnvis_core import Engine
from cnnvis_core.optimize.cache import results_cache


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layer", default="features.relu3")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    engine = Engine.demo(device="cpu")
    channels = engine.layer(args.layer).channels
    cache = results_cache(engine)

    def run(units: list[int], **extra) -> None:
        cache.clear()  # measure the work, not the cache
        engine.optimize(args.layer, units, steps=args.steps, size=args.size, **extra)

    cases = {
        "batched, stopped at the layer": lambda: run(list(range(channels))),
        "one by one, stopped at the layer": lambda: [run([c]) for c in range(channels)],
        "batched, whole network": lambda: run(list(range(channels)), stop_early=False),
    }
    run([0])  # warm-up (one unit: a warm-up round of every case would cost a whole round)
    median = interleaved_medians(cases, args.rounds, warm_up=False)
    print(f"demo model, {args.layer} ({channels} channels), {args.steps} steps at {args.size}×{args.size} px, "
          f"lucid preset, {args.threads} CPU threads, median of {args.rounds} interleaved rounds")
    for name, seconds in median.items():
        print(f"  {name:34s} {seconds:8.2f} s")
    batched = median["batched, stopped at the layer"]
    print(f"  one by one / batched:           {median['one by one, stopped at the layer'] / batched:6.2f}×")
    print(f"  whole network / stopped:        {median['batched, whole network'] / batched:6.2f}×")


if __name__ == "__main__":
    main()
