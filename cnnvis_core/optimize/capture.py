"""Forward passes that stop at the target layer, with a gradient that never dies at a ReLU.

To maximise a unit of layer ``L`` only the network up to ``L`` matters: a stopping tap on
``L`` (:mod:`cnnvis_core.hooks`) records its output and ends the forward there, so the rest of
the network is never computed. The hooks live inside the ``with`` block only.

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

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from ..core import ModelCore
from ..errors import LayerError
from ..hooks import Tap, tapped

#: slope of the surrogate gradient where a target ReLU's input is negative
LEAK = 0.1

#: activation modules whose zero region gets the surrogate gradient
RECTIFIERS = (nn.ReLU, nn.ReLU6)


class Captured(dict):
    """``{layer: output}`` recorded in one forward pass, and ``leaky``: ``{layer: leaky copy}`` of ReLU targets."""

    def __init__(self) -> None:
        super().__init__()
        self.leaky: dict[str, torch.Tensor] = {}


def leaky_gradient(pre: torch.Tensor, post: torch.Tensor, leak: float = LEAK) -> torch.Tensor:
    """``post`` in value, plus ``leak`` × the gradient of ``pre`` where ``pre < 0``.

    ``post + leak · (n - stop_grad(n))`` with ``n = min(pre, 0)``: the added term is exactly
    0 in the forward pass, and in the backward pass ``∂/∂pre = 1[pre > 0] + leak · 1[pre < 0]``,
    the derivative of a leaky ReLU. A dark unit is pushed towards firing instead of staying put.
    """
    negative = pre.clamp(max=0.0)
    return post + leak * (negative - negative.detach())


@contextmanager
def forward_until(core: ModelCore, names: Iterable[str], stop: bool = True,
                  leak: float | None = None) -> Iterator[Captured]:
    """Record the outputs of the named layers (with their graph) during the forward run in the block.

    A layer's output is recorded at its last call in the pass (a shared ReLU runs several times).
    With ``stop``, once every named layer has produced that output the forward is ended — the
    block's remaining statements are skipped and the rest of the network is not computed.
    Outputs are cloned, so in-place operations further on (``ReLU(inplace=True)`` after a
    BatchNorm) cannot change them. When gradients are on and ``leak`` (default :data:`LEAK`) is
    > 0, the output of a ReLU is also recorded through :func:`leaky_gradient` (same values) in
    ``outputs.leaky``. :class:`LayerError` if a layer never ran.
    """
    leak = LEAK if leak is None else float(leak)
    names = list(dict.fromkeys(names))
    outputs = Captured()
    inputs: dict[str, torch.Tensor] = {}
    leaky = leak > 0 and torch.is_grad_enabled()

    def taps(name: str) -> Tap:
        def before(_module: nn.Module, args: tuple) -> None:
            # runs before the (possibly in-place) ReLU overwrites its input
            if args and isinstance(args[0], torch.Tensor):
                inputs[name] = args[0].clone()

        def action(_module: nn.Module, _inputs: tuple, output: object) -> None:
            if not isinstance(output, torch.Tensor):
                return
            outputs[name] = output.clone()
            pre = inputs.pop(name, None)
            if pre is not None and pre.shape == output.shape:
                outputs.leaky[name] = leaky_gradient(pre, outputs[name], leak)

        rectifier = leaky and isinstance(core.module(name), RECTIFIERS)
        return core.tap(name, action, stop=stop, before=before if rectifier else None)

    with tapped([taps(name) for name in names]):
        yield outputs
    missing = [name for name in names if name not in outputs]
    if missing:
        raise LayerError(f"Layer(s) {', '.join(missing)} produced no tensor output in the forward pass; "
                         "choose a layer from engine.layers().")
