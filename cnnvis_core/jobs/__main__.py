"""Command line: ``python -m cnnvis_core.jobs examples|stats|cam-quality --model … --data … --out …``.

Examples::

    python -m cnnvis_core.jobs examples --model demo --data val/ --out results/ex --k 9
    python -m cnnvis_core.jobs stats --model resnet50 --data val.tar --out results/st --layers layer3 layer4
    python -m cnnvis_core.jobs cam-quality --model demo --data demo:500 --out results/cq --methods gradcam cam
    python -m cnnvis_core.jobs stats --model resnet18 --weights my.pth --data val/ --out r --executor ray \\
        --ray-address ray://head:10001

    python -m cnnvis_core.jobs atlas --result results/ex --out site/ --layers features.relu7

``--data demo:N`` is the demo generator's N samples (with masks). ``atlas`` writes the static unit
atlas of a finished dataset-examples result (HTML + PNG; see :mod:`cnnvis_core.atlas.export`),
with the model built from the result's manifest (``--no-model``: the stored figures and crops only).
A progress bar goes to stderr (plain text; one line every few seconds when stderr is not a
terminal); the result's folder and a summary to stdout. Stopped (Ctrl-C) or crashed, the same
command resumes from the finished shards.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

from ..atlas.export import export as atlas_export
from ..data import Dataset
from ..engine import Engine
from ..errors import CnnvisError
from ..spec import ModelSpec
from . import api
from .base import Progress
from .models import build, check_same
from .results import CamQuality, ChannelStats, DatasetExamples, Result, load

_COMMANDS = ("examples", "stats", "cam-quality")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cnnvis_core.jobs",
                                     description="Run a cnnvis job over a data set and save its result.")
    parser.add_argument("job", choices=_COMMANDS, help="the job to run; or `atlas` (see `atlas --help`) to export "
                                                       "the unit atlas of a dataset-examples result")
    parser.add_argument("--model", required=True, help="'demo' or a torchvision architecture (resnet50, vgg16…)")
    parser.add_argument("--weights", default="DEFAULT",
                        help="torchvision weights: DEFAULT (pretrained), a weights name, 'none' (random) or a file")
    parser.add_argument("--data", required=True,
                        help="a folder, an ImageFolder tree, a .zip/.tar archive, or demo:N (demo samples)")
    parser.add_argument("--out", required=True, help="results folder (checkpoints go there too)")
    parser.add_argument("--layers", nargs="+", default=None, help="layer names (default: every conv and ReLU)")
    parser.add_argument("--k", type=int, default=9, help="examples: images kept per channel")
    parser.add_argument("--methods", nargs="+", default=["gradcam"], help="cam-quality: CAM methods")
    parser.add_argument("--steps", type=int, default=32, help="cam-quality: steps of each deletion/insertion curve")
    parser.add_argument("--limit", type=int, default=None, help="only the first N images")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--shard-size", type=int, default=None)
    parser.add_argument("--executor", choices=api.EXECUTORS, default=None,
                        help="local (default) or ray (the default when --ray-address or RAY_ADDRESS is given)")
    parser.add_argument("--ray-address", default=None, help="a Ray cluster's address (default: RAY_ADDRESS, "
                                                            "else a local Ray)")
    parser.add_argument("--workers", type=int, default=None, help="ray: actors (default: one per GPU, else half "
                                                                  "the CPUs)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--restart", action="store_true", help="drop finished shards in --out and start over")
    return parser


class Bar:
    """A text progress bar on ``stream``: redrawn in place on a terminal, else a line every ``every`` s."""

    def __init__(self, stream=sys.stderr, width: int = 30, every: float = 5.0) -> None:
        self.stream, self.width, self.every = stream, width, every
        self.tty = stream.isatty()
        self.last = 0.0

    def __call__(self, progress: Progress) -> None:
        now = time.monotonic()
        final = progress.shards >= progress.shard_count
        if not self.tty and not final and now - self.last < self.every:
            return
        self.last = now
        filled = int(self.width * progress.fraction)
        line = f"[{'#' * filled}{'.' * (self.width - filled)}] {progress.fraction:4.0%} {progress}"
        self.stream.write(("\r" + line + "\x1b[K") if self.tty else line + "\n")
        if self.tty and final:
            self.stream.write("\n")
        self.stream.flush()

    def units(self, done: int, total: int) -> None:
        """The bar for ``done`` of ``total`` units (the atlas export)."""
        now = time.monotonic()
        if not self.tty and done < total and now - self.last < self.every:
            return
        self.last = now
        filled = int(self.width * done / max(total, 1))
        line = f"[{'#' * filled}{'.' * (self.width - filled)}] {done}/{total} units"
        self.stream.write(("\r" + line + "\x1b[K") if self.tty else line + "\n")
        if self.tty and done >= total:
            self.stream.write("\n")
        self.stream.flush()


def _dataset(text: str, limit: int | None) -> Dataset:
    if text.startswith("demo:"):
        ds = Dataset.demo(int(text.removeprefix("demo:")))
        return ds if limit is None else ds.limit(limit)
    return Dataset.from_path(text, limit=limit)


def _engine(model: str, weights: str, device: str | None) -> Engine:
    if model == "demo":
        return Engine.demo(device=device)
    return Engine.from_torchvision(model, None if weights.lower() == "none" else weights, device=device)


def summary(result: Result) -> str:
    """A few lines about a finished result, for the terminal."""
    lines = [f"{result.kind}: {result.images} images, {len(result.skipped)} skipped"]
    if isinstance(result, DatasetExamples):
        layer = result.layers[-1]
        best = result.top(layer, 0)[0]
        lines.append(f"  {len(result.layers)} layers × top {result.k}; e.g. {layer} channel 0: {best.path} "
                     f"(activation {best.activation:.3g} at {best.position}, box {best.box})")
    elif isinstance(result, ChannelStats):
        dead = result.dead(0.0)
        lines.append(f"  {len(result.layers)} layers; dead channels (peak = 0): {dead.total}")
    elif isinstance(result, CamQuality):
        for method, q in result.summary.items():
            point = f", pointing game {q.pointing.mean:.1%}" if q.pointing else ""
            lines.append(f"  {method}: deletion AUC {q.deletion.mean:.3f} [{q.deletion.low:.3f}, {q.deletion.high:.3f}]"
                         f", insertion AUC {q.insertion.mean:.3f} [{q.insertion.low:.3f}, {q.insertion.high:.3f}]"
                         f"{point}")
    return "\n".join(lines)


def _atlas_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cnnvis_core.jobs atlas",
                                     description="Write the static unit atlas (HTML + PNG) of a dataset-examples "
                                                 "result; it opens in any browser without Python.")
    parser.add_argument("--result", required=True, help="a finished dataset-examples results folder")
    parser.add_argument("--out", required=True, help="the folder to write the site into")
    parser.add_argument("--layers", nargs="+", default=None, help="layers of the result (default: all)")
    parser.add_argument("--stats", default=None, help="a channel-statistics result of the same model and data "
                                                      "set (peak, mean and dead marks from it)")
    parser.add_argument("--eps", type=float, default=0.0, help="dead channels: peak ≤ eps (default 0)")
    parser.add_argument("--no-model", action="store_true", help="do not build the model: no maps over the crops, "
                                                               "kernels or logit view")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    return parser


def _atlas_model(result: Result, device: str | None) -> Engine:
    """The model of ``result``, built from its manifest's spec and checked against its weights hash."""
    spec = result.manifest["model"].get("spec")
    if not spec:
        raise CnnvisError("This result's manifest does not say how to build its model; use --no-model.")
    engine = build(ModelSpec.from_dict(spec), device)
    check_same(engine, result.manifest["model"]["weights_sha256"])
    return engine


