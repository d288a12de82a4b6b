"""How to build an engine again somewhere else: :class:`ModelSpec`.

A job on a cluster runs in worker processes that cannot be handed the driver's model object
(pickling a model is slow, and a model loaded from a pickle runs code); each worker builds its
own engine from a small description instead. :meth:`Engine.demo` and :meth:`Engine.from_torchvision`
record theirs on the engine (``engine.spec``); an engine built around a model object has none, and a
job that needs one takes it as an argument.

=========================================  =====================================================
``ModelSpec("demo")``                      the bundled demo model
``ModelSpec("torchvision", name, weights)``  ``weights``: ``"DEFAULT"`` (or a weights name of the
                                           architecture), ``None`` (random) or a file path
=========================================  =====================================================
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import ModelError

#: the kinds of model a spec can name
KINDS = ("demo", "torchvision")


@dataclass(frozen=True)
class ModelSpec:
    """A model by description: ``kind`` (``demo`` or ``torchvision``), and for torchvision the
    architecture ``name`` and ``weights`` (a weights name, ``None`` for random weights, or the
    absolute path of a state-dict file)."""

    kind: str
    name: str | None = None
    weights: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ModelError(f"Unknown model kind {self.kind!r}; use one of {', '.join(KINDS)}.")
        if self.kind == "torchvision" and not self.name:
            raise ModelError("A torchvision model spec needs the architecture's name.")

    @classmethod
    def torchvision(cls, name: str, weights: object = "DEFAULT") -> ModelSpec | None:
        """The spec of ``Engine.from_torchvision(name, weights)``, or None when ``weights`` is held
        in memory (bytes, a file object), which another process cannot read again."""
        if weights is None or (isinstance(weights, str) and not os.path.isfile(weights)):
            return cls("torchvision", name, weights)
        if isinstance(weights, (str, os.PathLike)):
            return cls("torchvision", name, os.path.abspath(os.fspath(weights)))
        return None

    def as_dict(self) -> dict[str, str | None]:
        """JSON-ready: ``{"kind", "name", "weights"}``."""
        return {"kind": self.kind, "name": self.name, "weights": self.weights}

    @classmethod
    def from_dict(cls, data: dict) -> ModelSpec:
        return cls(str(data["kind"]), data.get("name"), data.get("weights"))

    def __str__(self) -> str:
        if self.kind == "demo":
            return "demo"
        weights = "random weights" if self.weights is None else self.weights
        return f"{self.name} ({weights})"
