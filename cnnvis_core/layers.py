"""The catalogue of a model's layers: every module that produces a tensor, in execution order."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from .errors import LayerError
from .hooks import Action, Tap, tapped


@dataclass(frozen=True)
class LayerInfo:
    """One module of the model that outputs a tensor.

    ``name`` is its qualified name as in ``model.named_modules()``, ``kind`` its class name,
    ``output_shape`` the shape of its output for one image without the batch dimension
    (``(C, H, W)`` for a conv map, ``(F,)`` for a vector), ``index`` its place in execution
    order and ``calls`` how often it runs in one forward pass (a shared ReLU runs several
    times; the engine then shows its last output).
    """

    name: str
    kind: str
    output_shape: tuple[int, ...]
    index: int
    calls: int = 1

    @property
    def is_spatial(self) -> bool:
        """True for a ``(C, H, W)`` output, which has feature maps to show."""
        return len(self.output_shape) == 3

    @property
    def has_map(self) -> bool:
        """True for a ``(C, H, W)`` output with more than one position (``H·W > 1``): a map to look at."""
        return self.is_spatial and self.output_shape[1] * self.output_shape[2] > 1

    @property
    def channels(self) -> int:
        return self.output_shape[0] if self.output_shape else 1

    @property
    def label(self) -> str:
        """``name · kind · C×H×W``, for dropdowns."""
        return f"{self.name} · {self.kind} · {'×'.join(map(str, self.output_shape))}"


@torch.no_grad()
def probe_layers(modules: Mapping[str, nn.Module], run: Callable[[], object]) -> list[LayerInfo]:
    """Call ``run()`` (one forward pass) with every named module tapped, and list those whose
    output is a tensor.

    Order is that in which each module *finished* its last call, so a container comes right
    after its children, and a module used several times sits where its last use is.
    """
    seen: dict[str, tuple[int, tuple[int, ...], int]] = {}
    counter = iter(range(1 << 30))

    def note(name: str) -> Action:
        def action(_module: nn.Module, _inputs: tuple, output: object) -> None:
            if isinstance(output, torch.Tensor):
                calls = seen[name][2] + 1 if name in seen else 1
                seen[name] = (next(counter), tuple(output.shape[1:]), calls)
        return action

    with tapped([Tap(module, note(name), every_call=True) for name, module in modules.items() if name]):
        run()
    ordered = sorted(seen.items(), key=lambda item: item[1][0])
    return [LayerInfo(name, type(modules[name]).__name__, shape, i, calls)
            for i, (name, (_, shape, calls)) in enumerate(ordered)]


def find_layer(layers: list[LayerInfo], name: str) -> LayerInfo:
    """The layer called ``name``, or a :class:`LayerError` suggesting close names."""
    for layer in layers:
        if layer.name == name:
            return layer
    close = difflib.get_close_matches(str(name), [layer.name for layer in layers], n=3)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise LayerError(f"The model has no layer {name!r}.{hint} engine.layers() lists them all.")
