"""Forward passes that stop at the target layer, with a gradient that never dies at a ReLU.

To maximise a unit of layer ``L`` only the network up to ``L`` matters: a forward hook on
``L`` records its output and raises a private exception that ends the forward there, so the
rest of the network is never computed. The hooks live inside the ``with`` block only.

A ReLU target has a dead gradient wherever its input is negative: a channel that is dark for
the starting noise (or a neuron at a dark position) would never move. Lucid sidesteps this by
optimising pre-activations (Olah et al., 2017, "Feature Visualization", Distill). Here a ReLU
target is also recorded as a *leaky* copy (:attr:`Captured.leaky`): the post-ReLU values (what
the user sees and what is reported) with the gradient of a leaky ReLU (Maas et al., 2013) in
the backward pass only, see :func:`leaky_gradient`. The loop scores an item through the leaky
copy only while its objective is exactly 0 (its unit is dark wherever it looks), so a lit unit
follows its true gradient.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn

from ..errors import LayerError
from ..hooks import registered

#: slope of the surrogate gradient where a target ReLU's input is negative
LEAK = 0.1

#: activation modules whose zero region gets the surrogate gradient
RECTIFIERS = (nn.ReLU, nn.ReLU6)


class Captured(dict):
    """``{layer: output}`` recorded in one forward pass, and ``leaky``: ``{layer: leaky copy}`` of ReLU targets."""

    def __init__(self) -> None:
        super().__init__()
        self.leaky: dict[str, torch.Tensor] = {}


class _StopForward(Exception):
    """Raised from a forward hook once every wanted layer has produced its output."""


def leaky_gradient(pre: torch.Tensor, post: torch.Tensor, leak: float = LEAK) -> torch.Tensor:
    """``post`` in value, plus ``leak`` × the gradient of ``pre`` where ``pre < 0``.

    ``post + leak · (n - stop_grad(n))`` with ``n = min(pre, 0)``: the added term is exactly
    0 in the forward pass, and in the backward pass ``∂/∂pre = 1[pre > 0] + leak · 1[pre < 0]``,
    the derivative of a leaky ReLU. A dark unit is pushed towards firing instead of staying put.
    """
    negative = pre.clamp(max=0.0)
    return post + leak * (negative - negative.detach())


@contextmanager
def forward_until(model: nn.Module, calls: Mapping[str, int], stop: bool = True,
                  leak: float | None = None) -> Iterator[Captured]:
    """Record the outputs of the named modules (with their graph) during the forward run in the block.

    ``calls[name]`` is how often the module runs in one forward pass (a shared ReLU runs
    several times): its output is recorded at its last call. With ``stop``, once every named
    module has produced that output the forward is ended — the block's remaining statements
    are skipped and the rest of the network is not computed. Outputs are cloned, so in-place
    operations further on (``ReLU(inplace=True)`` after a BatchNorm) cannot change them.
    When gradients are on and ``leak`` (default :data:`LEAK`) is > 0, the output of a ReLU is
    also recorded through :func:`leaky_gradient` (same values) in ``outputs.leaky``.
    :class:`LayerError` if a module never ran.
    """
    leak = LEAK if leak is None else float(leak)
    modules = dict(model.named_modules())
    outputs = Captured()
    inputs: dict[str, torch.Tensor] = {}
    seen = {name: 0 for name in calls}

    def make_pre_hook(name: str):
        def pre_hook(_module: nn.Module, args: tuple) -> None:
            # runs before the (possibly in-place) ReLU overwrites its input; seen[] counts finished calls
            if seen[name] + 1 == calls[name] and args and isinstance(args[0], torch.Tensor):
                inputs[name] = args[0].clone()
        return pre_hook

    def make_hook(name: str):
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            seen[name] += 1
            if seen[name] < calls[name] or not isinstance(output, torch.Tensor):
                return
            outputs[name] = output.clone()
            pre = inputs.pop(name, None)
            if pre is not None and pre.shape == output.shape:
                outputs.leaky[name] = leaky_gradient(pre, outputs[name], leak)
            if stop and len(outputs) == len(calls):
                raise _StopForward
        return hook

    with registered([]) as handles:
        for name in calls:
            module = modules[name]
            if leak > 0 and torch.is_grad_enabled() and isinstance(module, RECTIFIERS):
                handles.append(module.register_forward_pre_hook(make_pre_hook(name)))
            handles.append(module.register_forward_hook(make_hook(name)))
        try:
            yield outputs
        except _StopForward:
            pass
    missing = [name for name in calls if name not in outputs]
    if missing:
        raise LayerError(f"Layer(s) {', '.join(missing)} produced no tensor output in the forward pass; "
                         "choose a layer from engine.layers().")
