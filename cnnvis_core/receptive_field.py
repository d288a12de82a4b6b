"""Receptive fields: which pixels of the input a unit of a layer can see.

For a unit at row ``i``, column ``j`` of a layer's map, :class:`ReceptiveField` gives the box of
input pixels it depends on, clipped to the image. Two ways to get it:

**geometry** (when the layer is reached from the input through a plain chain of convolutions,
poolings and pixel-wise modules: each module's input is the previous one's output, untouched in
between). Per axis, with kernel ``k``, stride ``s``, padding ``p`` and dilation ``d`` (effective
kernel ``k' = d (k − 1) + 1``), the size ``r``, jump ``j`` and first centre ``c`` of the
receptive field follow the recurrence (Dumoulin & Visin, "A guide to convolution arithmetic for
deep learning", arXiv:1603.07285, 2016; Araujo, Norris & Sim, "Computing Receptive Fields of
Convolutional Neural Networks", Distill 2019)::

    r ← r + (k' − 1) j,    c ← c + ((k' − 1) / 2 − p) j,    j ← j s        (from r = j = 1, c = 0)

and unit ``i`` sees the pixels ``c + i j ± (r − 1) / 2``.

**gradient** (any other model: residual additions, concatenations, functions between modules).
The support of ``∂ Σ_c A_c(i, j) / ∂ x`` is the set of pixels the unit depends on. So that no
ReLU or max-pool switch hides a path, it is measured on a positive copy of the model (float64,
every convolution's weights ``1 / fan-in``, batch norms the identity, max-pools as average
pools) fed an image of ones: every path then carries a positive gradient, and the support is the
theoretical receptive field (Luo et al., "Understanding the Effective Receptive Field in Deep
Convolutional Neural Networks", NeurIPS 2016, measure it with the true weights instead). One
backward per row (on the diagonal ``(i, i)``) gives every row's and column's interval. A layer
whose map is read through a layout other than NCHW (a ViT's tokens, a Swin stage's NHWC output:
:func:`~cnnvis_core.layouts.channels_first`) is always measured so: after one global attention
block every patch token sees the whole image.

Both are cached per model and layer (:attr:`~cnnvis_core.core.ModelCore.cache`).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .core import ModelCore
from .errors import LayerError
from .hooks import Tap, tapped
from .layouts import NCHW, channels_first

#: modules that move no pixel (by class name): the chain passes through them
POINTWISE = frozenset({
    "BatchNorm2d", "SyncBatchNorm", "ReLU", "ReLU6", "LeakyReLU", "PReLU", "ELU", "SELU", "CELU", "GELU", "SiLU",
    "Mish", "Sigmoid", "Tanh", "Hardswish", "Hardsigmoid", "Hardtanh", "Softplus", "Identity", "Dropout",
    "Dropout2d", "AlphaDropout", "FrozenBatchNorm2d", "LocalResponseNorm",
})
#: the ways to get a receptive field
METHODS = ("auto", "geometry", "gradient")
Interval = tuple[int, int]


@dataclass(frozen=True)
class ReceptiveField:
    """The input box of every unit of a ``layer``'s map: ``rows[i] = (top, bottom)`` and
    ``cols[j] = (left, right)`` (end exclusive, in pixels of the model's input tensor), and how
    they were found (``method``: ``geometry`` or ``gradient``). ``size`` is the unclipped
    ``(height, width)`` of the field and ``stride`` its step, where the geometry gives them."""

    layer: str
    method: str
    rows: tuple[Interval, ...]
    cols: tuple[Interval, ...]
    size: tuple[int, int] | None = None
    stride: tuple[int, int] | None = None

    def box(self, row: int, col: int) -> tuple[int, int, int, int]:
        """``(left, top, right, bottom)`` of the unit at ``(row, col)``."""
        top, bottom = self.rows[int(row)]
        left, right = self.cols[int(col)]
        return left, top, right, bottom

    def as_dict(self) -> dict:
        return {"layer": self.layer, "method": self.method, "rows": [list(r) for r in self.rows],
                "cols": [list(c) for c in self.cols], "size": list(self.size) if self.size else None,
                "stride": list(self.stride) if self.stride else None}

    @classmethod
    def from_dict(cls, data: dict) -> ReceptiveField:
        def pairs(rows: list) -> tuple[Interval, ...]:
            return tuple((int(a), int(b)) for a, b in rows)
        return cls(data["layer"], data["method"], pairs(data["rows"]), pairs(data["cols"]),
                   tuple(data["size"]) if data.get("size") else None,
                   tuple(data["stride"]) if data.get("stride") else None)


def receptive_field(core: ModelCore, layer: str, method: str = "auto") -> ReceptiveField:
    """The receptive field of every unit of ``layer`` (a layer with a ``(C, H, W)`` map).

    ``method``: ``geometry`` (a :class:`LayerError` when the layer is not reached by a plain
    chain), ``gradient``, or ``auto`` (geometry when it applies, else gradient).
    """
    return receptive_fields(core, [layer], method)[layer]


def receptive_fields(core: ModelCore, layers: Sequence[str], method: str = "auto") -> dict[str, ReceptiveField]:
    """:func:`receptive_field` of several layers; those measured by gradient share one forward pass."""
    if method not in METHODS:
        raise LayerError(f"Unknown receptive-field method {method!r}; use one of {', '.join(METHODS)}.")
    chosen: dict[str, str] = {}
    for layer in layers:
        info = core.layer(layer)
        if info.map_shape is None:
            raise LayerError(f"Layer {layer!r} has no C×h×w map (its output is {info.output_shape}).")
        if info.layout != NCHW:
            chosen[layer] = "gradient"
            continue
        chosen[layer] = method if method != "auto" else "geometry" if chain(core, layer) is not None else "gradient"
    measured = [n for n, m in chosen.items() if m == "gradient" and ("receptive field", n, m) not in core.cache]
    if measured:
        for name, field in by_gradient_many(core, measured).items():
            core.cache.get(("receptive field", name, "gradient"), lambda field=field: field)
    return {n: core.cache.get(("receptive field", n, m), lambda n=n, m=m: by_geometry(core, n) if m == "geometry"
                              else by_gradient(core, n)) for n, m in chosen.items()}


# ---------------------------------------------------------------------------- the chain
def chain(core: ModelCore, layer: str) -> list[nn.Module] | None:
    """The modules from the input to ``layer`` when they form a plain chain of convolutions,
    poolings and pixel-wise modules, else None (cached per layer)."""
    return core.cache.get(("plain chain", layer), lambda: _walk(_trace(core), core.layer(layer).name))


Mark = tuple[int, int]


@dataclass(frozen=True)
class _Trace:
    """One forward pass as seen by the modules: for every leaf call in order, the module, the tensor
    it took (identity and version counter, before it ran) and the one it gave; the input's mark; and
    every named module's last output's mark."""

    calls: tuple[tuple[nn.Module, Mark | None, Mark | None], ...]
    start: Mark
    outputs: dict[str, Mark | None]


def _trace(core: ModelCore) -> _Trace:
    """The :class:`_Trace` of one forward of zeros (cached per model)."""
    def build() -> _Trace:
        x = torch.zeros(1, 3, *core.input_size, device=core.device)
        calls: list[tuple[nn.Module, Mark | None, Mark | None]] = []
        kept: list[torch.Tensor] = [x]  # holds every tensor seen, so that no id is reused
        pending: dict[int, Mark | None] = {}
        outputs: dict[str, Mark | None] = {}

        def mark(t: object) -> Mark | None:
            if not isinstance(t, torch.Tensor):
                return None
            kept.append(t)
            return id(t), t._version

        def before(module: nn.Module, args: tuple) -> None:
            pending[id(module)] = mark(args[0]) if len(args) == 1 else None

        def after(module: nn.Module, _inputs: tuple, output: object) -> None:
            calls.append((module, pending.pop(id(module), None), mark(output)))

        def named(name: str):
            def action(_module: nn.Module, _inputs: tuple, output: object) -> None:
                outputs[name] = mark(output)
            return action

        leaves = [m for m in core.modules_of_type(nn.Module) if not any(True for _ in m.children())]
        taps = [Tap(m, after, every_call=True, before=before) for m in leaves]
        taps += [Tap(core.module(info.name), named(info.name), every_call=True) for info in core.layers()]
        with core.session(), torch.no_grad(), tapped(taps):
            core.model(x)
        return _Trace(tuple(calls), (id(x), x._version), outputs)
    return core.cache.get("module trace", build)


def _walk(trace: _Trace, layer: str) -> list[nn.Module] | None:
    """The chain from the input to ``layer``'s output in ``trace``, or None: each leaf call must
    take what the one before gave, unchanged, and be geometric."""
    target = trace.outputs.get(layer)
    current, walked = trace.start, []
    for module, taken, given in trace.calls:
        if taken is None or taken != current or given is None or not _geometric(module):
            return None
        walked.append(module)
        current = given
        if current == target:
            return walked
    return None


def _geometric(module: nn.Module) -> bool:
    name = type(module).__name__
    if isinstance(module, nn.Conv2d):
        return module.padding_mode == "zeros"
    return isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)) or name in POINTWISE


def _pair(value: object) -> tuple[int, int]:
    return (int(value), int(value)) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _kernel(module: nn.Module) -> tuple[tuple[int, int], ...] | None:
    """``(kernel, stride, padding, dilation)`` pairs of a conv or pool; None for a pixel-wise module."""
    if isinstance(module, nn.Conv2d):
        k, d = _pair(module.kernel_size), _pair(module.dilation)
        if module.padding == "valid":
            p = (0, 0)
        elif module.padding == "same":
            p = tuple((di * (ki - 1)) // 2 for ki, di in zip(k, d))
        else:
            p = _pair(module.padding)
        return k, _pair(module.stride), p, d
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        k = _pair(module.kernel_size)
        d = _pair(getattr(module, "dilation", 1))
        return k, _pair(module.stride or module.kernel_size), _pair(module.padding), d
    return None


def by_geometry(core: ModelCore, layer: str) -> ReceptiveField:
    """The receptive field from the chain's kernels, strides, paddings and dilations (see the
    module docstring); :class:`LayerError` when ``layer`` is not reached by a plain chain."""
    modules = chain(core, layer)
    if modules is None:
        raise LayerError(f"Layer {layer!r} is not reached by a plain chain of convolutions and poolings; "
                         "use method='gradient'.")
    size, jump, first = [1, 1], [1, 1], [0.0, 0.0]
    for module in modules:
        geometry = _kernel(module)
        if geometry is None:
            continue
        for axis in range(2):
            k, s, p, d = (g[axis] for g in geometry)
            effective = d * (k - 1) + 1
            size[axis] += (effective - 1) * jump[axis]
            first[axis] += ((effective - 1) / 2 - p) * jump[axis]
            jump[axis] *= s
    _, h, w = core.layer(layer).output_shape
    height, width = core.input_size

    def intervals(axis: int, count: int, limit: int) -> tuple[Interval, ...]:
        low = [round(first[axis] + i * jump[axis] - (size[axis] - 1) / 2) for i in range(count)]
        return tuple((max(0, lo), min(limit, lo + size[axis])) for lo in low)

    return ReceptiveField(layer, "geometry", intervals(0, h, height), intervals(1, w, width),
                          (size[0], size[1]), (jump[0], jump[1]))


# ---------------------------------------------------------------------------- the gradient
def _positive_copy(core: ModelCore) -> nn.Module:
    """A float64 CPU copy of the model in which every path from input to output carries a positive
    gradient on a positive input (see the module docstring)."""
    with core.session():
        model = copy.deepcopy(core.model)
    model = model.to("cpu", torch.float64).eval()
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Conv2d):
            module.weight.data.fill_(1.0 / module.weight[0].numel())
            if module.bias is not None:
                module.bias.data.zero_()
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_parameters()  # mean 0, variance 1, weight 1, bias 0
        elif isinstance(module, nn.MaxPool2d) and _pair(module.dilation) == (1, 1):
            _replace(model, name, nn.AvgPool2d(module.kernel_size, module.stride, module.padding, module.ceil_mode,
                                               count_include_pad=False))
        elif isinstance(module, nn.AdaptiveMaxPool2d):
            _replace(model, name, nn.AdaptiveAvgPool2d(module.output_size))
    return model


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def _support(grad: torch.Tensor, dim: int) -> Interval:
    """First and one-past-last index where ``grad`` (a 2-D map) is nonzero along ``dim``."""
    hit = torch.nonzero(grad.abs().amax(dim=1 - dim) > 0).flatten()
    return (int(hit[0]), int(hit[-1]) + 1) if hit.numel() else (0, 0)


def _measure(core: ModelCore, model: nn.Module, layer: str, units: list[int], chunk: int = 16
             ) -> dict[int, tuple[Interval, Interval]]:
    """``{i: (rows interval, cols interval)}`` of the units ``(i, i)`` on the diagonal (clamped to the
    map), from the input gradient of the positive copy ``model``, ``chunk`` units per batch."""
    info = core.layer(layer)
    _, h, w = info.map_shape
    module = dict(model.named_modules())[layer]
    found: dict[int, tuple[Interval, Interval]] = {}
    seen: list[torch.Tensor] = []
    tap = Tap(module, lambda _m, _i, out: seen.append(channels_first(info, out)), info.calls, stop=True)
    for start in range(0, len(units), chunk):
        items = units[start:start + chunk]
        x = torch.ones(len(items), 3, *core.input_size, dtype=torch.float64, requires_grad=True)
        with tapped([tap]):
            model(x)
        out = seen[-1]
        picked = torch.stack([out[n, :, min(i, h - 1), min(i, w - 1)].sum() for n, i in enumerate(items)])
        (grad,) = torch.autograd.grad(picked.sum(), x)
        support = grad.abs().sum(1)
        found.update({i: (_support(support[n], 0), _support(support[n], 1)) for n, i in enumerate(items)})
    return found


def _affine(measured: dict[int, Interval], count: int, limit: int) -> tuple[Interval, ...] | None:
    """Every unit's interval from a few measured ones, as ``clip([A + i J, B + i J))`` (how a stack of
    convolutions and poolings maps units to pixels, branches included); None when the measured
    units do not fit that form."""
    units = sorted(measured)
    lows = [(i, measured[i][0]) for i in units if measured[i][0] > 0]
    highs = [(i, measured[i][1]) for i in units if measured[i][1] < limit]
    steps = [(b - a) / (j - i) for edge in (lows, highs) for (i, a), (j, b) in itertools.pairwise(edge)]
    jump = round(steps[0]) if steps else max(1, round(limit / count))
    low = lows[0][1] - lows[0][0] * jump if lows else -(1 << 30)
    high = highs[0][1] - highs[0][0] * jump if highs else 1 << 30
    predicted = tuple((max(0, low + i * jump), min(limit, high + i * jump)) for i in range(count))
    return predicted if all(predicted[i] == measured[i] for i in units) else None


def _units(count: int) -> list[int]:
    """The units measured first on an axis of ``count``: first, second, middle two, last two."""
    return sorted({u for u in (0, 1, count // 2, count // 2 + 1, count - 2, count - 1) if 0 <= u < count})


def _fitted(core: ModelCore, layer: str, found: dict[int, tuple[Interval, Interval]]
            ) -> tuple[tuple[Interval, ...], tuple[Interval, ...]] | None:
    _, h, w = core.layer(layer).map_shape
    height, width = core.input_size
    rows = _affine({min(i, h - 1): r for i, (r, _) in found.items()}, h, height)
    cols = _affine({min(i, w - 1): c for i, (_, c) in found.items()}, w, width)
    return None if rows is None or cols is None else (rows, cols)


def by_gradient(core: ModelCore, layer: str) -> ReceptiveField:
    """The receptive field measured as the support of the input gradient of a positive copy of the
    model (see the module docstring). Six units on the diagonal are measured (first, second, middle
    two, last two); when the rest follow from them as ``clip([A + i J, B + i J))`` it is taken so,
    else every unit is measured."""
    return by_gradient_many(core, [layer])[layer]


def by_gradient_many(core: ModelCore, layers: Sequence[str]) -> dict[str, ReceptiveField]:
    """:func:`by_gradient` of several layers from ONE forward pass of the positive copy (a batch of
    six images of ones) and one backward per layer."""
    model = core.cache.get("positive copy", lambda: _positive_copy(core))
    modules = dict(model.named_modules())
    infos = {name: core.layer(name) for name in layers}
    units = {name: _units(max(info.map_shape[1:])) for name, info in infos.items()}
    seen: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def action(_module: nn.Module, _inputs: tuple, output: object) -> None:
            seen[name] = channels_first(infos[name], output)
        return action

    x = torch.ones(max(len(u) for u in units.values()), 3, *core.input_size, dtype=torch.float64,
                   requires_grad=True)
    with tapped([Tap(modules[name], keep(name), infos[name].calls, stop=True) for name in layers]):
        model(x)
    out: dict[str, ReceptiveField] = {}
    for index, name in enumerate(layers):
        _, h, w = infos[name].map_shape
        picked = sum(seen[name][n, :, min(i, h - 1), min(i, w - 1)].sum() for n, i in enumerate(units[name]))
        (grad,) = torch.autograd.grad(picked, x, retain_graph=index < len(layers) - 1)
        support = grad.abs().sum(1)
        found = {i: (_support(support[n], 0), _support(support[n], 1)) for n, i in enumerate(units[name])}
        fitted = _fitted(core, name, found)
        if fitted is None:  # not of the affine form: every unit
            count = max(h, w)
            found.update(_measure(core, model, name, [u for u in range(count) if u not in found]))
            fitted = tuple(found[i][0] for i in range(h)), tuple(found[i][1] for i in range(w))
        out[name] = ReceptiveField(name, "gradient", *fitted)
    return out
