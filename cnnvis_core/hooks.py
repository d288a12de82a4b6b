"""The one way cnnvis hooks a model: :class:`Tap` and the :func:`tapped` block; and the eval-mode guard.

Every hook cnnvis puts on a model is a :class:`Tap` installed by :func:`tapped`, which removes
it in its ``finally``: after the block, even one that raised, the model carries no hook of ours
(:func:`hook_count` lets tests check exactly that). A tap says

- **which module** (``module``) and **which of its calls**: a module may run several times in
  one forward pass (a shared ReLU); ``calls`` says how many, and the tap acts on the last of
  them (the output the engine shows), or on every call with ``every_call``;
- **what to do with the output**: ``action(module, inputs, output)``; what it returns, when not
  None, replaces the output for the rest of the network (masking, an autograd leaf);
  ``before(module, args)`` runs first on the same calls (to keep an input an in-place op is
  about to overwrite);
- **whether to stop the forward**: once every tap with ``stop=True`` has acted, the forward is
  ended by :class:`StopForward` and the rest of the network is never computed. ``tapped``
  catches it, so the statements after the model call inside the block are skipped and the
  program goes on after the block. It derives from ``BaseException``: a model's own
  ``except Exception`` cannot swallow it.

Recorders (capture every layer, watch one as an autograd leaf, per-channel peaks, masking,
the deconvnet chain, the forward-until of filter optimisation, the layer probe) are all
taps; :func:`record_outputs` is the common one.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from operator import attrgetter

import torch
from torch import nn

_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")

#: ``action(module, inputs, output)``: what a tap does; a non-None return replaces the output
Action = Callable[[nn.Module, tuple, object], object]
#: ``before(module, args)``: run before the module on the calls the tap acts on
Before = Callable[[nn.Module, tuple], None]


class StopForward(BaseException):
    """Ends the forward pass once every stopping tap has acted (caught by :func:`tapped`)."""


@dataclass(frozen=True, eq=False)
class Tap:
    """One hook of a :func:`tapped` block (see the module docstring)."""

    module: nn.Module
    action: Action
    calls: int = 1
    every_call: bool = False
    stop: bool = False
    before: Before | None = None


def hook_count(model: nn.Module) -> int:
    """Number of forward/backward hooks registered on ``model`` and all its submodules."""
    return sum(len(getattr(m, d, {})) for m in model.modules() for d in _HOOK_DICTS)


@contextmanager
def tapped(taps: Sequence[Tap]) -> Iterator[None]:
    """Install ``taps`` for the block; remove them when it ends, however it ends.

    A :class:`StopForward` raised by a stopping tap ends the block quietly.
    """
    stoppers = {i for i, tap in enumerate(taps) if tap.stop}
    acted: set[int] = set()
    handles = []
    try:
        for i, tap in enumerate(taps):
            counter = [0]
            handles.append(tap.module.register_forward_hook(_forward_hook(tap, i, counter, stoppers, acted)))
            if tap.before is not None:
                handles.append(tap.module.register_forward_pre_hook(_pre_hook(tap, counter)))
        yield
    except StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()


def _selected(tap: Tap, call: int) -> bool:
    """Whether the tap acts on the ``call``-th call (1-based, counted over the whole block)."""
    return tap.every_call or call % max(1, tap.calls) == 0


def _forward_hook(tap: Tap, index: int, counter: list[int], stoppers: set[int], acted: set[int]) -> Callable:
    def hook(module: nn.Module, inputs: tuple, output: object) -> object:
        counter[0] += 1
        if not _selected(tap, counter[0]):
            return None
        replaced = tap.action(module, inputs, output)
        if tap.stop:
            acted.add(index)
            if acted >= stoppers:
                raise StopForward
        return replaced
    return hook


def _pre_hook(tap: Tap, counter: list[int]) -> Callable:
    def pre_hook(module: nn.Module, args: tuple) -> None:
        if _selected(tap, counter[0] + 1):  # the counter counts finished calls
            tap.before(module, args)
    return pre_hook


def _detached(output: torch.Tensor, clone: bool) -> torch.Tensor:
    out = output.detach()
    # A later in-place op (ReLU(inplace=True) after BatchNorm) would overwrite what we keep.
    return out.clone() if clone else out


@contextmanager
def record_outputs(modules: Mapping[str, tuple[nn.Module, int]], *, clone: bool = True
                   ) -> Iterator[dict[str, torch.Tensor]]:
    """Record the tensor output of each named module during the block.

    ``modules``: ``{name: (module, calls per forward)}``; the last call's output is kept. Yields
    ``{name: tensor}``, filled as the modules run: detached and, unless ``clone=False``, copied
    so that in-place operations further on cannot change them.
    """
    outputs: dict[str, torch.Tensor] = {}

    def keep(name: str) -> Action:
        def action(_module: nn.Module, _inputs: tuple, output: object) -> None:
            if isinstance(output, torch.Tensor):
                outputs[name] = _detached(output, clone)
        return action

    with tapped([Tap(module, keep(name), calls) for name, (module, calls) in modules.items()]):
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
