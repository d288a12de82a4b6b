"""What to maximise: objectives over captured activations, and their algebra.

An :class:`Objective` maps the activations captured in one forward pass, ``{layer: (B, …)}``
(the model's logits under :data:`OUTPUT`), to one score per batch item, a ``(B,)`` tensor.
Activation maximisation (Erhan et al., 2009, "Visualizing Higher-Layer Features of a Deep
Network") follows the gradient of that score with respect to the input image.

Objectives form an algebra, as in Lucid (Olah et al., 2017, "Feature Visualization",
Distill)::

    channel("features.relu5", 3) + 0.5 * neuron("features.relu5", 7, 8, 8) - deepdream("features.relu3")

:func:`per_item` puts one objective on each batch item, so that many units are optimised at
once as one batch (item ``b`` is scored by ``objectives[b]`` alone).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from ..errors import InputError

#: key of the model's output (the pre-softmax logits) in the activations dict
OUTPUT = "<output>"

Activations = Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class Objective:
    """A score per batch item, ``fn(activations) -> (B,)``, needing the outputs of ``layers``.

    Supports ``a + b``, ``a - b``, ``k * a``, ``a * k``, ``-a`` and ``a / k`` (``k`` a number).
    """

    fn: Callable[[Activations], torch.Tensor]
    layers: frozenset[str]
    name: str

    def __call__(self, activations: Activations) -> torch.Tensor:
        return self.fn(activations)

    def __add__(self, other: Objective | float) -> Objective:
        if isinstance(other, (int, float)):
            k = float(other)
            return Objective(lambda acts: self(acts) + k, self.layers, f"{self.name} + {k:g}")
        if not isinstance(other, Objective):
            return NotImplemented
        return Objective(lambda acts: self(acts) + other(acts), self.layers | other.layers,
                         f"{self.name} + {other.name}")

    __radd__ = __add__

    def __mul__(self, k: float) -> Objective:
        if not isinstance(k, (int, float)):
            return NotImplemented
        k = float(k)
        return Objective(lambda acts: k * self(acts), self.layers, f"{k:g}·({self.name})")

    __rmul__ = __mul__

    def __neg__(self) -> Objective:
        return -1.0 * self

    def __sub__(self, other: Objective | float) -> Objective:
        return self + (-other)

    def __rsub__(self, other: float) -> Objective:
        return (-self) + other

    def __truediv__(self, k: float) -> Objective:
        return self * (1.0 / float(k))


def _inner(t: torch.Tensor, border: int) -> torch.Tensor:
    """``t`` without ``border`` positions on each side of its last two (spatial) dimensions."""
    if border <= 0 or t.dim() < 3:
        return t
    h, w = t.shape[-2:]
    b = min(border, (h - 1) // 2, (w - 1) // 2)
    return t[..., b:h - b, b:w - b] if b > 0 else t


def channel(layer: str, index: int, border: int = 0) -> Objective:
    """Mean activation of channel ``index``: ``mean_{y,x} A[b, index, y, x]`` (``A[b, index]`` for a vector).

    ``border``: ignore that many positions at each edge of the map (the keras recipe uses 2).
    """
    index, border = int(index), int(border)

    def fn(acts: Activations) -> torch.Tensor:
        a = acts[layer][:, index]
        a = _inner(a.unsqueeze(1), border)[:, 0] if a.dim() == 3 else a
        return a.reshape(a.shape[0], -1).mean(1)

    return Objective(fn, frozenset({layer}), f"{layer}:{index}")


def neuron(layer: str, index: int, y: int | None = None, x: int | None = None) -> Objective:
    """One unit of a conv map: ``A[b, index, y, x]`` (the centre of the map by default)."""
    index = int(index)

    def fn(acts: Activations) -> torch.Tensor:
        a = acts[layer]
        h, w = a.shape[-2:]
        yy = h // 2 if y is None else int(y)
        xx = w // 2 if x is None else int(x)
        if not (0 <= yy < h and 0 <= xx < w):
            raise InputError(f"Neuron position ({yy}, {xx}) is outside the {h}×{w} map of {layer} at this "
                             f"image size; choose 0 ≤ y < {h}, 0 ≤ x < {w}, or leave it for the centre.")
        return a[:, index, yy, xx]

    where = "centre" if y is None and x is None else f"({y}, {x})"
    return Objective(fn, frozenset({layer}), f"{layer}:{index}@{where}")


def class_logit(index: int) -> Objective:
    """The pre-softmax score of class ``index``: ``z[b, index]`` (classes don't compete through softmax)."""
    index = int(index)
    return Objective(lambda acts: acts[OUTPUT][:, index], frozenset({OUTPUT}), f"logit {index}")


def deepdream(layer: str) -> Objective:
    """The whole layer, DeepDream's objective: ``Σ_{c,y,x} A[b, c, y, x]²`` (Mordvintsev et al., 2015)."""

    def fn(acts: Activations) -> torch.Tensor:
        a = acts[layer]
        return a.pow(2).reshape(a.shape[0], -1).sum(1)

    return Objective(fn, frozenset({layer}), f"deepdream {layer}")


def per_item(objectives: Sequence[Objective]) -> Objective:
    """Score item ``b`` of a batch with ``objectives[b]`` alone (one unit per batch item).

    Each objective sees its own item's activations only (``A[b:b+1]``), so an item's score,
    and hence its gradient, does not depend on the rest of the batch. The items are cut with one
    ``split`` per layer, whose backward assembles the batch's gradient in one pass (slicing item by
    item would build a zero-filled batch-sized gradient per item: quadratic in the batch size).
    """
    objectives = list(objectives)
    layers = frozenset().union(*(o.layers for o in objectives)) if objectives else frozenset()

    def fn(acts: Activations) -> torch.Tensor:
        items = {k: v.split(1) for k, v in acts.items()}
        scores = [obj({k: parts[b] for k, parts in items.items()}) for b, obj in enumerate(objectives)]
        return torch.cat([s.reshape(1) for s in scores])

    return Objective(fn, layers, " | ".join(o.name for o in objectives))
