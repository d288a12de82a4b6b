"""The normalisation constants of a model's preprocessing, for images made as tensors.

The engine's transform normalises PIL images; an optimised image is a ``[0, 1]`` tensor that
must be normalised the same way, ``x = (image - mean) / std``, before the model sees it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..engine import IMAGENET_MEAN, IMAGENET_STD

Stats = tuple[tuple[float, float, float], tuple[float, float, float]]


def _triple(values: object) -> tuple[float, float, float] | None:
    try:
        seq = [float(v) for v in (values.tolist() if isinstance(values, torch.Tensor) else values)]
    except (TypeError, ValueError):
        return None
    if len(seq) == 1:
        seq = seq * 3
    return (seq[0], seq[1], seq[2]) if len(seq) == 3 else None


def normalization_of(transform: object) -> Stats:
    """``(mean, std)`` of the transform's normalisation, ImageNet's when it has none we can read.

    Finds ``mean``/``std`` on the transform itself (a torchvision weights preset such as
    ``ImageClassification``, or a ``Normalize``) or on the last ``Normalize`` inside a
    ``Compose`` (torchvision v1 or v2), searched recursively.
    """
    found = _search(transform, depth=0)
    return found if found is not None else (tuple(IMAGENET_MEAN), tuple(IMAGENET_STD))


def _search(transform: object, depth: int) -> Stats | None:
    if transform is None or depth > 8:
        return None
    mean, std = getattr(transform, "mean", None), getattr(transform, "std", None)
    if mean is not None and std is not None:
        m, s = _triple(mean), _triple(std)
        if m is not None and s is not None and all(v > 0 for v in s):
            return m, s
    children = getattr(transform, "transforms", None)
    if isinstance(children, Sequence) or isinstance(children, torch.nn.ModuleList):
        for child in reversed(list(children)):
            found = _search(child, depth + 1)
            if found is not None:
                return found
    return None


def normalize(images: torch.Tensor, stats: Stats) -> torch.Tensor:
    """``(images - mean) / std`` per channel, for ``(B, 3, H, W)`` images on the [0, 1] scale."""
    mean = torch.tensor(stats[0], dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(stats[1], dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images - mean) / std
