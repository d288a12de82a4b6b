"""Speed of the backpropagation saliency methods and the deconvnet reconstruction.

Prints, for the demo model and torchvision's resnet50 (random weights), batch 1 on the CPU,
each method's median time as a ratio to one plain inference forward pass, all measured
side by side in one run (interleaved rounds), and captum's implementations of the same
methods for comparison::

    python bench/saliency.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.timing import interleaved_medians
from cnnvis_core import Engine
from cnnvis_core.deconv import reconstruct


def cases(engine: Engine, x: torch.Tensor, target: int, deep: str) -> dict[str, Callable[[], object]]:
    model = engine.model

    def forward() -> None:
        with torch.no_grad():
            model(x)

    out: dict[str, Callable[[], object]] = {"forward (reference)": forward}
    for method in ("gradient", "deconvnet", "guided"):
        out[f"cnnvis {method}"] = lambda m=method: engine.saliency(x, m, target)
    if hasattr(engine, "cam"):
        out["cnnvis guided_gradcam"] = lambda: engine.saliency(x, "guided_gradcam", target)
    out[f"cnnvis reconstruct {deep} (auto)"] = lambda: engine.reconstruct(x, deep, 3)
    out[f"cnnvis reconstruct {deep} (gradient rule)"] = lambda: reconstruct(engine, x, deep, 3, mechanism="gradient")
    try:
        from captum.attr import Deconvolution, GuidedBackprop, Saliency
    except ImportError:
        return out
    xg = x.clone().requires_grad_(True)
    out["captum Saliency"] = lambda: Saliency(model).attribute(xg, target=target, abs=False)
    out["captum Deconvolution"] = lambda: Deconvolution(model).attribute(xg, target=target)
    out["captum GuidedBackprop"] = lambda: GuidedBackprop(model).attribute(xg, target=target)
    return out


def bench(name: str, engine: Engine, x: torch.Tensor, deep: str, rounds: int) -> None:
    target = int(engine.logits(x).argmax())
    runs = cases(engine, x, target, deep)
    median = interleaved_medians(runs, rounds)
    base = median["forward (reference)"]
    print(f"\n{name}: one forward pass {base * 1e3:.1f} ms (median of {rounds})")
    for key, seconds in median.items():
        print(f"  {key:<48} {seconds / base:6.2f}×")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    torch.manual_seed(0)
    warnings.filterwarnings("ignore")  # captum announces its ReLU hooks on every call
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    demo = Engine.demo(device="cpu")
    bench("demo (DemoNet, 128×128)", demo, torch.randn(1, 3, 128, 128), "features.relu7", args.rounds)
    from torchvision.models import resnet50
    engine = Engine(resnet50(), device="cpu", name="resnet50")
    bench("resnet50 (random weights, 224×224)", engine, torch.randn(1, 3, 224, 224), "layer3.5.relu", args.rounds)


if __name__ == "__main__":
    main()
