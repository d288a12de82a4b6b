"""A model's input normalisation: finding it in a transform, applying it, undoing it.

A transform normalises a ``[0, 1]`` image channel by channel, ``x = (image − mean) / std``.
Images made as tensors (filter optimisation) must be normalised the same way before the model
sees them, and the model's input tensor must be un-normalised to be shown as a picture
(:mod:`.view`). :func:`find_normalization` is the one place that reads ``mean`` and ``std``
out of a transform.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Triple = tuple[float, float, float]
Stats = tuple[Triple, Triple]

#: how deep :func:`find_normalization` looks into nested ``Compose`` transforms
MAX_DEPTH = 8


def find_normalization(transform: object) -> Stats | None:
    """``(mean, std)`` of the normalisation a transform applies, or None when it has none we can read.

    Reads ``mean``/``std`` on the transform itself (a torchvision weights preset such as
    ``ImageClassification``, or a ``Normalize``), else on the last one inside a ``Compose``
    (torchvision v1 or v2, nested up to :data:`MAX_DEPTH` levels): the normalisation applied
    last is what the model sees. A single value counts for the three channels; a zero or
    negative std is not a normalisation.
    """
    return _search(transform, 0)


def normalization_of(transform: object) -> Stats:
    """:func:`find_normalization`, with ImageNet's ``(mean, std)`` when there is none."""
    found = find_normalization(transform)
    return found if found is not None else (IMAGENET_MEAN, IMAGENET_STD)


def _search(transform: object, depth: int) -> Stats | None:
    if transform is None or depth > MAX_DEPTH:
        return None
    mean, std = _triple(getattr(transform, "mean", None)), _triple(getattr(transform, "std", None))
    if mean is not None and std is not None and all(s > 0 for s in std):
        return mean, std
    children = getattr(transform, "transforms", None)
    if isinstance(children, (Sequence, torch.nn.ModuleList)):
        for child in reversed(list(children)):
            found = _search(child, depth + 1)
            if found is not None:
                return found
    return None


def _triple(values: object) -> Triple | None:
    """Three floats from a sequence or tensor of 1 or 3 finite numbers, else None."""
    if values is None:
        return None
    try:
        seq = [float(v) for v in (values.tolist() if isinstance(values, torch.Tensor) else values)]
    except (TypeError, ValueError):
        return None
    if len(seq) == 1:
        seq = seq * 3
    if len(seq) != 3 or any(v != v for v in seq):
        return None
    return seq[0], seq[1], seq[2]


def normalize(images: torch.Tensor, stats: Stats) -> torch.Tensor:
    """``(images − mean) / std`` per channel, for ``(B, 3, H, W)`` images on the [0, 1] scale."""
    mean, std = _columns(stats, images)
    return (images - mean) / std


def denormalize(x: torch.Tensor, stats: Stats) -> torch.Tensor:
    """``x · std + mean`` per channel: a ``(B, 3, H, W)`` input tensor back on the [0, 1] scale."""
    mean, std = _columns(stats, x)
    return x * std + mean


def _columns(stats: Stats, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean = torch.tensor(stats[0], dtype=like.dtype, device=like.device).view(1, 3, 1, 1)
    std = torch.tensor(stats[1], dtype=like.dtype, device=like.device).view(1, 3, 1, 1)
    return mean, std
