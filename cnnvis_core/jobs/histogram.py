"""Fixed-bin histograms of each channel's per-image peak, kept sparse so that they merge by addition.

The bins do not depend on the data, so two histograms of disjoint parts of a data set merge by
adding counts (associative and commutative, exact). Bins are logarithmic in ``|x|``, mirrored for
negative values: :data:`PER_OCTAVE` bins per factor of 2 between ``2**LOW`` and ``2**HIGH`` (each
bin ≈ 9 % wide, relative), one bin for ``|x| < 2**LOW`` (zero), values beyond ``2**HIGH`` in the
outermost bins. A layer's histogram is two arrays: sorted unique keys ``channel * WIDTH + bin``
and their counts (only non-empty bins are kept: a channel's peaks over thousands of images fill a
few dozen bins, not :data:`WIDTH`).
"""

from __future__ import annotations

import numpy as np

#: bins per octave of |x|
PER_OCTAVE = 8
#: exponents of 2 covered: ``2**LOW ≤ |x| < 2**HIGH`` get log bins
LOW, HIGH = -20, 20
#: log bins per sign
SIDE = (HIGH - LOW) * PER_OCTAVE
#: bins per channel: SIDE negative, one zero bin (index SIDE), SIDE positive
WIDTH = 2 * SIDE + 1

#: ``(keys int64 sorted unique, counts int64)``
Sparse = tuple[np.ndarray, np.ndarray]


def empty() -> Sparse:
    return np.zeros(0, np.int64), np.zeros(0, np.int64)


def bin_index(values: np.ndarray) -> np.ndarray:
    """The bin of each value (same shape, int64 in ``[0, WIDTH)``); NaN counts as zero."""
    values = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0)
    magnitude = np.abs(values)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        level = np.floor((np.log2(np.maximum(magnitude, 2.0 ** LOW)) - LOW) * PER_OCTAVE)
    level = np.clip(np.nan_to_num(level, posinf=SIDE - 1), 0, SIDE - 1).astype(np.int64) + 1
    signed = np.where(values < 0, -level, level)
    return np.where(magnitude < 2.0 ** LOW, 0, signed) + SIDE


def edges(bins: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ``(low, high)`` value range of each bin index (the outermost bins end at ±2**HIGH)."""
    signed = np.asarray(bins, dtype=np.int64) - SIDE
    level = np.abs(signed)
    inner = np.where(level > 0, 2.0 ** (LOW + (level - 1) / PER_OCTAVE), 0.0)
    outer = np.where(level > 0, 2.0 ** (LOW + level / PER_OCTAVE), 2.0 ** LOW)
    low = np.where(signed < 0, -outer, np.where(level == 0, -(2.0 ** LOW), inner))
    high = np.where(signed < 0, -inner, outer)
    return low, high


def of_peaks(peaks: np.ndarray) -> Sparse:
    """The histogram of a ``(B, C)`` array of per-image peaks (one count per image and channel)."""
    peaks = np.asarray(peaks)
    channels = np.broadcast_to(np.arange(peaks.shape[1], dtype=np.int64), peaks.shape)
    keys, counts = np.unique((channels * WIDTH + bin_index(peaks)).ravel(), return_counts=True)
    return keys.astype(np.int64), counts.astype(np.int64)


def merged(a: Sparse, b: Sparse) -> Sparse:
    """The histogram of the union of two disjoint parts: counts added bin by bin."""
    keys, where = np.unique(np.concatenate([a[0], b[0]]), return_inverse=True)
    counts = np.bincount(where, weights=np.concatenate([a[1], b[1]]), minlength=keys.size)
    return keys.astype(np.int64), np.rint(counts).astype(np.int64)


def channel(hist: Sparse, c: int) -> tuple[np.ndarray, np.ndarray]:
    """``(bins, counts)`` of channel ``c``: its non-empty bins, ascending."""
    keys, counts = hist
    start, stop = np.searchsorted(keys, [c * WIDTH, (c + 1) * WIDTH])
    return keys[start:stop] - c * WIDTH, counts[start:stop]


def by_channel(hist: Sparse, channels: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """:func:`channel` for every channel ``0 … channels − 1``."""
    return [channel(hist, c) for c in range(channels)]


def from_channels(parts: list[tuple[np.ndarray, np.ndarray]]) -> Sparse:
    """The inverse of :func:`by_channel`."""
    keys = [np.asarray(bins, np.int64) + c * WIDTH for c, (bins, _) in enumerate(parts)]
    counts = [np.asarray(n, np.int64) for _, n in parts]
    if not keys:
        return empty()
    return np.concatenate(keys), np.concatenate(counts)
