"""Forward passes that stop at the target layer.

To maximise a unit of layer ``L`` only the network up to ``L`` matters: a forward hook on
``L`` records its output and raises a private exception that ends the forward there, so the
rest of the network is never computed. The hooks live inside the ``with`` block only.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn

from ..errors import LayerError
from ..hooks import registered


class _StopForward(Exception):
    """Raised from a forward hook once every wanted layer has produced its output."""


@contextmanager
def forward_until(model: nn.Module, calls: Mapping[str, int], stop: bool = True
                  ) -> Iterator[dict[str, torch.Tensor]]:
    """Record the outputs of the named modules (with their graph) during the forward run in the block.

    ``calls[name]`` is how often the module runs in one forward pass (a shared ReLU runs
    several times): its output is recorded at its last call. With ``stop``, once every named
    module has produced that output the forward is ended — the block's remaining statements
    are skipped and the rest of the network is not computed. Outputs are cloned, so in-place
    operations further on (``ReLU(inplace=True)`` after a BatchNorm) cannot change them.
    :class:`LayerError` if a module never ran.
    """
    modules = dict(model.named_modules())
    outputs: dict[str, torch.Tensor] = {}
    seen = {name: 0 for name in calls}

    def make_hook(name: str):
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            seen[name] += 1
            if seen[name] < calls[name] or not isinstance(output, torch.Tensor):
                return
            outputs[name] = output.clone()
            if stop and len(outputs) == len(calls):
                raise _StopForward
        return hook

    with registered([]) as handles:
        for name in calls:
            handles.append(modules[name].register_forward_hook(make_hook(name)))
        try:
            yield outputs
        except _StopForward:
            pass
    missing = [name for name in calls if name not in outputs]
    if missing:
        raise LayerError(f"Layer(s) {', '.join(missing)} produced no tensor output in the forward pass; "
                         "choose a layer from engine.layers().")
