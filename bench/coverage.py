"""Model coverage: every main engine call over many architectures, as a markdown table.

Each architecture (random weights, one small input where the architecture allows it) runs:
``predict``; ``maps`` (every layer's output in one pass, each map-layout layer read as
``C×h×w``); ``cam:<method>`` for every registered CAM method on the automatic layer (the
sampled and masked ones with 2 samples); ``saliency`` (guided backpropagation); ``optimize``
(5 steps of filter optimisation on the automatic layer's channel 0); ``dead`` (dead channels
over two images). A call is ``ok``, ``refused: <reason>`` (a CnnvisError: a clear message) or
``FAILED: <error>`` (anything else). After each model: no hook left, eval mode and frozen
parameters restored (else ``FAILED`` in the ``state`` column)::

    python bench/coverage.py                        # the fast subset (tests/core/test_coverage.py's list)
    python bench/coverage.py --torchvision --timm   # every torchvision classifier and the timm list (hours on 2 cores)
    python bench/coverage.py --only resnet18,vit_b_16 --out /tmp/coverage_table.md

The table goes to ``--out`` (default ``/tmp/coverage_table.md``).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cnnvis_core import CnnvisError, Engine
from cnnvis_core import cam as cams
from cnnvis_core.hooks import hook_count

#: timm models of the issue's sweep (random weights)
TIMM_LIST = ("resnet50", "efficientnet_b0", "convnext_tiny", "vit_small_patch16_224", "deit_small_patch16_224",
             "swin_tiny_patch4_window7_224", "regnety_016", "mobilenetv3_large_100", "densenet121",
             "inception_v3", "maxvit_tiny_tf_224", "coatnet_0_rw_224", "levit_128", "beit_base_patch16_224",
             "eva02_tiny_patch14_224")


@dataclass(frozen=True)
class Outcome:
    status: str  # "ok" | "refused" | "FAILED"
    detail: str = ""

    def cell(self) -> str:
        text = self.status if not self.detail else f"{self.status}: {self.detail}"
        return text.replace("|", "/").replace("\n", " ")[:90]


def _run(call: Callable[[], object]) -> Outcome:
    try:
        note = call()
    except CnnvisError as error:
        return Outcome("refused", str(error).split(". ")[0])
    except Exception as error:  # noqa: BLE001 - the sweep records every failure
        return Outcome("FAILED", f"{type(error).__name__}: {str(error)[:120]}")
    return Outcome("ok", note if isinstance(note, str) else "")


def _check_map(result: object, size: tuple[int, int]) -> str:
    m = result.map
    if m.shape != size or m.dtype != np.float32 or not (float(m.min()) >= 0.0 and float(m.max()) <= 1.0):
        raise AssertionError(f"map of shape {m.shape} in [{m.min()}, {m.max()}] (expected {size} in [0, 1])")
    return "constant map" if float(m.max() - m.min()) == 0.0 else ""


def check_engine(engine: Engine, images: list, steps: int = 5, opt_size: int | None = None,
                 samples: int = 2, masked_channels: int = 512) -> dict[str, Outcome]:
    """Every call on ``engine`` (see the module docstring): ``{call: Outcome}``."""
    out: dict[str, Outcome] = {}
    image = images[0]
    size = tuple(engine.preprocess(image).shape[-2:])
    out["predict"] = _run(lambda: None if len(engine.predict(image, k=5)) == 5 else "fewer than 5 classes")

    def maps() -> str:
        layers = engine.layers()
        found = engine.feature_maps(image, [info.name for info in layers])
        for info in layers:
            if info.map_shape is not None and tuple(found[info.name].shape) != info.map_shape:
                raise AssertionError(f"{info.name}: {tuple(found[info.name].shape)} ≠ {info.map_shape}")
        kinds = sorted({info.layout for info in layers})
        return "layouts " + "/".join(kinds)
    out["maps"] = _run(maps)
    auto = _run(lambda: f"layer {engine.default_cam_layer()} ({engine.layer(engine.default_cam_layer()).layout})")
    out["auto layer"] = auto
    channels = engine.layer(engine.default_cam_layer()).channels if auto.status == "ok" else 0
    for method in cams.registered():
        key = f"cam:{method.name}"
        if auto.status != "ok":
            out[key] = Outcome("refused", "no CAM layer")
            continue
        if method.kind == "masked" and channels > masked_channels:
            out[key] = Outcome("skipped", f"{channels} channels")
            continue
        options = {k: samples for k in ("n_samples",) if k in method.option_names}
        out[key] = _run(lambda m=method, o=options: _check_map(engine.cam(image, m.name, **o), size))
    out["saliency"] = _run(lambda: "; ".join(engine.saliency(image, "guided").notes)[:60])
    if auto.status == "ok":
        side = opt_size or min(engine.input_size)
        out["optimize"] = _run(lambda: None if engine.optimize(engine.default_cam_layer(), 0, steps=steps, size=side)
                               else "nothing")
    out["dead"] = _run(lambda: f"{len(engine.dead_channels(images[:2]).layers)} layers")
    clean = (hook_count(engine.model) == 0 and not any(m.training for m in engine.model.modules())
             and not any(p.requires_grad for p in engine.model.parameters()))
    out["state"] = Outcome("ok") if clean else Outcome("FAILED", "hooks, train mode or gradients left")
    return out


# ---------------------------------------------------------------------------- architectures
def small_torchvision(name: str) -> tuple[nn.Module, int]:
    """A torchvision classifier with random weights and the small input size it allows."""
    import torchvision
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = torchvision.models.get_model(name, weights=None)
    side = {"inception_v3": 96, "googlenet": 64}.get(name, 64)
    if name.startswith(("vit_", "swin", "maxvit")):
        side = getattr(model, "image_size", 224)
    return model, side


def fast_subset() -> dict[str, Callable[[], tuple[nn.Module, int]]]:
    """The architectures of the fast coverage test: one small CNN per family, a tiny ViT, a small Swin
    and MaxViT, two timm models; ``{name: build() → (model, input side)}``."""
    import timm
    import torchvision
    from torchvision.models import VisionTransformer

    def tv(name: str, **kwargs: object) -> Callable[[], tuple[nn.Module, int]]:
        def build() -> tuple[nn.Module, int]:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return torchvision.models.get_model(name, weights=None, **kwargs), 64
        return build

    def tiny_vit() -> tuple[nn.Module, int]:
        model = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64)
        nn.init.normal_(model.heads.head.weight, std=0.5)  # torchvision zero-initialises it
        return model, 32

    def tiny_swin() -> tuple[nn.Module, int]:
        return torchvision.models.SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[1, 1], num_heads=[1, 2],
                                                  window_size=[4, 4], num_classes=10), 32

    def tiny_maxvit() -> tuple[nn.Module, int]:
        return torchvision.models.MaxVit(input_size=(64, 64), stem_channels=8, partition_size=2,
                                         block_channels=[16, 32], block_layers=[1, 1], head_dim=8,
                                         stochastic_depth_prob=0.0, num_classes=10), 64

    return {
        "resnet18": tv("resnet18", num_classes=10),
        "mobilenet_v3_small": tv("mobilenet_v3_small", num_classes=10),
        "shufflenet_v2_x0_5": tv("shufflenet_v2_x0_5", num_classes=10),
        "mnasnet0_5": tv("mnasnet0_5", num_classes=10),
        "squeezenet1_1": tv("squeezenet1_1", num_classes=10),
        "regnet_x_400mf": tv("regnet_x_400mf", num_classes=10),
        "efficientnet_b0": tv("efficientnet_b0", num_classes=10),
        "densenet121": tv("densenet121", num_classes=10),
        "vit (tiny config)": tiny_vit,
        "swin (tiny config)": tiny_swin,
        "maxvit (tiny config)": tiny_maxvit,
        "timm convnext_atto": lambda: (timm.create_model("convnext_atto", num_classes=10), 64),
        "timm vit_tiny_patch16_224": lambda: (timm.create_model("vit_tiny_patch16_224", img_size=64, depth=2,
                                                                num_classes=10), 64),
    }


def images_for(side: int) -> list[np.ndarray]:
    generator = np.random.default_rng(0)
    return [generator.integers(0, 256, (side, side, 3), dtype=np.uint8) for _ in range(2)]


def table(rows: dict[str, dict[str, Outcome]]) -> str:
    calls = list(dict.fromkeys(call for row in rows.values() for call in row))
    lines = ["| architecture | " + " | ".join(calls) + " |", "| --- |" + " --- |" * len(calls)]
    for name, row in rows.items():
        lines.append(f"| {name} | " + " | ".join(row[c].cell() if c in row else "" for c in calls) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torchvision", action="store_true", help="every torchvision classification architecture")
    parser.add_argument("--timm", action="store_true", help="the issue's timm list")
    parser.add_argument("--only", default="", help="comma-separated names (torchvision, else timm)")
    parser.add_argument("--out", default="/tmp/coverage_table.md")
    parser.add_argument("--masked-channels", type=int, default=64,
                        help="run Score-CAM's kin only on automatic layers with at most this many channels")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    builders: dict[str, Callable[[], tuple[nn.Module, int]]] = {}
    from cnnvis_core import zoo
    if args.only:
        for name in args.only.split(","):
            if name in zoo.list_architectures():
                builders[name] = lambda n=name: small_torchvision(n)
            else:
                import timm
                builders[f"timm {name}"] = lambda n=name: (timm.create_model(n), 224)
    else:
        if args.torchvision:
            builders.update({n: (lambda n=n: small_torchvision(n)) for n in zoo.list_architectures()})
        if args.timm:
            import timm
            builders.update({f"timm {n}": (lambda n=n: (timm.create_model(n), 224)) for n in TIMM_LIST})
        if not builders:
            builders = fast_subset()
    rows: dict[str, dict[str, Outcome]] = {}
    for name, build in builders.items():
        start = time.perf_counter()
        try:
            torch.manual_seed(0)
            model, side = build()
            engine = Engine(model, input_size=(side, side), device="cpu", name=name)
            rows[name] = check_engine(engine, images_for(side), masked_channels=args.masked_channels)
        except Exception as error:  # noqa: BLE001
            rows[name] = {"build": Outcome("FAILED", f"{type(error).__name__}: {str(error)[:100]}")}
        print(f"{name}: {time.perf_counter() - start:.1f} s", flush=True)
        Path(args.out).write_text(table(rows))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
