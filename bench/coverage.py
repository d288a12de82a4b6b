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
    nohup nice -n 10 python bench/coverage.py --torchvision --timm --cap 240 --out /tmp/table.md &
    python bench/coverage.py --only resnet18,vit_b_16 --out /tmp/coverage_table.md

The sweep runs each architecture in its own process on ``--threads`` threads (default 1: one
core), CNNs first and transformers last, each for at most ``--cap`` seconds (the calls it did
not reach are ``timed out``); the table is rewritten after every architecture, so a run cut
short keeps what it reached. Input sizes: 64 px for CNNs (96 for Inception v3), torchvision ViTs
built for 4×4 patches (``image_size=4·patch``), Swin at 64 px (it pads to its windows), MaxViT
and timm models at their native size. The table goes to ``--out`` (default
``/tmp/coverage_table.md``: short cells and the reasons under the table) and the table with every
cell's detail to ``<out>.full.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
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


class _Reported(dict):
    """A ``{call: Outcome}`` dict that hands every outcome to ``report`` as it is set."""

    def __init__(self, report: Callable[[str, Outcome], None] | None) -> None:
        super().__init__()
        self._report = report

    def __setitem__(self, key: str, value: Outcome) -> None:
        super().__setitem__(key, value)
        if self._report is not None:
            self._report(key, value)


def check_engine(engine: Engine, images: list, steps: int = 5, opt_size: int | None = None,
                 samples: int = 2, masked_channels: int = 512,
                 report: Callable[[str, Outcome], None] | None = None) -> dict[str, Outcome]:
    """Every call on ``engine`` (see the module docstring): ``{call: Outcome}``; ``report(call, outcome)``
    is called as each outcome is known (the sweep streams them, so a time cap keeps what was reached)."""
    out: dict[str, Outcome] = _Reported(report)
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
    return dict(out)


