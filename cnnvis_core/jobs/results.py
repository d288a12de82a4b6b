"""Finished jobs: :class:`DatasetExamples`, :class:`ChannelStats`, :class:`CamQuality`, saved and loaded
without the model.

A results folder holds one job: ``manifest.json`` (what ran: the job's kind and settings, the model's
name, spec and weights hash, the data set's description and fingerprint, the layers, library
versions, the date, the files skipped) and the one Parquet table it names (``files.table``:
``examples.<save id>.parquet``, ``stats.<…>.parquet`` or ``cam_quality.<…>.parquet``; results saved
before save ids were ``examples.parquet`` and so on) whose schema metadata also carries the merge state,
so a loaded result merges with others like a fresh one. Each save writes a table of a new name, then
the manifest naming it: the manifest's rename is the commit point, so a crash in between leaves the
folder's previous result whole, and a reader never pairs a manifest with another save's table.
Results of disjoint parts of one data set, with the same job, model and settings, merge
(:meth:`Result.merge`) into the result of their union.
"""

from __future__ import annotations

import copy
import math
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, NamedTuple

import numpy as np
import pyarrow as pa
from PIL import Image

from ..data import Dataset, View
from ..data.dataset import fingerprint_of
from ..pruning import ChannelPeaks, DeadChannels
from ..receptive_field import ReceptiveField
from . import histogram
from .base import Job, JobError, Partial
from .examples import ExamplesJob, TopState
from .files import (
    MANIFEST,
    STALE_S,
    older_than,
    read_json,
    read_table,
    remove_quietly,
    sweep_temporaries,
    write_json,
    write_table,
)
from .quality import CamQualityJob, Interval, Rows, interval, wilson
from .stats import StatsJob, StatsState


class Result:
    """What every finished job offers (see the module docstring)."""

    kind: ClassVar[str] = ""
    job_type: ClassVar[type[Job]] = Job
    file: ClassVar[str] = ""

    def __init__(self, job: Job, partial: Partial, manifest: dict, paths: dict[int, str]) -> None:
        self.job, self.partial, self.manifest, self.paths = job, partial, manifest, dict(paths)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.manifest['model']['name']!r}, {self.images} images of "
                f"{self.manifest['data']['description']!r})")

    @property
    def images(self) -> int:
        """Images read (skipped files not counted)."""
        return self.partial.images

    @property
    def skipped(self) -> tuple:
        """``[Skip(id, path, reason)]`` of the files that could not be read."""
        return self.partial.skipped

    @property
    def fingerprint(self) -> str:
        """The fingerprint of the data set the result covers."""
        return self.manifest["data"]["fingerprint"]

    def _columns(self, table: pa.Table) -> pa.Table:
        """Extra columns for people and other tools (ignored when loading)."""
        return table

    def save(self, folder: str | Path) -> Path:
        """Write the table, then the manifest naming it, into ``folder`` (made if missing); returns it.

        The table gets a name of its own (``stats.<save id>.parquet``) and the manifest's rename is the
        commit point: a crash before it leaves the folder's previous result whole (its manifest still
        names its own table), a crash after it the new one. The previous table is removed last.
        """
        folder = Path(folder)
        previous = _table_in(folder)
        name = f"{Path(self.file).stem}.{secrets.token_hex(8)}.parquet"
        write_table(folder / name, self._columns(self.partial.table(self.job)))
        write_json(folder / MANIFEST, self._saved_manifest(name))
        _drop_tables(folder, keep=name, previous=previous)
        return folder

    def _saved_manifest(self, table: str) -> dict:
        """The manifest to save beside the table file named ``table``."""
        manifest = dict(self.manifest, images=self.images, ids=[list(r) for r in self.partial.ids.ranges],
                        files={"table": table})
        manifest["data"] = dict(manifest["data"], skipped=[{"id": s.id, "path": s.path, "reason": s.reason}
                                                            for s in self.skipped])
        return manifest

    @classmethod
    def read(cls, folder: Path, manifest: dict) -> Result:
        """The result of ``manifest`` with the table it names in ``folder`` (``FileNotFoundError``
        when that table is gone)."""
        job = cls.job_type.from_settings(manifest["settings"])
        table = read_table(folder / (table_name(manifest) or cls.file))
        partial = Partial.from_table(table, job)
        paths = {}
        if "path" in table.column_names:
            paths = dict(zip(table.column("id").to_pylist(), table.column("path").to_pylist()))
        return cls(job, partial, manifest, paths)

    def merge(self, other: Result) -> Result:
        """The result of the union of two disjoint parts of one data set (same job, settings and model)."""
        mine, theirs = self.manifest, other.manifest
        for what, a, b in (("kind", self.kind, other.kind), ("settings", self.job.settings(), other.job.settings()),
                           ("model", mine["model"]["weights_sha256"], theirs["model"]["weights_sha256"]),
                           ("data set", mine["data"]["root_fingerprint"], theirs["data"]["root_fingerprint"])):
            if a != b:
                raise JobError(f"These results do not merge: their {what} differ.")
        partial = self.partial.merged(other.partial, self.job)
        manifest = copy.deepcopy(self.manifest)
        data = manifest["data"]
        data.update(images=len(partial.ids), selection="merged",
                    fingerprint=fingerprint_of(data["root_fingerprint"], partial.ids.ids(), data["source_images"]))
        return type(self)(self.job, partial, manifest, {**self.paths, **other.paths})

    def _dataset(self, dataset: Dataset | None) -> Dataset:
        if dataset is not None:
            return dataset
        if not hasattr(self, "_opened"):
            source = self.manifest["data"]["source"]
            if source["kind"] == "demo":
                self._opened = Dataset.demo(source["n"], source["seed_start"], source["n_objects"])
            elif source["kind"] == "list":
                self._opened = Dataset.from_path(source["paths"])
            elif source.get("path"):
                self._opened = Dataset.from_path(source["path"])
            else:
                raise JobError("This result's data set was an upload held in memory; pass dataset=… to read its "
                               "images.")
        return self._opened