def atlas_main(argv: Sequence[str]) -> int:
    """``atlas --result DIR --out SITE [--layers …]``: the static export."""
    args = _atlas_parser().parse_args(argv)
    try:
        result = load(args.result)
        if not isinstance(result, DatasetExamples):
            raise CnnvisError(f"{args.result} holds a {result.kind} result; the atlas needs dataset examples.")
        stats = load(args.stats) if args.stats else None
        if stats is not None and not isinstance(stats, ChannelStats):
            raise CnnvisError(f"{args.stats} holds a {stats.kind} result, not channel statistics.")
        engine = None if args.no_model else _atlas_model(result, args.device)
        bar = Bar()
        report = atlas_export(result, args.out, args.layers, engine, stats, args.eps,
                              progress=lambda done, total: bar.units(done, total))
    except CnnvisError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {report.pages} pages and {report.images} pictures to {os.path.abspath(args.out)}; "
          f"open {os.path.join(os.path.abspath(args.out), 'index.html')}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["atlas"]:
        return atlas_main(argv[1:])
    args = _parser().parse_args(argv)
    executor = args.executor or ("ray" if args.ray_address or os.environ.get("RAY_ADDRESS") else "local")
    options = {key: value for key, value in (("batch_size", args.batch_size), ("shard_size", args.shard_size),
                                             ("workers", args.workers)) if value is not None}
    common = {"executor": executor, "ray_address": args.ray_address, "progress": Bar(), "out": args.out,
              "resume": not args.restart, **options}
    try:
        engine = _engine(args.model, args.weights, args.device)
        ds = _dataset(args.data, args.limit)
        if args.job == "examples":
            result = api.dataset_examples(engine, ds, args.layers, args.k, **common)
        elif args.job == "stats":
            result = api.channel_stats(engine, ds, args.layers, **common)
        else:
            layer = args.layers[0] if args.layers else None
            result = api.cam_quality(engine, ds, args.methods, layer, args.steps, **common)
    except CnnvisError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nstopped; the finished shards are kept in {args.out}: run the same command to go on.",
              file=sys.stderr)
        return 130
    print(f"saved to {os.path.abspath(args.out)}")
    print(summary(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
