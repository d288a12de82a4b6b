"""The model a job runs: its description (:class:`~cnnvis_core.spec.ModelSpec`), an engine built from
it (in a cluster worker), and a hash of its weights (which names it in results and checks that a
worker built the same model as the caller)."""

from __future__ import annotations

import hashlib

import torch

from ..core import ModelCore
from ..engine import Engine
from ..spec import ModelSpec
from .base import JobError


def weights_hash(core: ModelCore) -> str:
    """SHA-256 (16 hex digits) of the model's state dict: every entry's name, dtype, shape and bytes,
    in order (cached per model)."""
    def build() -> str:
        h = hashlib.sha256()
        with core.session():
            for name, tensor in core.model.state_dict().items():
                data = tensor.detach().cpu().contiguous()
                h.update(f"{name}|{data.dtype}|{tuple(data.shape)}|".encode())
                h.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()[:16]
    return core.cache.get("weights sha256", build)


def spec_of(core: ModelCore, given: ModelSpec | tuple | None = None) -> ModelSpec | None:
    """The spec given (a :class:`ModelSpec` or a tuple such as ``("demo",)`` or ``("torchvision",
    "resnet50", None)``), else the one the engine recorded, else None."""
    if given is not None:
        return given if isinstance(given, ModelSpec) else ModelSpec(*given)
    return getattr(core, "spec", None)


def build(spec: ModelSpec, device: str | torch.device | None = None) -> Engine:
    """An engine built from ``spec`` on ``device`` (default: cuda when available)."""
    if spec.kind == "demo":
        return Engine.demo(device=device)
    return Engine.from_torchvision(spec.name, spec.weights, device=device)


def check_same(core: ModelCore, expected: str) -> None:
    """:class:`JobError` when ``core``'s weights are not those of hash ``expected``."""
    found = weights_hash(core)
    if found != expected:
        raise JobError(f"The model built from its spec has other weights (sha256 {found}) than the caller's "
                       f"({expected}); pass model=ModelSpec(...) that builds the same model.")
