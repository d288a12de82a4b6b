"""Classes: naming a target class, and ranking classes by score with one tie rule everywhere.

Every call that takes a target class (CAMs, saliency, faithfulness) takes an index or a class
name (case-insensitive) and resolves it with :func:`class_index`. Every ranking (the top-k
predictions, a CAM's default target, ``cam_targets``' top classes) comes from
:func:`top_classes`: higher logit first and, among equal logits, the lower class index first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from .errors import InputError

Target = int | str


class Prediction(NamedTuple):
    """One of the top-k classes: its index, its name and its softmax probability."""

    index: int
    label: str
    probability: float


def class_index(target: Target, categories: Sequence[str], n_classes: int) -> int:
    """A class index from an index or a class name; :class:`InputError` if there is none."""
    if isinstance(target, str):
        names = [c.lower() for c in categories]
        if target.lower() not in names:
            raise InputError(f"No class named {target!r}; give a class index (0–{n_classes - 1}) or one of the "
                             "names in engine.categories.")
        return names.index(target.lower())
    if isinstance(target, bool) or not isinstance(target, (int, np.integer)):
        raise InputError(f"A target class must be an index or a class name, got {type(target).__name__}.")
    if not 0 <= int(target) < n_classes:
        raise InputError(f"Target class {int(target)} is out of range: the model has {n_classes} classes "
                         f"(0–{n_classes - 1}).")
    return int(target)


def top_classes(scores: np.ndarray | torch.Tensor, k: int) -> list[int]:
    """The ``k`` best classes of one image's ``scores``: higher first, the lower index first among equals."""
    values = np.asarray(scores.detach().float().cpu() if isinstance(scores, torch.Tensor) else scores)
    k = max(1, min(int(k), values.shape[-1]))
    if k == 1:
        return [int(values.argmax())]  # the first maximum: the lower index
    return np.argsort(-values, kind="stable")[:k].tolist()


def resolve_targets(scores: np.ndarray, targets: Sequence[Target] | None, top: int,
                    categories: Sequence[str]) -> list[int]:
    """``targets`` as indices, or the ``top`` classes by ``scores`` (one image's logits)."""
    if targets is not None:
        return [class_index(t, categories, int(scores.shape[-1])) for t in targets]
    return top_classes(scores, top)


def top_k(logits: torch.Tensor, categories: Sequence[str], k: int) -> list[Prediction]:
    """The ``k`` most likely classes of one image's ``logits``, with their softmax probabilities."""
    probs = torch.softmax(logits.float(), dim=-1)
    return [Prediction(i, categories[i] if i < len(categories) else f"class {i}", float(probs[i]))
            for i in top_classes(logits, k)]
