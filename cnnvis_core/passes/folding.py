"""A faster copy of the model for the many inference-only passes of Score-CAM and kin.

Score-CAM, SS-CAM, IS-CAM and the deletion/insertion curves run the model hundreds or
thousands of times with no gradient. For those passes only, :func:`inference_copy` gives a
copy of the model in which every BatchNorm that directly follows a convolution (and is the
only user of its output) is folded into it, with the weights stored channels-last. In eval
mode BatchNorm is the affine map ``y = γ (z − μ) / √(σ² + ε) + β``; after a convolution
``z = W * x + b`` it is the same convolution with

    ``W' = W · s``,   ``b' = (b − μ) · s + β``,   ``s = γ / √(σ² + ε)`` (one per output channel)

so the copy computes the same function (to float rounding) while skipping one full read and
write of every folded activation.

The pairs are found on one probe forward, without ``torch.fx``: symbolic tracing patches
``nn.Module.__call__`` for the whole process while it runs, so another thread's modules (a
session's preprocessing, another engine) would run through the tracer. Instead taps on the
convolutions and BatchNorms (each called once per pass) see which BatchNorm takes exactly the
tensor a convolution returned, and the autograd graph of that pass tells whether anything
else reads it (the convolution's output node has a single consumer). A model with nothing to
fold, or a copy whose logits differ from the model's on the probe, is not used (the model
itself runs instead). The original model is never modified; the copy is kept in the core's
per-model cache.
"""

from __future__ import annotations

import copy
from collections import Counter

import torch
from torch import nn

from ..core import ModelCore
from ..hooks import Tap, tapped


def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new convolution equal to ``bn(conv(x))`` with ``bn`` in eval mode (see module doc)."""
    scale = bn.weight.detach() if bn.affine else torch.ones_like(bn.running_var)
    shift = bn.bias.detach() if bn.affine else torch.zeros_like(bn.running_mean)
    s = scale / torch.sqrt(bn.running_var + bn.eps)
    fused = copy.deepcopy(conv)
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(bn.running_mean)
    with torch.no_grad():
        fused.weight = nn.Parameter(conv.weight.detach() * s.view(-1, 1, 1, 1), requires_grad=False)
        fused.bias = nn.Parameter((bias - bn.running_mean) * s + shift, requires_grad=False)
    return fused


def foldable_pairs(core: ModelCore, probe: torch.Tensor) -> list[tuple[str, str]]:
    """``(convolution, BatchNorm)`` names where the BatchNorm (in eval mode, with running
    statistics) is the only reader of the convolution's output, both called once per pass.

    One forward of ``probe`` with gradients on (call inside ``core.session()``): taps record
    each convolution's output and each BatchNorm's input; the autograd graph counts readers.
    """
    calls: Counter[str] = Counter()
    produced: dict[int, tuple[str, torch.Tensor]] = {}
    fed: list[tuple[str, str, torch.Tensor]] = []

    def conv_tap(name: str) -> Tap:
        def action(_module: nn.Module, _inputs: tuple, output: object) -> None:
            calls[name] += 1
            if isinstance(output, torch.Tensor):
                produced[id(output)] = (name, output)
        return Tap(core.module(name), action, every_call=True)

    def bn_tap(name: str) -> Tap:
        def action(_module: nn.Module, inputs: tuple, _output: object) -> None:
            calls[name] += 1
            source = produced.get(id(inputs[0])) if inputs else None
            if source is not None and source[1] is inputs[0]:
                fed.append((source[0], name, source[1]))
        return Tap(core.module(name), action, every_call=True)

    convs = [n for n in core.named_modules_of_type(nn.Conv2d) if type(core.module(n)) is nn.Conv2d]
    bns = [n for n in core.named_modules_of_type(nn.BatchNorm2d) if _has_statistics(core.module(n))]
    x = probe.detach().clone().requires_grad_(True)
    with torch.enable_grad(), tapped([*map(conv_tap, convs), *map(bn_tap, bns)]):
        out = core.forward(x)
    if not isinstance(out, torch.Tensor) or out.grad_fn is None:
        return []
    readers = _readers(out.grad_fn)
    return [(conv, bn) for conv, bn, tensor in fed
            if calls[conv] == 1 and calls[bn] == 1 and readers[tensor.grad_fn] == 1]


def _has_statistics(module: nn.Module) -> bool:
    return (type(module) is nn.BatchNorm2d and module.track_running_stats and module.running_mean is not None
            and module.running_var is not None)


def _readers(root: torch.autograd.graph.Node) -> Counter:
    """For every node of the autograd graph below ``root``: how many nodes read its output."""
    readers: Counter = Counter()
    seen, todo = {root}, [root]
    while todo:
        node = todo.pop()
        for parent, _ in node.next_functions:
            if parent is None:
                continue
            readers[parent] += 1
            if parent not in seen:
                seen.add(parent)
                todo.append(parent)
    return readers


def _fold_all(core: ModelCore, probe: torch.Tensor) -> nn.Module | None:
    """A copy of the model with every foldable pair folded; None when nothing folds."""
    pairs = foldable_pairs(core, probe)
    if not pairs:
        return None
    folded = copy.deepcopy(core.model).eval()
    for conv, bn in pairs:
        _replace(folded, conv, fold_batchnorm(core.module(conv), core.module(bn)))
        _replace(folded, bn, nn.Identity())
    return folded.to(memory_format=torch.channels_last)


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def inference_copy(core: ModelCore, probe: torch.Tensor) -> nn.Module:
    """The folded copy of the core's model (eval mode), or the model itself when there is none.

    Call it inside ``core.session()``. The first call for a model and device builds the copy
    and checks it on ``probe`` (a ``(1, 3, H, W)`` input): its logits must match the model's to
    1e-4 of their scale (three counted forward passes: one finds the pairs, two compare).
    """
    folded = core.cache.get(("folded copy", str(probe.device)), lambda: _checked_copy(core, probe))
    return folded or core.model


def _checked_copy(core: ModelCore, probe: torch.Tensor) -> nn.Module | None:
    model = core.model
    fused = _fold_all(core, probe)
    if fused is None:
        return None
    with torch.inference_mode():
        expected, got = model(probe), fused(probe.contiguous(memory_format=torch.channels_last))
    core.counters.add(forward=2)
    if (isinstance(expected, torch.Tensor) and isinstance(got, torch.Tensor) and got.shape == expected.shape
            and torch.allclose(got, expected, rtol=1e-4, atol=1e-4 * (float(expected.abs().max()) + 1e-6))):
        return fused
    return None
