"""Cached calls and figures of the dead-channel page (``pages/dead.py``): image sets as lazy
streams, cached peaks and checks.

The expensive pass (each channel's peak ``max |activation|`` over the image set) does not
depend on epsilon, so it is cached per (model, image set) and any epsilon is applied to it
without running the model; the pruning check is cached per (model, image set, dead set). The
caches hash the engine, the image set and the dead set by their keys (:data:`HASH_FUNCS`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import plotly.graph_objects as go
from PIL import Image

from cnnvis_core import CnnvisError, Engine
from cnnvis_core.data import Dataset
from cnnvis_core.demo import sample
from cnnvis_core.jobs import ChannelStats, IdRanges
from cnnvis_core.pruning import ChannelPeaks, DeadChannels, PruningCheck

from . import jobs, memo, state
from .memo import cached
from .state import SAMPLE_SEED_START, decode_upload

#: images of a statistics job's data set that the masked check runs on (the first ones)
JOB_CHECK_IMAGES = 32


@dataclass(frozen=True)
class ImageSet:
    """A set of images: the key the caches know it by, and a stream that yields its images afresh
    (lazily) at each call."""

    key: str
    stream: Callable[[], Iterator[Image.Image]]


#: the engine and the image set by their keys, a dead set by its channels (not its ε: the same
#: channels at another ε are the same check)
HASH_FUNCS = {**state.HASH_FUNCS, ImageSet: lambda images: images.key,
              DeadChannels: lambda dead: tuple(sorted((k, tuple(v)) for k, v in dead.as_dict().items()))}
memo.KEYS.update(HASH_FUNCS)


def demo_images(count: int) -> ImageSet:
    """The first ``count`` dashboard samples, generated lazily."""
    def stream() -> Iterator[Image.Image]:
        return (sample(SAMPLE_SEED_START + i)[0] for i in range(count))
    return ImageSet(f"demo:{count}", stream)


@dataclass(frozen=True)
class Uploads:
    """Uploaded files sorted out: the readable ones as an :class:`ImageSet` (None when there is
    none), and ``(file name, reason)`` for each file that cannot be used."""

    images: ImageSet | None
    used: int
    skipped: tuple[tuple[str, str], ...]


def uploaded_images(files: list) -> Uploads:
    """The readable uploads as an image set (decoded once per upload, cached; the stream reads
    them from that cache), and each unreadable one with its reason: one bad file among many
    only leaves itself out."""
    good, skipped = [], []
    for upload in files:
        data = upload.getvalue()
        try:
            decode_upload(upload.file_id, data)
        except CnnvisError as error:
            skipped.append((upload.name, str(error)))
        else:
            good.append((upload.file_id, data))

    def stream() -> Iterator[Image.Image]:
        return (decode_upload(file_id, data)[0] for file_id, data in good)
    images = ImageSet("uploads:" + ",".join(file_id for file_id, _ in good), stream) if good else None
    return Uploads(images, len(good), tuple(skipped))


def file_stem(engine_stem: str, images: ImageSet) -> str:
    """A file-name stem for the downloads: the model and the image set
    (``demonet_dead_channels_demo16``, ``resnet18_dead_channels_uploads5``)."""
    kind, _, rest = images.key.partition(":")
    count = rest if kind == "demo" else str(len(rest.split(",")))
    return state.safe_stem(engine_stem, "dead_channels", f"{kind}{count}")


@cached("Running the images through the model…")
def channel_peaks(engine: Engine, images: ImageSet) -> ChannelPeaks:
    """Each examined channel's peak over the image set (conv and ReLU layers)."""
    return engine.channel_peaks(images.stream(), batch_size=16)


@cached("Checking: the same images with those channels masked…")
def pruning_check(engine: Engine, images: ImageSet, dead: DeadChannels) -> PruningCheck:
    """What zeroing the dead channels does to the logits of the image set."""
    return engine.verify_pruning(images.stream(), dead, batch_size=16)


def stats_results(engine: Engine) -> list[jobs.Finished]:
    """The finished statistics jobs of ``engine``'s model, newest first."""
    return jobs.finished_results(engine, "channel_stats")


def stored_stats(item: jobs.Finished) -> ChannelStats:
    """The statistics of a finished job, read from its folder (no model pass)."""
    return jobs.load(str(item.folder), item.manifest.get("created", ""))


def job_images(item: jobs.Finished, count: int = JOB_CHECK_IMAGES) -> ImageSet | None:
    """The first ``count`` images the job read, opened again from its data set for the masked check;
    None when that data set cannot be opened here (a folder that moved, an archive held in memory)."""
    dataset = reopen(item.manifest)
    if dataset is None:
        return None
    ids = IdRanges(tuple(tuple(r) for r in item.manifest.get("ids", []))).ids()[:count]

    def stream() -> Iterator[Image.Image]:
        for i in ids:
            try:
                yield dataset.read(int(i)).image
            except CnnvisError:
                continue  # the job skipped it too
    return ImageSet(f"job:{item.manifest['data']['fingerprint']}:{len(ids)}", stream)


