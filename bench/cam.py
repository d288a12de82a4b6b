"""Speed and pointing game of the class activation maps.

Speed: for the demo model and torchvision's resnet50 (random weights), batch 1 on the CPU,
each method's median time as a ratio to one plain inference forward pass, measured side by
side in one run (interleaved rounds), with pytorch-grad-cam (``grad-cam`` on PyPI) and
torchcam where they are installed. Pointing game: on fresh demo samples with ground-truth
masks, how often each method's maximum falls on the object of the class asked for (single
objects, and each class of two-object images), on the object's silhouette
(:func:`cnnvis_core.cam.silhouette`: a ring's hole counts as the ring) and on the exact mask::

    python bench/cam.py                 # both parts
    python bench/cam.py --speed         # only the timings (Score-CAM on the demo model; --resnet-scorecam:
                                        #   on resnet50 too, 2,048 forwards per library; --no-scorecam: none)
    python bench/cam.py --pointing      # only the pointing game (--images N, --masked-images M)
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from copy import deepcopy
from pathlib import Path

# pytorch-grad-cam's Score-CAM draws a tqdm bar per call; tqdm reads this when imported (torch imports it)
os.environ.setdefault("TQDM_DISABLE", "1")

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.timing import interleaved_medians, timed
from cnnvis_core import Engine
from cnnvis_core.cam import METHODS, SHARED, pointing_game, silhouette
from cnnvis_core.cam.base import unit_scale_array, upsample, weighted_sum
from cnnvis_core.cam.declaration import method as cam_method
from cnnvis_core.demo import HELD_OUT_SEED_START, sample

#: seeds of the pointing game: held out from training, tests and the dashboard's samples
POINTING_SEED_START = HELD_OUT_SEED_START + 30_000_000
GRADIENT_METHODS = ("cam", "gradcam", "gradcam++", "xgradcam", "layercam", "smoothgradcam++")


# ---------------------------------------------------------------------------- other libraries
def grad_cam_cases(model: torch.nn.Module, layer: str, x: torch.Tensor, target: int) -> dict[str, Callable]:
    """pytorch-grad-cam's versions (their default settings), if installed."""
    try:
        from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, LayerCAM, ScoreCAM, XGradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError:
        return {}
    module = dict(model.named_modules())[layer]
    targets = [ClassifierOutputTarget(target)]
    out = {}
    for name, cls in (("gradcam", GradCAM), ("gradcam++", GradCAMPlusPlus), ("xgradcam", XGradCAM),
                      ("layercam", LayerCAM), ("scorecam", ScoreCAM)):
        def run(cls=cls) -> None:
            with cls(model=model, target_layers=[module]) as extractor:
                extractor(input_tensor=x, targets=targets)
        out[f"pytorch-grad-cam {name}"] = run
    return out


def torchcam_cases(model: torch.nn.Module, layer: str, x: torch.Tensor, target: int) -> dict[str, Callable]:
    """torchcam's versions (their default settings), if installed."""
    try:
        from torchcam import methods
    except ImportError:
        return {}
    logging.getLogger("torchcam").setLevel(logging.ERROR)  # CAM logs its guess of the head at every call
    shape = tuple(x.shape[1:])
    out = {}
    for name, cls in (("cam", methods.CAM), ("gradcam", methods.GradCAM), ("gradcam++", methods.GradCAMpp),
                      ("xgradcam", methods.XGradCAM), ("layercam", methods.LayerCAM),
                      ("smoothgradcam++", methods.SmoothGradCAMpp), ("scorecam", methods.ScoreCAM)):
        def run(cls=cls, name=name) -> None:
            with cls(model, layer, input_shape=shape) as extractor:
                if name in ("cam", "scorecam"):
                    with torch.no_grad():
                        scores = model(x)
                else:
                    scores = model(x)
                extractor(target, scores)
        out[f"torchcam {name}"] = run
    return out


# ---------------------------------------------------------------------------- speed
def trainable_copy(model: torch.nn.Module) -> torch.nn.Module:
    copy = deepcopy(model).eval()
    for param in copy.parameters():
        param.requires_grad_(True)
    return copy


