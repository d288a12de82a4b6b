"""The channels of one layer as the atlas lists them: peak, mean, selectivity, dead marks, order.

Figures come from a finished dataset-examples result (:class:`~cnnvis_core.jobs.DatasetExamples`):
the peak ``p_c`` is the channel's highest activation over the data set (its best example's), the
mean ``m_c`` the mean over the images of the channel's maximum on each image, and the
selectivity ``p_c / m_c``: large when a few images drive the channel far above its usual peak,
near 1 when every image does about as well. With a channel-statistics result of the same model and
data set (``stats``), the peak is its ``max |a|`` and the mean its mean over every position, as the
Dead channels page reads them. A channel is dead when its peak is ``≤ eps``. A selectivity whose
mean is not positive is undefined (NaN) and sorts last.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..jobs import ChannelStats, DatasetExamples

#: the orders the atlas offers, by name
ORDERS = ("index", "peak", "selectivity")


@dataclass(frozen=True)
class UnitTable:
    """Per channel of ``layer``: ``peak``, ``mean``, ``selectivity`` (``(C,)`` float64) and ``dead``
    (``(C,)`` bool), with where the figures came from (``source``: ``examples`` or ``stats``)."""

    layer: str
    peak: np.ndarray
    mean: np.ndarray
    selectivity: np.ndarray
    dead: np.ndarray
    eps: float
    source: str

    @property
    def channels(self) -> int:
        return int(self.peak.shape[0])

    def order(self, by: str = "index", dead: bool = True) -> list[int]:
        """The channels in the order ``by`` (``index``; ``peak`` and ``selectivity`` highest first,
        ties by index, NaN last); ``dead=False`` leaves the dead ones out."""
        if by not in ORDERS:
            raise InputError(f"Unknown order {by!r}; use one of {', '.join(ORDERS)}.")
        index = np.arange(self.channels)
        if by == "index":
            chosen = index
        else:
            values = self.peak if by == "peak" else self.selectivity
            key = np.where(np.isnan(values), -np.inf, values)
            chosen = np.lexsort((index, np.isnan(values), -key))
        return [int(c) for c in chosen if dead or not self.dead[c]]


def unit_table(result: DatasetExamples, layer: str, stats: ChannelStats | None = None, eps: float = 0.0) -> UnitTable:
    """The :class:`UnitTable` of ``layer`` (see the module docstring)."""
    if stats is not None and layer in stats.layers:
        peak = stats.peak[layer].astype(np.float64)
        mean = stats.mean[layer].astype(np.float64)
        source = "stats"
    else:
        peak, mean, source = result.peak(layer), result.mean_peak(layer), "examples"
    return UnitTable(layer, peak, mean, selectivity(peak, mean), ~(peak > eps), float(eps), source)


def selectivity(peak: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """``peak / mean`` where the mean is positive, else NaN."""
    peak, mean = np.asarray(peak, np.float64), np.asarray(mean, np.float64)
    out = np.full(peak.shape, np.nan)
    positive = mean > 0
    out[positive] = peak[positive] / mean[positive]
    return out


def find_channel(text: str, channels: int) -> int:
    """The channel a search box names (``12``, ``#12``, ``channel 12``), or :class:`InputError`."""
    digits = text.strip().lower().removeprefix("channel").strip().lstrip("#").strip()
    if not digits.isdigit():
        raise InputError(f"Type a channel number between 0 and {channels - 1}.")
    channel = int(digits)
    if not 0 <= channel < channels:
        raise InputError(f"Channel {channel} does not exist: the layer has {channels} (0–{channels - 1}).")
    return channel