# ---------------------------------------------------------------------------- dataset examples
class Example(NamedTuple):
    """One of a channel's top images: where it is, the channel's maximum on it, the ``(row, col)`` of
    that maximum in the layer's map, and the ``(left, top, right, bottom)`` box of input pixels that
    unit sees (the model's input tensor; :meth:`DatasetExamples.crop` cuts it from the file)."""

    path: str
    activation: float
    position: tuple[int, int]
    box: tuple[int, int, int, int]
    id: int


class PeakHistogram(NamedTuple):
    """A channel's distribution of per-image peaks: bin ``i`` holds ``counts[i]`` images whose
    maximum lies in ``[low[i], high[i])`` (non-empty bins only, ascending)."""

    low: np.ndarray
    high: np.ndarray
    counts: np.ndarray


class DatasetExamples(Result):
    """Per layer and channel, the top-``k`` images (see :mod:`.examples`)."""

    kind = ExamplesJob.kind
    job_type = ExamplesJob
    file = "examples.parquet"

    @property
    def layers(self) -> list[str]:
        return list(self.job.layers)

    @property
    def k(self) -> int:
        return self.job.k

    @property
    def receptive_fields(self) -> dict[str, ReceptiveField]:
        """Per layer, the receptive field used for the boxes, with its ``method`` (geometry or gradient)."""
        return {name: ReceptiveField.from_dict(rf) for name, rf in self.manifest["receptive_fields"].items()}

    def _state(self) -> TopState:
        return self.partial.state

    def _layer(self, layer: str) -> int:
        if layer not in self.job.layers:
            raise JobError(f"No layer {layer!r} in this result; it has {', '.join(self.job.layers)}.")
        return self.job.layers.index(layer)

    def top(self, layer: str, channel: int) -> list[Example]:
        """The channel's top images, best first."""
        index = self._layer(layer)
        _c, _h, w = self.job.shapes[index]
        scores, ids, positions = (x[int(channel)] for x in self._state()[layer].top)
        field = self.receptive_fields[layer]
        out = []
        for score, id_, position in zip(scores, ids, positions):
            row, col = divmod(int(position), w)
            out.append(Example(self.paths.get(int(id_), str(id_)), float(score), (row, col), field.box(row, col),
                               int(id_)))
        return out

    def peak(self, layer: str) -> np.ndarray:
        """``(C,)`` each channel's highest activation over the data set (its first example's; NaN
        for a channel with no image)."""
        scores = self._state()[self.job.layers[self._layer(layer)]].scores
        return scores[:, 0].astype(np.float64) if scores.shape[1] else np.full(scores.shape[0], np.nan)

    def mean_peak(self, layer: str) -> np.ndarray:
        """``(C,)`` the mean over the images of each channel's maximum on the image (NaN in a result
        made before the distribution of peaks was recorded)."""
        return self._state()[self.job.layers[self._layer(layer)]].sums / max(1, self.images)

    @property
    def has_histograms(self) -> bool:
        """Whether the result holds the distribution of peaks (results made before it do not)."""
        return all(not np.isnan(self._state()[n].sums).any() for n in self.job.layers)

    def histogram(self, layer: str, channel: int) -> PeakHistogram:
        """The distribution over the data set of the channel's maximum on each image: the
        non-empty fixed bins (see :mod:`.histogram`); one count per image read."""
        state = self._state()[self.job.layers[self._layer(layer)]]
        if np.isnan(state.sums).any():
            raise JobError("This result was made before dataset-examples jobs recorded the distribution of peaks; "
                           "run the job again to get its histograms.")
        bins, counts = histogram.channel(state.hist, int(channel))
        low, high = histogram.edges(bins)
        return PeakHistogram(low, high, counts)

    def crop(self, layer: str, channel: int, i: int = 0, dataset: Dataset | None = None) -> Image.Image:
        """The receptive-field crop of the channel's ``i``-th image, cut from the image file at its own
        resolution (through the model's resize and crop); ``dataset`` when the result's data set cannot
        be opened again from the manifest (an upload)."""
        example = self.top(layer, channel)[int(i)]
        image = self._dataset(dataset).open(example.path)
        view = View.from_dict(self.manifest["model"]["view"])
        return image.crop(view.to_original(example.box, image.size))

    def _columns(self, table: pa.Table) -> pa.Table:
        layers = table.column("layer").to_numpy(zero_copy_only=False)
        rows, cols = table.column("row").to_numpy(), table.column("col").to_numpy()
        fields = self.receptive_fields
        boxes = np.array([fields[name].box(r, c) for name, r, c in zip(layers, rows, cols)],
                         dtype=np.int32).reshape(-1, 4)
        paths = [self.paths.get(int(i), "") for i in table.column("id").to_numpy()]
        table = table.append_column("path", pa.array(paths, pa.string()))
        for n, name in enumerate(("left", "top", "right", "bottom")):
            table = table.append_column(name, pa.array(boxes[:, n], pa.int32()))
        return table


