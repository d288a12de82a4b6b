"""Benchmark: capturing every layer's output, and drawing a 512-channel grid.

    python bench/features.py [--runs 7]

For resnet50 (random weights, 224×224) and the demo model (128×128) it times, side by side in
one run and interleaved, one plain forward pass (``engine.logits``) and one forward pass that
captures the output of EVERY layer (``engine.feature_maps`` with all names, what the layer
browser does once per image), and prints the median of each and their ratio. It then times
drawing all 512 channels of resnet50's ``layer2`` output (512×28×28) as one grid image, without
and with PNG encoding (the dashboard's ``sheet_png``, zlib level 1, and Pillow's default level 6
for comparison), and one 64-channel page, as ratios to the plain forward pass.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.timing import interleaved_medians
from cnnvis_core import Engine
from cnnvis_core import features as fx
from cnnvis_core.render import to_png_bytes
from cnnvis_core.sheets import sheet_png


def capture_bench(label: str, engine: Engine, runs: int) -> float:
    x = torch.randn(1, 3, *engine.input_size, generator=torch.Generator().manual_seed(0))
    names = [layer.name for layer in engine.layers()]
    maps = engine.feature_maps(x, names)
    megabytes = sum(t.numel() * t.element_size() for t in maps.values()) / 2 ** 20
    result = interleaved_medians({"plain": lambda: engine.logits(x),
                                  "capture": lambda: engine.feature_maps(x, names)}, runs)
    print(f"{label}: {len(names)} layers, {megabytes:.0f} MiB of activations · plain forward "
          f"{result['plain'] * 1e3:.0f} ms · capture all layers {result['capture'] * 1e3:.0f} ms · "
          f"ratio {result['capture'] / result['plain']:.2f}×")
    return result["plain"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="timed runs per measurement (median)")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU, median of {args.runs} runs")

    import torchvision
    resnet = Engine(torchvision.models.resnet50(), device="cpu", name="resnet50 (random weights)")
    plain = capture_bench("resnet50 224×224", resnet, args.runs)
    capture_bench("demo model 128×128", Engine.demo(device="cpu"), args.runs)

    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    layer2 = resnet.feature_maps(x, ["layer2"])["layer2"]            # 512×28×28
    page = fx.channel_page(layer2, 0, 64, "mean").channels
    result = interleaved_medians({
        "grid": lambda: fx.channel_grid(layer2, cmap="viridis"),
        "grid+png": lambda: sheet_png(fx.channel_grid(layer2, cmap="viridis")),
        "grid+png6": lambda: to_png_bytes(fx.channel_grid(layer2, cmap="viridis")),
        "page": lambda: sheet_png(fx.channel_grid(layer2, page, cmap="viridis")),
    }, args.runs)
    image = fx.channel_grid(layer2, cmap="viridis")
    print(f"512-channel grid of resnet50 layer2 (512×28×28 → one {image.shape[1]}×{image.shape[0]} image): "
          f"{result['grid'] * 1e3:.0f} ms ({result['grid'] / plain:.2f}× a resnet50 forward), "
          f"{result['grid+png'] * 1e3:.0f} ms with PNG encoding ({result['grid+png'] / plain:.2f}×; "
          f"{result['grid+png6'] * 1e3:.0f} ms at Pillow's default PNG level); "
          f"a 64-channel page ordered by mean, as PNG: {result['page'] * 1e3:.0f} ms ({result['page'] / plain:.2f}×)")


if __name__ == "__main__":
    main()
