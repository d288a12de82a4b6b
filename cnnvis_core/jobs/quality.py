"""How faithful are CAM methods over a data set: deletion and insertion AUCs, and the pointing game.

Per image and method: the map for the image's class (its label when the data set's labels name the
model's classes, else the top-1 prediction), its deletion and insertion AUCs (Petsiuk et al.,
RISE, BMVC 2018; :func:`cnnvis_core.cam.faithfulness`) and, when the data set has object masks,
whether the map's maximum falls on the object's silhouette (the pointing game, Zhang et al.,
ECCV 2016; :func:`cnnvis_core.cam.pointing_game`). The state is one row per (image, method),
merged by concatenation (kept sorted by image id, then method).

Summaries (:func:`interval`, :func:`wilson`): a mean AUC with its 95 % interval
``x̄ ± 1.96 s / √n`` (normal approximation; ``s`` the sample standard deviation), and a hit rate
``h / n`` with Wilson's 95 % score interval (Wilson, JASA 1927), which stays inside [0, 1] and
behaves at rates near 0 or 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
from PIL import Image

from .. import cam
from ..core import ModelCore
from ..data import Batch, Dataset, View
from .base import Job

#: ``{column: array}``: id, method, target, deletion, insertion, hit (1, 0, or -1 without a mask)
Rows = dict[str, np.ndarray]
#: the normal quantile of a two-sided 95 % interval
Z95 = 1.959963984540054


@dataclass(frozen=True)
class Interval:
    """A mean (or rate) with its 95 % interval ``[low, high]`` over ``n`` values."""

    mean: float
    low: float
    high: float
    n: int


def interval(values: np.ndarray) -> Interval:
    """``x̄ ± 1.96 s / √n`` (NaN bounds below two values)."""
    values = np.asarray(values, np.float64)
    n = int(values.size)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(values.mean())
    half = Z95 * float(values.std(ddof=1)) / math.sqrt(n) if n > 1 else math.nan
    return Interval(mean, mean - half, mean + half, n)


def wilson(hits: int, n: int) -> Interval:
    """The rate ``hits / n`` with Wilson's 95 % score interval."""
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    p, z2 = hits / n, Z95 ** 2
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return Interval(p, centre - half, centre + half, n)


def empty_rows() -> Rows:
    return {"id": np.zeros(0, np.int64), "method": np.zeros(0, object), "target": np.zeros(0, np.int64),
            "deletion": np.zeros(0, np.float64), "insertion": np.zeros(0, np.float64), "hit": np.zeros(0, np.int8)}


@dataclass(frozen=True)
class CamQualityJob(Job[Rows]):
    """Deletion/insertion AUCs and pointing game of ``methods`` on ``layer`` (None: the default CAM
    layer), ``steps`` steps per curve, extra CAM ``options``; ``view`` maps masks to the model's input."""

    methods: tuple[str, ...]
    layer: str | None = None
    steps: int = 32
    options: tuple[tuple[str, Any], ...] = ()
    view: View | None = None

    kind: ClassVar[str] = "cam_quality"

    def settings(self) -> dict[str, Any]:
        return {"methods": list(self.methods), "layer": self.layer, "steps": self.steps,
                "options": dict(self.options), "view": self.view.as_dict() if self.view else None}

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> CamQualityJob:
        view = View.from_dict(settings["view"]) if settings.get("view") else None
        return cls(tuple(settings["methods"]), settings.get("layer"), int(settings["steps"]),
                   tuple(sorted(settings.get("options", {}).items())), view)

    def layer_names(self) -> list[str]:
        return [self.layer] if self.layer else []

    def empty(self) -> Rows:
        return empty_rows()

    def _target(self, core: ModelCore, dataset: Dataset, id_: int, target: int | None) -> int | None:
        if target is not None:
            return int(target)
        label = dataset.label(id_)
        categories = core.categories
        return categories.index(label) if label in categories else None

    def _mask(self, mask: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray | None:
        if mask is None:
            return None
        if mask.shape != shape and self.view is not None:
            mask = np.asarray(self.view.apply(Image.fromarray(mask.astype(np.uint8) * 255), Image.Resampling.NEAREST))
        return cam.silhouette(np.asarray(mask) > 0) if np.asarray(mask).shape == shape else None

    def map(self, core: ModelCore, batch: Batch, dataset: Dataset, prior: Rows | None = None) -> Rows:
        rows: dict[str, list] = {key: [] for key in empty_rows()}
        if batch.x is None:
            return empty_rows()
        for n, id_ in enumerate(batch.ids):
            x = batch.x[n:n + 1]
            target = self._target(core, dataset, int(id_), batch.targets[n])
            found = cam.compute(core, x, list(self.methods), self.layer, None if target is None else [target],
                                **dict(self.options))
            for method in self.methods:
                result = found[method][0]
                curves = cam.faithfulness(core, x, result.map, result.target, self.steps)
                mask = self._mask(batch.masks[n], result.map.shape)
                hit = -1 if mask is None else int(cam.pointing_game(result.map, mask))
                for key, value in (("id", int(id_)), ("method", method), ("target", result.target),
                                   ("deletion", curves.deletion_auc), ("insertion", curves.insertion_auc),
                                   ("hit", hit)):
                    rows[key].append(value)
        return {key: np.asarray(values, dtype=empty_rows()[key].dtype) for key, values in rows.items()}

    def merge(self, a: Rows, b: Rows) -> Rows:
        joined = {key: np.concatenate([a[key], b[key]]) for key in a}
        rank = {m: i for i, m in enumerate(self.methods)}
        order = np.lexsort((np.array([rank[m] for m in joined["method"]], dtype=np.int64), joined["id"]))
        return {key: values[order] for key, values in joined.items()}

    def to_table(self, state: Rows) -> pa.Table:
        return pa.table({key: pa.array(values, type=_TYPES[key]) for key, values in state.items()})

    def from_table(self, table: pa.Table, meta: dict) -> Rows:
        return {key: table.column(key).to_numpy(zero_copy_only=False).astype(dtype.dtype)
                for key, dtype in empty_rows().items()}


_TYPES = {"id": pa.int64(), "method": pa.string(), "target": pa.int64(), "deletion": pa.float64(),
          "insertion": pa.float64(), "hit": pa.int8()}
