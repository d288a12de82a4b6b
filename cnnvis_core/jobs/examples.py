"""Dataset examples: for every channel of chosen layers, the images that make it fire hardest.

For channel ``c`` of layer ``l`` and image ``x_n``, the score is the channel's maximum over
positions, ``s_c(n) = max_{i,j} A_c(x_n)(i, j)``, at ``(i*, j*) = argmax`` (the first in reading
order on ties). The job keeps, per channel, the ``k`` images of highest score (ties: the lower
image id first) with that position; the box of input pixels the unit at ``(i*, j*)`` sees is its
receptive field (:mod:`cnnvis_core.receptive_field`). This is how Zeiler & Fergus ("Visualizing
and Understanding Convolutional Networks", ECCV 2014), the Deep Visualization Toolbox (Yosinski
et al., 2015) and OpenAI Microscope show what a unit responds to.

Memory: the state is ``k`` (score, id, position) triples per channel, whatever the number of
images; two states merge by keeping the ``k`` best of their union under that total order, which
is associative and commutative.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import torch

from ..core import ModelCore
from ..data import Batch, Dataset
from .base import Job
from .reading import reduced_outputs

#: per layer: ``(scores (C, m) float32, ids (C, m) int64, positions (C, m) int64 flat in the map)``, m ≤ k
Top = tuple[np.ndarray, np.ndarray, np.ndarray]
TopState = dict[str, Top]


def best(a: Top, b: Top, k: int) -> Top:
    """The ``k`` best of two candidate sets per channel: score descending, then id ascending."""
    scores, ids, positions = (np.concatenate([x, y], axis=1) for x, y in zip(a, b))
    order = np.lexsort((ids, -scores), axis=1)[:, :k]
    return tuple(np.take_along_axis(x, order, axis=1) for x in (scores, ids, positions))  # type: ignore[return-value]


def _channel_max(bars: dict[str, torch.Tensor], k: int) -> Callable[[str, torch.Tensor], tuple[np.ndarray, np.ndarray]]:
    """The reduction of one layer's ``(B, C, H, W)`` maps: each map's maximum and, for the maps that
    can still enter their channel's top ``k``, its position; the others get score ``-inf``.

    A map can enter when its maximum reaches the bar: the ``k``-th best score so far in the shard
    (``bars[layer]``, from the prior state) and the ``k``-th best of this batch. ``amax`` over all
    maps runs at memory speed; ``max`` with indices over every map would cost several times more,
    so positions are found only for the few maps that pass (at most ``k`` per channel, and ties).
    """
    def reduce(name: str, maps: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        flat = maps.flatten(2)
        values = flat.amax(dim=2)
        bar = bars.get(name)
        bar = None if bar is None else bar.to(values.device, values.dtype)
        if values.shape[0] >= k:
            own = values.topk(k, dim=0).values[-1]
            bar = own if bar is None else torch.maximum(bar, own)
        if bar is None:
            return values.float().cpu().numpy(), flat.max(dim=2).indices.cpu().numpy()
        passing = values >= bar
        rows = passing.flatten().nonzero().flatten()  # the passing maps, as rows of (B·C, H·W)
        where = torch.zeros(values.numel(), dtype=torch.long, device=values.device)
        # the first maximum; max with indices is faster than argmax
        where[rows] = flat.reshape(-1, flat.shape[2]).index_select(0, rows).max(dim=1).indices
        values = values.masked_fill(~passing, -math.inf)
        return values.float().cpu().numpy(), where.view(values.shape).cpu().numpy()
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
        return {name: (np.zeros((c, 0), np.float32), np.zeros((c, 0), np.int64), np.zeros((c, 0), np.int64))
                for name, (c, _, _) in zip(self.layers, self.shapes)}

    def map(self, core: ModelCore, batch: Batch, dataset: Dataset, prior: TopState | None = None) -> TopState:
        if batch.x is None:
            return self.empty()
        bars = {name: torch.from_numpy(prior[name][0][:, self.k - 1].copy()) for name in self.layers
                if prior is not None and prior[name][0].shape[1] >= self.k}
        found = reduced_outputs(core, batch.x, self.layers, _channel_max(bars, self.k))
        state, empty = {}, self.empty()
        for name in self.layers:
            values, where = found[name]
            candidates = (values.T.copy(), np.broadcast_to(batch.ids, values.T.shape).copy(), where.T.astype(np.int64))
            state[name] = best(empty[name], candidates, self.k)
        return state

    def merge(self, a: TopState, b: TopState) -> TopState:
        return {name: best(a[name], b[name], self.k) for name in self.layers}

    def to_table(self, state: TopState) -> pa.Table:
        columns: dict[str, list[np.ndarray]] = {key: [] for key in ("layer", "channel", "rank", "activation", "id",
                                                                  "row", "col")}
        for name, (_c, _h, w) in zip(self.layers, self.shapes):
            scores, ids, positions = state[name]
            channels, ranks = np.indices(scores.shape)
            columns["layer"].append(np.full(scores.size, name, dtype=object))
            columns["channel"].append(channels.ravel().astype(np.int32))
            columns["rank"].append(ranks.ravel().astype(np.int16))
            columns["activation"].append(scores.ravel().astype(np.float32))
            columns["id"].append(ids.ravel())
            columns["row"].append((positions // w).ravel().astype(np.int32))
            columns["col"].append((positions % w).ravel().astype(np.int32))
        return pa.table({key: pa.array(np.concatenate(parts) if parts else [], type=_TYPES[key])
                         for key, parts in columns.items()})

    def state_meta(self, state: TopState) -> dict:
        return {"width": {name: int(state[name][0].shape[1]) for name in self.layers}}

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
            state[name] = (scores, ids, positions)
        return state


_TYPES = {"layer": pa.string(), "channel": pa.int32(), "rank": pa.int16(), "activation": pa.float32(),
          "id": pa.int64(), "row": pa.int32(), "col": pa.int32()}
