"""Channel statistics over a data set: peak, mean and the fraction of positive positions.

For channel ``c`` of a layer with ``(C, H, W)`` maps over ``N`` images:

- peak ``p_c = max_{n,i,j} |A_c(x_n)(i, j)|`` (the quantity :mod:`cnnvis_core.pruning` thresholds:
  a channel with ``p_c ≤ ε`` is dead; Hu et al., "Network Trimming", 2016),
- mean ``m_c = (1 / N H W) Σ_{n,i,j} A_c(x_n)(i, j)``,
- active fraction ``a_c = (1 / N H W) #{(n, i, j) : A_c(x_n)(i, j) > 0}`` (1 − APoZ after a ReLU).

The state is per channel the peak (merged by max), the sum (each image's map summed in float32,
images and batches added in float64) and the count of positive positions (merged by addition),
and per layer the number of positions: associative, and exact except for the float64 sums, whose
order the runner fixes (shards are folded in shard order), so that any executor gives the same bits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import torch

from ..core import ModelCore
from ..data import Batch, Dataset
from .base import Job
from .reading import reduced_outputs, scratch

#: per layer: ``(peak (C,) float32, sum (C,) float64, positive (C,) int64, positions per channel)``
Moments = tuple[np.ndarray, np.ndarray, np.ndarray, int]
StatsState = dict[str, Moments]


def _moments(nonnegative: frozenset[str]) -> Callable[[str, torch.Tensor], Moments]:
    """Peak, sum and positive count per channel of one batch's ``(B, C, H, W)`` maps. ``amax`` and
    ``amin`` apart are each a fraction of ``aminmax``'s time, and ``amin`` is left out for the
    layers in ``nonnegative`` (ReLUs); the positive count sums a float 0/1 mask (exact below 2²⁴
    positions per map), much faster than summing a bool tensor."""
    def reduce(name: str, maps: torch.Tensor) -> Moments:
        return _reduced(maps, name in nonnegative)
    return reduce


def _reduced(maps: torch.Tensor, nonnegative: bool) -> Moments:
    flat = maps.flatten(2)
    peak = flat.amax(2).amax(0)
    if not nonnegative:
        peak = torch.maximum(peak, -flat.amin(2).amin(0))
    total = flat.sum(dim=2).sum(dim=0, dtype=torch.float64)  # per image in float32, over images in float64
    positive = torch.gt(flat, 0, out=scratch(flat)).sum(dim=2).sum(dim=0, dtype=torch.float64)
    return (peak.float().cpu().numpy(), total.cpu().numpy(), positive.cpu().numpy().astype(np.int64),
            int(flat.shape[0] * flat.shape[2]))


@dataclass(frozen=True)
class StatsJob(Job[StatsState]):
    """Per-channel peak, sum and positive count of ``layers`` (``channels``: each one's C)."""

    layers: tuple[str, ...]
    channels: tuple[int, ...]
    #: the layers whose outputs are never negative (ReLU, ReLU6): their peak is their maximum
    nonnegative: frozenset[str] = frozenset()

    kind: ClassVar[str] = "channel_stats"

    def settings(self) -> dict[str, Any]:
        return {"layers": list(self.layers), "channels": list(self.channels), "nonnegative": sorted(self.nonnegative)}

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> StatsJob:
        return cls(tuple(settings["layers"]), tuple(int(c) for c in settings["channels"]),
                   frozenset(settings.get("nonnegative", ())))

    def layer_names(self) -> list[str]:
        return list(self.layers)

    def empty(self) -> StatsState:
        return {name: (np.zeros(c, np.float32), np.zeros(c, np.float64), np.zeros(c, np.int64), 0)
                for name, c in zip(self.layers, self.channels)}

    def map(self, core: ModelCore, batch: Batch, dataset: Dataset, prior: StatsState | None = None) -> StatsState:
        if batch.x is None:
            return self.empty()
        return reduced_outputs(core, batch.x, self.layers, _moments(self.nonnegative), overlap=True)

    def merge(self, a: StatsState, b: StatsState) -> StatsState:
        return {name: (np.maximum(a[name][0], b[name][0]), a[name][1] + b[name][1], a[name][2] + b[name][2],
                       a[name][3] + b[name][3]) for name in self.layers}

    def to_table(self, state: StatsState) -> pa.Table:
        parts = {key: [] for key in ("layer", "channel", "peak", "sum", "positive", "positions")}
        for name, c in zip(self.layers, self.channels):
            peak, total, positive, positions = state[name]
            parts["layer"].append(np.full(c, name, dtype=object))
            parts["channel"].append(np.arange(c, dtype=np.int32))
            parts["peak"].append(peak)
            parts["sum"].append(total)
            parts["positive"].append(positive)
            parts["positions"].append(np.full(c, positions, dtype=np.int64))
        return pa.table({key: pa.array(np.concatenate(values), type=_TYPES[key]) for key, values in parts.items()})

    def from_table(self, table: pa.Table, meta: dict) -> StatsState:
        layer_column = table.column("layer").to_numpy(zero_copy_only=False)
        columns = {key: table.column(key).to_numpy() for key in ("channel", "peak", "sum", "positive", "positions")}
        state = {}
        for name in self.layers:
            rows = np.flatnonzero(layer_column == name)
            rows = rows[np.argsort(columns["channel"][rows])]
            positions = int(columns["positions"][rows[0]]) if rows.size else 0
            state[name] = (columns["peak"][rows].astype(np.float32), columns["sum"][rows].astype(np.float64),
                           columns["positive"][rows].astype(np.int64), positions)
        return state


_TYPES = {"layer": pa.string(), "channel": pa.int32(), "peak": pa.float32(), "sum": pa.float64(),
          "positive": pa.int64(), "positions": pa.int64()}
