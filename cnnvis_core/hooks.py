"""Hooks that exist only inside a ``with`` block, and the model-state guard.

Every hook cnnvis puts on a model is registered by one of these context managers and
removed in its ``finally``: after the block, even one that raised, the model carries no
hook of ours. :func:`hook_count` lets tests check exactly that.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from operator import attrgetter

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def hook_count(model: nn.Module) -> int:
    """Number of forward/backward hooks registered on ``model`` and all its submodules."""
    return sum(len(getattr(m, d, {})) for m in model.modules() for d in _HOOK_DICTS)


@contextmanager
def registered(handles: list[RemovableHandle]) -> Iterator[list[RemovableHandle]]:
    """Own a list of hook handles: whatever is appended to it is removed when the block ends."""
    try:
        yield handles
    finally:
        for handle in handles:
            handle.remove()
        handles.clear()


def _detached(output: object, clone: bool) -> torch.Tensor | None:
    if not isinstance(output, torch.Tensor):
        return None
    out = output.detach()
    # A later in-place op (ReLU(inplace=True) after BatchNorm) would overwrite what we keep.
    return out.clone() if clone else out


@contextmanager
def capture_outputs(model: nn.Module, names: Collection[str], *, clone: bool = True
                    ) -> Iterator[dict[str, torch.Tensor]]:
    """Record the output of each named module during the forwards run inside the block.

    Yields a dict ``{name: tensor}`` filled as the modules run; a module called several
    times keeps its last output (the way data flows through a shared ReLU). Outputs are
    detached and, unless ``clone=False``, copied so that in-place operations further on
    cannot change them.
    """
    modules = dict(model.named_modules())
    outputs: dict[str, torch.Tensor] = {}

    def make_hook(name: str) -> Callable:
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            tensor = _detached(output, clone)
            if tensor is not None:
                outputs[name] = tensor
        return hook

    with registered([]) as handles:
        for name in names:
            handles.append(modules[name].register_forward_hook(make_hook(name)))
        yield outputs


_training = attrgetter("training")


@contextmanager
def eval_mode(model: nn.Module, modules: Collection[nn.Module] | None = None) -> Iterator[nn.Module]:
    """Put every submodule in eval mode for the block and restore each one's flag afterwards.

    Only flags that need a change are written (``nn.Module.__setattr__`` is slow, and this
    runs around every model call): a model already in eval mode costs two looks at each
    module. ``modules``: all of ``model.modules()`` when the caller has them listed already.
    """
    every = tuple(model.modules()) if modules is None else modules
    was_training = [m for m in every if m.training] if any(map(_training, every)) else []
    try:
        if was_training:
            model.eval()
        yield model
    finally:
        if was_training or any(map(_training, every)):  # the block may have switched some on
            wanted = {id(m) for m in was_training}
            for module in every:
                if module.training != (id(module) in wanted):
                    module.training = id(module) in wanted