# ---------------------------------------------------------------------------- channel statistics
class ChannelStats(Result):
    """Per layer, the channels' peak ``max |a|``, mean and fraction of positive positions (see :mod:`.stats`)."""

    kind = StatsJob.kind
    job_type = StatsJob
    file = "stats.parquet"

    def _state(self) -> StatsState:
        return self.partial.state

    @property
    def layers(self) -> list[str]:
        return list(self.job.layers)

    @property
    def peak(self) -> dict[str, np.ndarray]:
        """``{layer: (C,) max |activation|}``."""
        return {name: moments[0] for name, moments in self._state().items()}

    @property
    def mean(self) -> dict[str, np.ndarray]:
        """``{layer: (C,) mean activation over images and positions}``."""
        return {name: moments[1] / max(1, moments[3]) for name, moments in self._state().items()}

    @property
    def active(self) -> dict[str, np.ndarray]:
        """``{layer: (C,) fraction of positions with activation > 0}``."""
        return {name: moments[2] / max(1, moments[3]) for name, moments in self._state().items()}

    def peaks(self) -> ChannelPeaks:
        """The peaks as :class:`~cnnvis_core.pruning.ChannelPeaks` (what the pruning check reads)."""
        kinds = {layer["name"]: layer["kind"] for layer in self.manifest["layers"]}
        return ChannelPeaks(tuple(self.job.layers), tuple(kinds[n] for n in self.job.layers),
                            tuple(self.peak[n] for n in self.job.layers), self.images)

    def dead(self, eps: float = 0.0) -> DeadChannels:
        """Channels with peak ``≤ eps``, as :meth:`Engine.dead_channels` gives them."""
        return self.peaks().dead(eps)

    def _columns(self, table: pa.Table) -> pa.Table:
        sums, positive = table.column("sum").to_numpy(), table.column("positive").to_numpy()
        positions = np.maximum(1, table.column("positions").to_numpy())
        table = table.append_column("mean", pa.array(sums / positions, pa.float64()))
        return table.append_column("active", pa.array(positive / positions, pa.float64()))


# ---------------------------------------------------------------------------- CAM quality
@dataclass(frozen=True)
class MethodQuality:
    """One method's summary: mean deletion and insertion AUCs with 95 % intervals, and the pointing
    game's hit rate with its interval (None without masks)."""

    method: str
    deletion: Interval
    insertion: Interval
    pointing: Interval | None