def speed(engine: Engine, title: str, x: torch.Tensor, rounds: int, scorecam: bool) -> None:
    model, layer = engine.model, engine.default_cam_layer()
    target = int(engine.logits(x).argmax())

    def forward() -> None:
        with torch.inference_mode():
            model(x)

    cases: dict[str, Callable[[], object]] = {"forward (reference)": forward,
                                              "floor: hooked forward + torch.autograd.grad, no map": floor(engine, x),
                                              "floor + gradcam++ map (cnnvis maths, no engine)":
                                                  floor(engine, x, "gradcam++")}
    for method in GRADIENT_METHODS:
        cases[f"cnnvis {method}"] = lambda m=method: engine.cam(x, m)
    cases["cnnvis cams (5 shared methods)"] = lambda: engine.cams(x, list(SHARED))
    cases["cnnvis top-5 gradcam"] = lambda: engine.cam_targets(x, "gradcam", 5)
    usual = trainable_copy(model)  # how the other libraries are used: weights that require grad
    others = {**grad_cam_cases(usual, layer, x, target), **torchcam_cases(usual, layer, x, target)}
    slow = {name: fn for name, fn in others.items() if name.endswith("scorecam")}
    cases.update({name: fn for name, fn in others.items() if name not in slow})
    if "torchcam gradcam" in others:
        cases["torchcam top-5 gradcam (5 calls)"] = lambda: [others["torchcam gradcam"]() for _ in range(5)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        times = interleaved_medians(cases, rounds)
        if scorecam:
            slow = {"cnnvis scorecam": lambda: engine.cam(x, "scorecam"),
                    "cnnvis scorecam, precision='bfloat16' (opt-in)":
                        lambda: engine.cam(x, "scorecam", precision="bfloat16"), **slow}
            times.update(median_times_once(slow))
    base = times["forward (reference)"]
    print(f"\n## {title}: layer {layer}, input {tuple(x.shape)}, one forward = {base * 1000:.1f} ms\n")
    print("| method | time | × forward |\n| --- | ---: | ---: |")
    for name, seconds in times.items():
        print(f"| {name} | {seconds * 1000:.1f} ms | {seconds / base:.2f} |")
    goals(times, base, scorecam)
    if scorecam:
        masked_throughput(engine, x, times["cnnvis scorecam"])


def floor(engine: Engine, x: torch.Tensor, method: str | None = None) -> Callable[[], None]:
    """What any gradient CAM built as the issue asks costs at least: a forward with a hook that
    makes the layer's output an autograd leaf, and one ``torch.autograd.grad`` of the top logit
    to it. No engine, no checks, no map: the bound the ratios of the gradient methods sit on.

    With ``method`` (a shared-pass method with channel weights, e.g. ``gradcam++``), the map too, from
    cnnvis's own formula, upsampling and scaling, still without the engine (no input, layer or
    target checks, no lock, no eval-mode guard, no result objects): what the engine adds is the
    difference between this row and the method's."""
    model, module = engine.model, engine.module(engine.default_cam_layer())
    size = tuple(x.shape[-2:])
    weights = cam_method(method).weights if method is not None else None
    seen: dict[str, torch.Tensor] = {}

    def leaf(_module: torch.nn.Module, _inputs: object, output: torch.Tensor) -> torch.Tensor:
        seen["a"] = output.detach().requires_grad_(True)
        return seen["a"].clone()

    def run() -> None:
        handle = module.register_forward_hook(leaf)
        try:
            logits = model(x)
        finally:
            handle.remove()
        (grad,) = torch.autograd.grad(logits[0, int(logits.argmax())], seen["a"])
        if weights is not None:
            activation = seen["a"].detach()[0]
            raw = torch.relu(weighted_sum(weights(activation, grad), activation))
            unit_scale_array(upsample(raw.numpy(), size))

    return run


def masked_throughput(engine: Engine, x: torch.Tensor, seconds: float) -> None:
    """How close Score-CAM runs to the machine's float32 speed: the FLOPs of one call (torch's
    FLOP counter: every convolution and matrix product of its forwards) per second of its time."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as whole:
        engine.cam(x, "scorecam")
    with FlopCounterMode(display=False) as one, torch.inference_mode():
        engine.model(x)
    flops = whole.get_total_flops()
    print(f"- Score-CAM: {flops / 1e9:.1f} GFLOP in all (about {flops / one.get_total_flops():.0f} forwards' worth) "
          f"in {seconds * 1000:.0f} ms: {flops / seconds / 1e9:.0f} GFLOP/s in float32")


def goals(times: dict[str, float], base: float, scorecam: bool) -> None:
    """The issue's speed goals, met or not."""
    single = max(times[f"cnnvis {m}"] for m in SHARED) / base
    all_five = times["cnnvis cams (5 shared methods)"] / base
    checks = [(f"any single shared-pass CAM ({', '.join(SHARED)}) ≤ 1.15× forward", single, 1.15),
              ("all five shared-pass CAMs together ≤ 1.3× forward", all_five, 1.3),
              ("top-5 classes' Grad-CAMs ≤ 1.5× forward", times["cnnvis top-5 gradcam"] / base, 1.5)]
    if scorecam and "torchcam scorecam" in times:
        checks.append(("Score-CAM ≤ 0.5× torchcam's time", times["cnnvis scorecam"] / times["torchcam scorecam"], 0.5))
    print()
    for text, value, limit in checks:
        print(f"- {text}: {value:.2f} — {'met' if value <= limit else 'MISSED'}")


def median_times_once(cases: dict[str, Callable[[], object]], quick: float = 2.0) -> dict[str, float]:
    """Long cases: each once, in turn; those that took under ``quick`` seconds four more
    times, interleaved, and the median of their five."""
    times = {name: [timed(fn)] for name, fn in cases.items()}
    again = [name for name, values in times.items() if values[0] < quick]
    for _ in range(4):
        for name in again:
            times[name].append(timed(cases[name]))
    return {name: statistics.median(values) for name, values in times.items()}


# ---------------------------------------------------------------------------- pointing game
MASKED = ("scorecam", "sscam", "iscam")


def pointing(engine: Engine, images: int, masked_images: int) -> None:
    singles = [sample(POINTING_SEED_START + i) for i in range(images)]
    pairs = [sample(POINTING_SEED_START + 100_000 + i, n_objects=2) for i in range(images)]
    pairs = [p for p in pairs if p[1][0] != p[1][1]]
    print(f"\n## Pointing game: demo model, {len(singles)} single-object images, {len(pairs)} two-object images "
          f"(two classes each), seeds from {POINTING_SEED_START}; Score-CAM kin on the first {masked_images} of "
          "each (they run one forward per channel and sample)\n")
    print("| method | single object | single, exact mask | each of two objects | each of two, exact mask | "
          "images | time per image |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for method in METHODS:
        n = min(images, masked_images) if method in MASKED else images
        started = time.perf_counter()
        single, single_strict = [], []
        for img, labels, masks in singles[:n]:
            heat = engine.cam(img, method, target=labels[0]).map
            single.append(pointing_game(heat, silhouette(masks[0])))
            single_strict.append(pointing_game(heat, masks[0]))
        double, double_strict = [], []
        for img, labels, masks in pairs[:n]:
            for m, mask in zip(engine.cam_targets(img, method, list(labels)), masks):
                double.append(pointing_game(m.map, silhouette(mask)))
                double_strict.append(pointing_game(m.map, mask))
        per_image = (time.perf_counter() - started) / (len(single) + len(double) // 2)
        print(f"| {method} | {_rate(single)} | {_rate(single_strict)} | {_rate(double)} | {_rate(double_strict)} | "
              f"{len(single)} + {len(double) // 2} | {per_image * 1000:.0f} ms |", flush=True)


def _rate(hits: list[bool]) -> str:
    return f"{sum(hits) / len(hits):.1%}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speed", action="store_true", help="only the timings")
    parser.add_argument("--pointing", action="store_true", help="only the pointing game")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--masked-images", type=int, default=50,
                        help="images per set for scorecam, sscam and iscam (slow: a forward per channel and sample)")
    parser.add_argument("--no-scorecam", action="store_true", help="skip the long Score-CAM timings")
    parser.add_argument("--resnet-scorecam", action="store_true",
                        help="time Score-CAM on resnet50 too (2,048 masked forwards per library: many minutes)")
    args = parser.parse_args()
    both = not (args.speed or args.pointing)
    demo = Engine.demo(device="cpu")
    if args.speed or both:
        x = demo.preprocess(sample(POINTING_SEED_START - 1)[0])
        speed(demo, "Demo model (DemoNet, 128×128)", x, args.rounds, not args.no_scorecam)
        resnet = Engine.from_torchvision("resnet50", weights=None, device="cpu")
        speed(resnet, "resnet50 (random weights, 224×224)", resnet.preprocess(sample(POINTING_SEED_START - 1)[0]),
              max(3, args.rounds // 3), args.resnet_scorecam and not args.no_scorecam)
    if args.pointing or both:
        pointing(demo, args.images, args.masked_images)


if __name__ == "__main__":
    main()
