"""The catalogue of a model's layers: every module that produces a tensor, in execution order."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from .errors import LayerError
from .hooks import Action, Tap, tapped
from .layouts import MAP_LAYOUTS, NCHW, OTHER, VECTOR, LayoutTracker, map_shape


@dataclass(frozen=True)
class LayerInfo:
    """One module of the model that outputs a tensor.

    ``name`` is its qualified name as in ``model.named_modules()``, ``kind`` its class name,
    ``output_shape`` the shape of its output for one image without the batch dimension
    (``(C, H, W)`` for a conv map, ``(F,)`` for a vector), ``index`` its place in execution
    order and ``calls`` how often it runs in one forward pass (a shared ReLU runs several
    times; the engine then shows its last output).

    ``layout`` says how the output is laid out (:mod:`cnnvis_core.layouts`): ``NCHW``,
    ``NHWC``, ``tokens`` (then ``prefix_tokens`` class/distillation/register tokens before the
    ``grid`` ``(h, w)`` of patch tokens), ``vector`` or ``other``; decided from the model's
    structure by the probe. Built by hand without one, it follows the shape: ``(C, H, W)`` →
    ``NCHW``, ``(F,)`` → ``vector``, else ``other``.
    """

    name: str
    kind: str
    output_shape: tuple[int, ...]
    index: int
    calls: int = 1
    layout: str = ""
    prefix_tokens: int = 0
    grid: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if not self.layout:
            n = len(self.output_shape)
            object.__setattr__(self, "layout", NCHW if n == 3 else VECTOR if n == 1 else OTHER)

    @property
    def is_spatial(self) -> bool:
        """True for a channels-first ``(C, H, W)`` output (``NCHW``): feature maps to show, and
        channels a hook can index as ``output[:, c]``."""
        return self.layout == NCHW and len(self.output_shape) == 3

    @property
    def map_shape(self) -> tuple[int, int, int] | None:
        """``(C, h, w)`` of the map the output holds read by its layout (NCHW as is, NHWC
        permuted, tokens without the prefix on the grid); None for vectors and ``other``."""
        return map_shape(self.layout, self.output_shape, self.prefix_tokens, self.grid)

    @property
    def has_map(self) -> bool:
        """True for an output holding a ``C×h×w`` map (any map layout) with more than one
        position (``h·w > 1``): a map to look at and to take a CAM on."""
        shape = self.map_shape
        return shape is not None and shape[1] * shape[2] > 1

    @property
    def channels(self) -> int:
        """Channels of the map (``C``) for a map layout, else the first dimension."""
        shape = self.map_shape if self.layout in MAP_LAYOUTS else None
        if shape is not None:
            return shape[0]
        return self.output_shape[0] if self.output_shape else 1

    @property
    def label(self) -> str:
        """``name · kind · C×H×W``, for dropdowns (a layout other than NCHW and vector is named,
        with its map for tokens and NHWC)."""
        text = f"{self.name} · {self.kind} · {'×'.join(map(str, self.output_shape))}"
        if self.layout in (NCHW, VECTOR):
            return text
        shape = self.map_shape
        return f"{text} · {self.layout}" + (f" → {'×'.join(map(str, shape))}" if shape else "")


@torch.no_grad()
def probe_layers(modules: Mapping[str, nn.Module], run: Callable[[], object]) -> list[LayerInfo]:
    """Call ``run()`` (one forward pass) with every named module tapped, and list those whose
    output is a tensor.

    Order is that in which each module *finished* its last call, so a container comes right
    after its children, and a module used several times sits where its last use is.
    Each output's layout is decided on the way (:class:`~cnnvis_core.layouts.LayoutTracker`:
    the model's family, the module's type, the layout of the tensor it was given).
    """
    seen: dict[str, tuple[int, tuple[int, ...], int, object]] = {}
    counter = iter(range(1 << 30))
    root = modules.get("")
    tracker = LayoutTracker(root) if root is not None else None

    def note(name: str) -> Action:
        def action(module: nn.Module, inputs: tuple, output: object) -> None:
            if isinstance(output, torch.Tensor):
                calls = seen[name][2] + 1 if name in seen else 1
                layout = tracker.note(module, inputs, output) if tracker is not None else None
                seen[name] = (next(counter), tuple(output.shape[1:]), calls, layout)
        return action

    with tapped([Tap(module, note(name), every_call=True) for name, module in modules.items() if name]):
        run()
    ordered = sorted(seen.items(), key=lambda item: item[1][0])
    return [LayerInfo(name, type(modules[name]).__name__, shape, i, calls,
                      *((layout.kind, layout.prefix_tokens, layout.grid) if layout is not None else ()))
            for i, (name, (_, shape, calls, layout)) in enumerate(ordered)]


def find_layer(layers: list[LayerInfo], name: str) -> LayerInfo:
    """The layer called ``name``, or a :class:`LayerError` suggesting close names."""
    for layer in layers:
        if layer.name == name:
            return layer
    close = difflib.get_close_matches(str(name), [layer.name for layer in layers], n=3)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise LayerError(f"The model has no layer {name!r}.{hint} engine.layers() lists them all.")