class CamQuality(Result):
    """Per method, deletion and insertion AUCs per image and their summaries (see :mod:`.quality`)."""

    kind = CamQualityJob.kind
    job_type = CamQualityJob
    file = "cam_quality.parquet"

    @property
    def methods(self) -> list[str]:
        return list(self.job.methods)

    @property
    def rows(self) -> Rows:
        """``{column: array}``: one row per (image, method): id, method, target, deletion, insertion,
        hit (1 hit, 0 miss, -1 no mask)."""
        return self.partial.state

    @property
    def summary(self) -> dict[str, MethodQuality]:
        rows = self.rows
        out = {}
        for method in self.job.methods:
            mine = rows["method"] == method
            hits = rows["hit"][mine]
            scored = hits[hits >= 0]
            pointing = wilson(int(scored.sum()), int(scored.size)) if scored.size else None
            out[method] = MethodQuality(method, interval(rows["deletion"][mine]), interval(rows["insertion"][mine]),
                                        pointing)
        return out

    def _columns(self, table: pa.Table) -> pa.Table:
        paths = [self.paths.get(int(i), "") for i in table.column("id").to_numpy()]
        return table.append_column("path", pa.array(paths, pa.string()))

    def save(self, folder: str | Path) -> Path:
        summary = {m: {"deletion": _json(q.deletion), "insertion": _json(q.insertion),
                       "pointing": _json(q.pointing) if q.pointing else None} for m, q in self.summary.items()}
        self.manifest["summary"] = summary
        return super().save(folder)


def _json(value: Interval) -> dict:
    """An interval for JSON: NaN (too few values) as null."""
    return {key: None if isinstance(v, float) and math.isnan(v) else v for key, v in value.__dict__.items()}


KINDS: dict[str, type[Result]] = {cls.kind: cls for cls in (DatasetExamples, ChannelStats, CamQuality)}


#: the names of the result tables a save writes (and of those saved before save ids)
_TABLE = re.compile(rf"^(?:{'|'.join(re.escape(Path(c.file).stem) for c in KINDS.values())})"
                    r"(?:\.[0-9a-f]{16})?\.parquet$")


def table_name(manifest: dict) -> str | None:
    """The table file a manifest names (None when it names none)."""
    files = manifest.get("files")
    return files.get("table") if isinstance(files, dict) else None


def _table_in(folder: Path) -> str | None:
    """The table file named by the manifest in ``folder`` (None without a readable one)."""
    try:
        return table_name(read_json(folder / MANIFEST))
    except (OSError, ValueError, AttributeError):
        return None


def _drop_tables(folder: Path, keep: str, previous: str | None) -> None:
    """Remove the result tables in ``folder`` that its manifest no longer names: ``previous`` (the one
    it named before) at once, others (left by a save that died before its commit) once stale, so that
    a concurrent save's table, written but not yet committed, is kept."""
    for path in folder.iterdir():
        if path.name != keep and _TABLE.match(path.name) and (path.name == previous or older_than(path, STALE_S)):
            remove_quietly(path)


def _manifest(folder: Path) -> dict:
    """The manifest in ``folder``, of a known kind."""
    if not (folder / MANIFEST).is_file():
        raise JobError(f"{folder} holds no job result (no {MANIFEST}).")
    manifest = read_json(folder / MANIFEST)
    kind = manifest.get("kind")
    if kind not in KINDS:
        raise JobError(f"{folder} holds a result of an unknown kind {kind!r}.")
    return manifest


def load(folder: str | Path) -> Result:
    """The result saved in ``folder`` (any kind), without the model; temporary files left there by a
    killed write are swept first (see :func:`~.files.sweep_temporaries`)."""
    folder = Path(folder)
    sweep_temporaries(folder)
    manifest = _manifest(folder)
    try:
        return KINDS[manifest["kind"]].read(folder, manifest)
    except FileNotFoundError:
        again = _manifest(folder)  # a save may have replaced the result, and its table, meanwhile
        if again == manifest:
            raise JobError(f"{folder} holds a half-written result: the table its manifest names "
                           f"({table_name(manifest)}) is missing. Run the job again.") from None
        return KINDS[again["kind"]].read(folder, again)


def merge(*results: Result) -> Result:
    """The merge of results of disjoint parts of one data set (see :meth:`Result.merge`)."""
    if not results:
        raise JobError("Give at least one result to merge.")
    out = results[0]
    for other in results[1:]:
        out = out.merge(other)
    return out


def find(root: str | Path, weights: str | None = None) -> list[tuple[Path, dict]]:
    """``[(folder, manifest)]`` of the results in ``root`` and its sub-folders (newest first); with
    ``weights``, only those of the model with that weights hash."""
    found = []
    for path in Path(root).rglob(MANIFEST):
        try:
            manifest = read_json(path)
        except (OSError, ValueError):
            continue
        if manifest.get("kind") in KINDS and (weights is None or manifest["model"]["weights_sha256"] == weights):
            found.append((path.parent, manifest))
    return sorted(found, key=lambda item: item[1].get("created", ""), reverse=True)