# ---------------------------------------------------------------------------- architectures
def small_torchvision(name: str) -> tuple[nn.Module, int]:
    """A torchvision classifier with random weights and the small input size it allows: 64 px (96 for
    Inception v3); a ViT built for a 4×4 patch grid (the same blocks, 12× fewer tokens; its head,
    which torchvision zero-initialises, drawn from N(0, 0.02²) so that gradients reach the blocks);
    MaxViT at its native 224 px (its 7×7 partitions need it)."""
    import torchvision
    kwargs: dict[str, object] = {}
    if name.startswith("vit_"):
        kwargs["image_size"] = 4 * int(name.rsplit("_", 1)[-1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = torchvision.models.get_model(name, weights=None, **kwargs)
    if name.startswith("vit_"):
        nn.init.normal_(model.heads.head.weight, std=0.02)
    side = {"inception_v3": 96}.get(name, 64)
    if name.startswith(("vit_", "maxvit")):
        side = int(getattr(model, "image_size", 224))
    if name.startswith("maxvit"):
        side = 224
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
    """Every outcome with its detail (cut at 90 characters)."""
    calls = list(dict.fromkeys(call for row in rows.values() for call in row))
    lines = ["| architecture | " + " | ".join(calls) + " |", "| --- |" + " --- |" * len(calls)]
    for name, row in rows.items():
        lines.append(f"| {name} | " + " | ".join(row[c].cell() if c in row else "" for c in calls) + " |")
    return "\n".join(lines) + "\n"


def _general(reason: str) -> str:
    """A reason without what names one model (quoted layer names, counts), so that models share it."""
    reason = re.sub(r"\s*\('[^'\s]+'\)", "", reason)
    reason = re.sub(r"(?<!\w)'[^'\s]+'", "'…'", reason)
    return re.sub(r"\b\d+\b", "N", reason).replace("|", "/")


def compact_table(rows: dict[str, dict[str, Outcome]]) -> str:
    """The table for the README: short cells (``ok``, ``ok (constant map)``, ``skipped``, ``no [n]`` for a
    refusal, ``FAILED [n]``, ``timed out``; the automatic layer and the layouts named), and the reasons
    ``[n]`` listed in full under it."""
    calls = list(dict.fromkeys(call for row in rows.values() for call in row))
    reasons: dict[str, int] = {}

    def cell(call: str, outcome: Outcome | None) -> str:
        if outcome is None:
            return ""
        if outcome.status == "ok" and call in ("auto layer", "maps"):
            return f"`{outcome.detail.removeprefix('layouts ').split(' (')[0].removeprefix('layer ')}`"
        if outcome.status == "ok":
            return "ok (constant map)" if outcome.detail == "constant map" else "ok"
        if outcome.status in ("skipped", "timed out"):
            return outcome.status
        number = reasons.setdefault(_general(f"{outcome.status}: {outcome.detail}"), len(reasons) + 1)
        return f"{'no' if outcome.status == 'refused' else outcome.status} [{number}]"

    heads = [c.removeprefix("cam:") for c in calls]
    lines = ["| architecture | " + " | ".join(heads) + " |", "| --- |" + " --- |" * len(calls)]
    for name, row in rows.items():
        lines.append(f"| {name} | " + " | ".join(cell(c, row.get(c)) for c in calls) + " |")
    notes = [f"[{n}] {text}" for text, n in reasons.items()]
    notes.append("skipped: Score-CAM's kin, on an automatic layer of more channels than `--masked-channels`")
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {note}" for note in notes) + "\n"


def _builders(args: argparse.Namespace) -> dict[str, Callable[[], tuple[nn.Module, int]]]:
    """``{row name: build}`` for the command line's choice: ``--only``, the sweep or the fast subset."""
    from cnnvis_core import zoo
    builders: dict[str, Callable[[], tuple[nn.Module, int]]] = {}
    names = [n for n in args.only.split(",") if n]
    for name in names:  # "timm resnet50" is timm's, "resnet50" torchvision's (a name both have)
        if name.startswith("timm "):
            timm_name = name.removeprefix("timm ")
            builders[name] = lambda n=timm_name: _timm(n)
        elif name in zoo.list_architectures():
            builders[name] = lambda n=name: small_torchvision(n)
        else:
            builders[f"timm {name}"] = lambda n=name: _timm(n)
    if not names and args.torchvision:
        builders.update({n: (lambda n=n: small_torchvision(n)) for n in zoo.list_architectures()})
    if not names and args.timm:
        builders.update({f"timm {n}": (lambda n=n: _timm(n)) for n in TIMM_LIST})
    return builders if builders or names else fast_subset()


def _timm(name: str) -> tuple[nn.Module, int]:
    import timm
    return timm.create_model(name), 224


def _transformer_last(name: str) -> tuple[int, str]:
    return (name.removeprefix("timm ").startswith(("vit", "swin", "maxvit", "deit", "beit", "eva", "coat", "levit")),
            name)


def _check_one(name: str, build: Callable[[], tuple[nn.Module, int]], args: argparse.Namespace,
               report: Callable[[str, Outcome], None] | None = None) -> dict[str, Outcome]:
    try:
        torch.manual_seed(0)
        model, side = build()
        engine = Engine(model, input_size=(side, side), device="cpu", name=name)
        return check_engine(engine, images_for(side), steps=args.steps, masked_channels=args.masked_channels,
                            report=report)
    except Exception as error:  # noqa: BLE001 - the sweep records every failure
        outcome = Outcome("FAILED", f"{type(error).__name__}: {str(error)[:100]}")
        if report is not None:
            report("build", outcome)
        return {"build": outcome}


def _child(name: str, args: argparse.Namespace) -> None:
    """Run one architecture and print each outcome as a JSON line (the parent reads them)."""
    build = _builders(argparse.Namespace(**{**vars(args), "only": name}))
    (row, builder), = build.items()

    def report(call: str, outcome: Outcome) -> None:
        print(json.dumps([call, outcome.status, outcome.detail]), flush=True)
    _check_one(row, builder, args, report)


def _in_process(row: str, args: argparse.Namespace) -> dict[str, Outcome]:
    """One architecture in a child process for at most ``args.cap`` seconds; what it reached."""
    command = [sys.executable, __file__, "--child", row, "--steps", str(args.steps), "--threads", str(args.threads),
               "--masked-channels", str(args.masked_channels)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    with open(os.devnull, "w") as quiet:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=quiet, text=True, env=env)
    try:
        stdout, _ = process.communicate(timeout=args.cap)
        late = None
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, _ = process.communicate()
        late = Outcome("timed out", f"over {args.cap:.0f} s")
    row_out: dict[str, Outcome] = {}
    for line in stdout.splitlines():
        if line.startswith("["):
            call, status, detail = json.loads(line)
            row_out[call] = Outcome(status, detail)
    if late is not None:
        row_out["timed out"] = late
    elif not row_out or ("state" not in row_out and "build" not in row_out):
        row_out["build"] = Outcome("FAILED", f"the process ended with code {process.returncode}")
    return row_out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torchvision", action="store_true", help="every torchvision classification architecture")
    parser.add_argument("--timm", action="store_true", help="the issue's timm list")
    parser.add_argument("--only", default="", help="comma-separated names (torchvision, else timm)")
    parser.add_argument("--out", default="/tmp/coverage_table.md")
    parser.add_argument("--masked-channels", type=int, default=64,
                        help="run Score-CAM's kin only on automatic layers with at most this many channels")
    parser.add_argument("--steps", type=int, default=5, help="filter optimisation steps")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per architecture (1: one core)")
    parser.add_argument("--cap", type=float, default=0.0,
                        help="seconds per architecture, each in its own process (0: no cap, in this process)")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(max(1, args.threads))
    if args.child:
        _child(args.child, args)
        return
    builders = _builders(args)
    rows: dict[str, dict[str, Outcome]] = {}
    for name in sorted(builders, key=_transformer_last):
        start = time.perf_counter()
        rows[name] = _in_process(name, args) if args.cap > 0 else _check_one(name, builders[name], args)
        print(f"{name}: {time.perf_counter() - start:.1f} s", flush=True)
        Path(args.out).write_text(compact_table(rows))
        Path(args.out).with_suffix(".full.md").write_text(table(rows))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
