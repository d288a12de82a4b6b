"""Dataset examples: for every channel of chosen layers, the images that make it fire hardest.

For channel ``c`` of layer ``l`` and image ``x_n``, the score is the channel's maximum over
positions, ``s_c(n) = max_{i,j} A_c(x_n)(i, j)``, at ``(i*, j*) = argmax`` (the first in reading
order on ties). The job keeps, per channel, the ``k`` images of highest score (ties: the lower
image id first) with that position; the box of input pixels the unit at ``(i*, j*)`` sees is its
receptive field (:mod:`cnnvis_core.receptive_field`). This is how Zeiler & Fergus ("Visualizing
and Understanding Convolutional Networks", ECCV 2014), the Deep Visualization Toolbox (Yosinski
et al., 2015) and OpenAI Microscope show what a unit responds to.

Beside the top ``k``, every image's score feeds the channel's distribution of peaks over the
data set: their sum (float64; the mean peak is ``sum / images``) and a fixed-bin histogram
(:mod:`.histogram`), which the unit atlas draws.

Memory: the state is ``k`` (score, id, position) triples per channel and the histogram's
non-empty bins (a few dozen per channel), whatever the number of images; two states merge by
keeping the ``k`` best of their union under that total order and adding sums and counts, which
is associative and commutative (exactly so for the top ``k`` and the counts; the float64 sums
follow the runner's fixed shard order).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import numpy as np
import pyarrow as pa
import torch

from ..core import ModelCore
from ..data import Batch, Dataset
from . import histogram
from .base import Job
from .reading import reduced_outputs

#: ``(scores (C, m) float32, ids (C, m) int64, positions (C, m) int64 flat in the map)``, m ≤ k
Top = tuple[np.ndarray, np.ndarray, np.ndarray]


class LayerTop(NamedTuple):
    """One layer's state: the top ``m ≤ k`` per channel, and every image's peak as a sum ``(C,)``
    float64 (NaN: not recorded, a result made before the histograms) and a sparse histogram."""

    scores: np.ndarray
    ids: np.ndarray
    positions: np.ndarray
    sums: np.ndarray
    bins: np.ndarray
    counts: np.ndarray

    @property
    def top(self) -> Top:
        return self.scores, self.ids, self.positions

    @property
    def hist(self) -> histogram.Sparse:
        return self.bins, self.counts


TopState = dict[str, LayerTop]


def best(a: Top, b: Top, k: int) -> Top:
    """The ``k`` best of two candidate sets per channel: score descending, then id ascending."""
    scores, ids, positions = (np.concatenate([x, y], axis=1) for x, y in zip(a, b))
    order = np.lexsort((ids, -scores), axis=1)[:, :k]
    return tuple(np.take_along_axis(x, order, axis=1) for x in (scores, ids, positions))  # type: ignore[return-value]


Found = tuple[np.ndarray, np.ndarray, np.ndarray]


def _channel_max(bars: dict[str, torch.Tensor], k: int) -> Callable[[str, torch.Tensor], Found]:
    """The reduction of one layer's ``(B, C, H, W)`` maps: each map's maximum and, for the maps that
    can still enter their channel's top ``k``, its position; the others get score ``-inf``; and
    every map's maximum as it is (for the distribution of peaks).

    A map can enter when its maximum reaches the bar: the ``k``-th best score so far in the shard
    (``bars[layer]``, from the prior state) and the ``k``-th best of this batch. ``amax`` over all
    maps runs at memory speed; ``max`` with indices over every map would cost several times more,
    so positions are found only for the few maps that pass (at most ``k`` per channel, and ties).
    """
    def reduce(name: str, maps: torch.Tensor) -> Found:
        flat = maps.flatten(2)
        values = flat.amax(dim=2)
        peaks = values.float().cpu().numpy()
        bar = bars.get(name)
        bar = None if bar is None else bar.to(values.device, values.dtype)
        if values.shape[0] >= k:
            own = values.topk(k, dim=0).values[-1]
            bar = own if bar is None else torch.maximum(bar, own)
        if bar is None:
            return peaks, flat.max(dim=2).indices.cpu().numpy(), peaks
        passing = values >= bar
        rows = passing.flatten().nonzero().flatten()  # the passing maps, as rows of (B·C, H·W)
        where = torch.zeros(values.numel(), dtype=torch.long, device=values.device)
        # the first maximum; max with indices is faster than argmax
        where[rows] = flat.reshape(-1, flat.shape[2]).index_select(0, rows).max(dim=1).indices
        values = values.masked_fill(~passing, -math.inf)
        return values.float().cpu().numpy(), where.view(values.shape).cpu().numpy(), peaks
    return reduce


@dataclass(frozen=True)
class ExamplesJob(Job[TopState]):
    """Top-``k`` images per channel of ``layers`` (``shapes``: each layer's ``(C, H, W)``)."""

    layers: tuple[str, ...]
    shapes: tuple[tuple[int, int, int], ...]
    k: int = 9

    kind: ClassVar[str] = "dataset_examples"

    def settings(self) -> dict[str, Any]:
        return {"layers": list(self.layers), "shapes": [list(s) for s in self.shapes], "k": self.k}

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> ExamplesJob:
        return cls(tuple(settings["layers"]), tuple(tuple(s) for s in settings["shapes"]), int(settings["k"]))

    def layer_names(self) -> list[str]:
        return list(self.layers)

    def empty(self) -> TopState:
        return {name: LayerTop(np.zeros((c, 0), np.float32), np.zeros((c, 0), np.int64), np.zeros((c, 0), np.int64),
                               np.zeros(c, np.float64), *histogram.empty())
                for name, (c, _, _) in zip(self.layers, self.shapes)}

    def map(self, core: ModelCore, batch: Batch, dataset: Dataset, prior: TopState | None = None) -> TopState:
        if batch.x is None:
            return self.empty()
        bars = {name: torch.from_numpy(prior[name][0][:, self.k - 1].copy()) for name in self.layers
                if prior is not None and prior[name][0].shape[1] >= self.k}
        found = reduced_outputs(core, batch.x, self.layers, _channel_max(bars, self.k))
        state, empty = {}, self.empty()
        for name in self.layers:
            values, where, peaks = found[name]
            candidates = (values.T.copy(), np.broadcast_to(batch.ids, values.T.shape).copy(), where.T.astype(np.int64))
            top = best(empty[name].top, candidates, self.k)
            state[name] = LayerTop(*top, peaks.sum(axis=0, dtype=np.float64), *histogram.of_peaks(peaks))
        return state

    def merge(self, a: TopState, b: TopState) -> TopState:
        return {name: LayerTop(*best(a[name].top, b[name].top, self.k), a[name].sums + b[name].sums,
                               *histogram.merged(a[name].hist, b[name].hist)) for name in self.layers}

    def to_table(self, state: TopState) -> pa.Table:
        columns: dict[str, list] = {key: [] for key in _TYPES}
        for name, (_c, _h, w) in zip(self.layers, self.shapes):
            scores, ids, positions = state[name].top
            channels, ranks = np.indices(scores.shape)
            columns["layer"].append(np.full(scores.size, name, dtype=object))
            columns["channel"].append(channels.ravel().astype(np.int32))
            columns["rank"].append(ranks.ravel().astype(np.int16))
            columns["activation"].append(scores.ravel().astype(np.float32))
            columns["id"].append(ids.ravel())
            columns["row"].append((positions // w).ravel().astype(np.int32))
            columns["col"].append((positions % w).ravel().astype(np.int32))
            _peak_columns(columns, state[name], ranks.ravel())
        return pa.table({key: pa.array(_joined(parts, key), type=_TYPES[key]) for key, parts in columns.items()})

    def state_meta(self, state: TopState) -> dict:
        return {"width": {name: int(state[name][0].shape[1]) for name in self.layers}, "peaks": 1}

    def from_table(self, table: pa.Table, meta: dict) -> TopState:
        state = {}
        layer_column = table.column("layer").to_numpy(zero_copy_only=False)
        for name, (c, _h, w) in zip(self.layers, self.shapes):
            m = int(meta["width"][name])
            rows = layer_column == name
            pick = {key: table.column(key).to_numpy(zero_copy_only=False)[rows] for key in
                    ("channel", "rank", "activation", "id", "row", "col")}
            scores = np.zeros((c, m), np.float32)
            ids = np.zeros((c, m), np.int64)
            positions = np.zeros((c, m), np.int64)
            where = (pick["channel"], pick["rank"])
            scores[where], ids[where] = pick["activation"], pick["id"]
            positions[where] = pick["row"].astype(np.int64) * w + pick["col"]
            sums, hist = _read_peaks(table, rows, c, bool(meta.get("peaks")))
            state[name] = LayerTop(scores, ids, positions, sums, *hist)
        return state


def _peak_columns(columns: dict[str, list], layer: LayerTop, ranks: np.ndarray) -> None:
    """The distribution of peaks on each channel's rank-0 row (null on the others): ``peak_sum``,
    ``peak_bins`` and ``peak_counts`` (the channel's non-empty bins of :mod:`.histogram`)."""
    first = ranks == 0
    parts = histogram.by_channel(layer.hist, layer.sums.shape[0])
    sums = layer.sums[:, None].repeat(layer.scores.shape[1], axis=1).ravel()
    channels = np.indices(layer.scores.shape)[0].ravel()
    columns["peak_sum"].append([float(s) if f else None for s, f in zip(sums, first)])
    columns["peak_bins"].append([parts[c][0].astype(np.int16).tolist() if f else None for c, f in zip(channels, first)])
    columns["peak_counts"].append([parts[c][1].tolist() if f else None for c, f in zip(channels, first)])


def _joined(parts: list, key: str) -> list | np.ndarray:
    if not parts:
        return []
    if key.startswith("peak_"):
        return [value for part in parts for value in part]
    return np.concatenate(parts)


def _read_peaks(table: pa.Table, rows: np.ndarray, c: int, present: bool) -> tuple[np.ndarray, histogram.Sparse]:
    """The sums and histogram of one layer (``rows`` its rows); NaN sums without the columns."""
    if not present or "peak_sum" not in table.column_names:
        return np.full(c, np.nan), histogram.empty()
    index = np.flatnonzero(rows & (table.column("rank").to_numpy() == 0))
    channels = table.column("channel").to_numpy()[index]
    sums = np.zeros(c, np.float64)
    sums[channels] = table.column("peak_sum").take(index).to_numpy(zero_copy_only=False)
    parts: list[tuple[np.ndarray, np.ndarray]] = [(np.zeros(0, np.int64), np.zeros(0, np.int64))] * c
    bins = table.column("peak_bins").take(index).to_pylist()
    counts = table.column("peak_counts").take(index).to_pylist()
    for channel, b, n in zip(channels, bins, counts):
        parts[int(channel)] = (np.asarray(b, np.int64), np.asarray(n, np.int64))
    return sums, histogram.from_channels(parts)


_TYPES = {"layer": pa.string(), "channel": pa.int32(), "rank": pa.int16(), "activation": pa.float32(),
          "id": pa.int64(), "row": pa.int32(), "col": pa.int32(), "peak_sum": pa.float64(),
          "peak_bins": pa.list_(pa.int16()), "peak_counts": pa.list_(pa.int64())}