def reopen(manifest: dict) -> Dataset | None:
    """The data set a result was computed on, opened again from its manifest, or None."""
    source = manifest.get("data", {}).get("source", {})
    try:
        if source.get("kind") == "demo":
            return Dataset.demo(source["n"], source["seed_start"], source["n_objects"])
        if source.get("kind") == "list":
            return Dataset.from_path(source["paths"])
        if source.get("path"):
            dataset = Dataset.from_path(source["path"])
            # the same files still? (a folder's fingerprint follows its files' sizes and times)
            return dataset if dataset.root_fingerprint == manifest["data"].get("root_fingerprint") else None
    except (CnnvisError, OSError, KeyError):
        return None
    return None


def of_kinds(dead: DeadChannels, kinds: list[str]) -> DeadChannels:
    """The same result restricted to layers of the given types (for display)."""
    return DeadChannels(tuple(layer for layer in dead.layers if layer.kind in kinds), dead.eps, dead.images)


def fraction_figure(dead: DeadChannels) -> go.Figure:
    """Fraction of dead channels per layer, one horizontal bar per layer in execution order (top
    to bottom; the names read horizontally), one colour per layer type."""
    figure = go.Figure()
    top = min(1.0, max(0.1, 1.15 * max((layer.fraction for layer in dead.layers), default=0.0)))  # small bars show
    for kind in dict.fromkeys(layer.kind for layer in dead.layers):
        layers = [layer for layer in dead.layers if layer.kind == kind]
        figure.add_trace(go.Bar(
            y=[layer.name for layer in layers], x=[layer.fraction for layer in layers], name=kind, orientation="h",
            customdata=[[len(layer.dead), layer.channels] for layer in layers],
            hovertemplate="%{y}<br>%{customdata[0]} of %{customdata[1]} dead (%{x:.1%})<extra></extra>"))
    figure.update_layout(title=f"Fraction of dead channels per layer ({dead.images} images, ε = {dead.eps:g})",
                         xaxis=dict(title="dead", tickformat=".0%", range=[0, top]),
                         yaxis=dict(categoryorder="array", categoryarray=[layer.name for layer in dead.layers][::-1],
                                    tickangle=0, automargin=True),
                         height=140 + 18 * len(dead.layers), margin=dict(l=10, r=10, t=60, b=10),
                         legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0))
    return figure


def quietest(peaks: ChannelPeaks, kinds: list[str]) -> tuple[str, int, float] | None:
    """``(layer, channel, peak)`` of the channel with the smallest peak among layers of ``kinds``:
    ε must reach that peak before anything counts as dead."""
    found = [(float(p.min()), name, int(p.argmin())) for name, kind, p in zip(peaks.names, peaks.kinds, peaks.peaks)
             if kind in kinds and p.size]
    if not found:
        return None
    peak, name, channel = min(found)
    return name, channel, peak


def verdict(check: PruningCheck) -> tuple[str, str]:
    """``(level, sentence)`` summing up a pruning check; level is ``success``, ``info`` or ``warning``.

    Removable: no logit moved by more than float rounding (10⁻⁵ of the largest |logit|, at
    least 10⁻⁶); small effect: logits moved but no top-1 class changed; else not removable as is.
    """
    scale = f"up to {check.max_logit_change:.3g}, with the largest |logit| {check.max_abs_logit:.3g}"
    if check.max_logit_change <= max(1e-6, 1e-5 * check.max_abs_logit):
        return "success", "Removable: masking them leaves every logit unchanged (up to float rounding)."
    if not check.top1_changed:
        return "info", f"Nearly removable: logits move by {scale}, but no image changes its top-1 class."
    return "warning", (f"Not removable as they are: {check.changed_images} of {check.images} images change "
                       f"their top-1 class (logits move by {scale}). Lower ε.")


def dead_rows(dead: DeadChannels, limit: int = 40) -> list[dict]:
    """Table rows: one per layer with dead channels (their indices, shortened after ``limit``)."""
    rows = []
    for layer in dead.layers:
        if not layer.dead:
            continue
        shown = ", ".join(map(str, layer.dead[:limit])) + (" …" if len(layer.dead) > limit else "")
        rows.append({"layer": layer.name, "type": layer.kind, "channels": layer.channels,
                     "dead": len(layer.dead), "fraction": f"{layer.fraction:.1%}", "dead channels": shown})
    return rows
