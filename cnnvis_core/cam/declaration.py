"""How a CAM method is declared, and the registry of declared methods.

A method is ONE :class:`CamMethod` value: its name, title and paper, its kind, the function
that makes its map, and its options with their defaults and labels. Everything else is
derived from the declarations: the names :func:`cnnvis_core.cam.compute` accepts and how it
runs each kind, the options it checks, the page's method list, labels, option widgets and
cost estimates. The built-in methods are declared in :mod:`.methods`; a new one is declared
there (or anywhere, with :func:`register`).

Kinds, by what a map costs:

- ``shared``: needs only the target layer's activation ``A`` (and, with ``gradients``, its
  gradient ``G``) of ONE pass; every shared method asked for, for every target, comes from
  one forward and at most one backward. Give ``weights(A, G) → (T, C)`` when the map is
  ``ReLU(Σ_k w_k A_k)`` (those are computed with one product for all of them), or
  ``map(pass) → (T, h, w)`` with a :class:`~cnnvis_core.cam.base.SharedPass`.
- ``sampled``: its own passes over a batch of perturbed copies of the input;
  ``compute(core, x, layer, targets, top, **options) → [CamResult per target]``.
- ``masked``: Score-CAM's scheme, one masked inference pass per channel and sample, batched;
  ``variants(masks, variant, n, sigma, seed, items)`` turns each channel's mask into its
  samples (see :func:`cnnvis_core.cam.activation.score_cam`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError

SHARED = "shared"
SAMPLED = "sampled"
MASKED = "masked"
KINDS = (SHARED, SAMPLED, MASKED)


@dataclass(frozen=True)
class Option:
    """One keyword option of a method: its default, a label and help for a person, and, for a
    number, the range a widget offers (``low``, ``high``, ``step``); ``choices`` for a choice.
    ``widget=False`` for options no form can set (a callback)."""

    name: str
    default: Any
    label: str
    help: str = ""
    low: float | None = None
    high: float | None = None
    step: float | None = None
    choices: tuple = ()
    widget: bool = True


@dataclass(frozen=True)
class CamMethod:
    """One class activation map method (see the module docstring for the kinds)."""

    #: the name calls use (``engine.cam(image, name)``)
    name: str
    #: what a person reads, and the paper (``Grad-CAM``, ``Selvaraju et al. 2017``)
    title: str
    paper: str
    #: ``shared``, ``sampled`` or ``masked``
    kind: str
    #: the formula in one line
    summary: str = ""
    #: shared: ``(A, G) → w (T, C)`` for ``ReLU(Σ_k w_k A_k)``, or ``SharedPass → raw maps (T, h, w)``
    weights: Callable | None = None
    map: Callable | None = None
    #: sampled: ``(core, x, layer, targets, top, **options) → [CamResult]``
    compute: Callable | None = None
    #: masked: ``(masks, variant, n, sigma, seed, items) → the masks' samples``
    variants: Callable | None = None
    #: shared: whether the pass must run the backward for this method
    gradients: bool = True
    #: shared: whether it reads the final linear layer (the pass then records that layer's input)
    reads_head: bool = False
    options: tuple[Option, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"CamMethod {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}.")
        needed = {SHARED: self.weights or self.map, SAMPLED: self.compute, MASKED: self.variants}[self.kind]
        if needed is None:
            what = {SHARED: "weights or map", SAMPLED: "compute", MASKED: "variants"}[self.kind]
            raise ValueError(f"CamMethod {self.name!r} of kind {self.kind!r} needs {what}.")

    @property
    def label(self) -> str:
        """``Title (Paper)``, how the method is shown to a person."""
        return f"{self.title} ({self.paper})"

    @property
    def option_names(self) -> tuple[str, ...]:
        return tuple(option.name for option in self.options)

    def defaults(self) -> dict[str, Any]:
        """``{option: default}``."""
        return {option.name: option.default for option in self.options}

    def settings(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """The defaults updated with the options in ``given`` that this method takes."""
        return {**self.defaults(), **{k: v for k, v in given.items() if k in self.option_names}}

    def passes_per_channel(self, given: Mapping[str, Any] | None = None) -> int:
        """Masked inference passes per channel of the layer (0 for other kinds): ``n_samples``
        when the method has that option, else one."""
        if self.kind != MASKED:
            return 0
        return int(self.settings(given or {}).get("n_samples", 1))


_registry: dict[str, CamMethod] = {}
_lock = threading.Lock()


def register(method: CamMethod) -> CamMethod:
    """Add ``method`` to the registry (after the others); returns it. A name already taken is an error."""
    with _lock:
        if method.name in _registry:
            raise ValueError(f"A CAM method named {method.name!r} is registered already.")
        _registry[method.name] = method
    return method


def unregister(name: str) -> None:
    """Remove a registered method (a test's toy method, say)."""
    with _lock:
        _registry.pop(name, None)


def registered() -> tuple[CamMethod, ...]:
    """Every registered method, in registration order (the order the page lists them)."""
    with _lock:
        return tuple(_registry.values())


def method(name: str) -> CamMethod:
    """The method called ``name``; :class:`InputError` listing the names when there is none."""
    with _lock:
        found = _registry.get(name)
        names = tuple(_registry)
    if found is None:
        raise InputError(f"Unknown CAM method {name!r}; use one of {', '.join(names)}.")
    return found
