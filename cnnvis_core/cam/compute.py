"""The one entry point of the CAM methods: any methods, any targets, the fewest passes.

The methods of kind ``shared`` (CAM, Grad-CAM, Grad-CAM++, XGrad-CAM, Layer-CAM) need only the
target layer's activation and (except CAM) its gradient: however many of them are asked for,
and for however many target classes, they come from ONE forward and at most ONE backward pass.
A ``sampled`` method (Smooth Grad-CAM++) runs its own batch of noisy copies; a ``masked`` one
(Score-CAM, SS-CAM, IS-CAM) one forward, then batches of masked inputs. What each method is and
what it takes is its declaration (:mod:`.declaration`, :mod:`.methods`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..core import ImageLike, ModelCore
from ..errors import CnnvisError, InputError
from ..targets import Target
from . import methods as _builtins  # noqa: F401 - registers the built-in methods
from .activation import score_cam, verified_head
from .base import CamResult, SharedPass, layer_pass, resolve_layer, results, weighted_sum
from .declaration import MASKED, SAMPLED, SHARED, CamMethod, method, registered


def check_methods(names: str | Sequence[str]) -> list[CamMethod]:
    """The declarations of the named methods, in the order given (repeats dropped);
    :class:`InputError` listing the valid names."""
    names = [names] if isinstance(names, str) else list(dict.fromkeys(names))
    if not names:
        raise InputError(f"Name at least one CAM method: {', '.join(m.name for m in registered())}.")
    return [method(name) for name in names]


def _check_options(chosen: Sequence[CamMethod], options: dict) -> None:
    allowed = {key for m in chosen for key in m.option_names}
    unknown = sorted(set(options) - allowed)
    if unknown:
        what = ", ".join(f"{m.name}: {', '.join(m.option_names)}" for m in chosen if m.options) or "none"
        raise InputError(f"Unknown option(s) {', '.join(unknown)} for {', '.join(m.name for m in chosen)} "
                         f"(options: {what}).")


def compute(core: ModelCore, image: ImageLike, methods: str | Sequence[str] | None, layer: str | None = None,
            targets: Sequence[Target] | None = None, top: int = 1, **options) -> dict[str, list[CamResult]]:
    """``{method: [one CamResult per target]}``.

    ``targets``: class indices or names; ``None`` means the ``top`` classes by logit.
    ``methods=None``: every ``shared`` method, leaving out those the model refuses (CAM on a
    model that does not end in global pooling and one linear layer). Options (``n_samples``,
    ``noise``, ``sigma``, ``seed``, ``precision``, ``progress``…) go to the methods that declare
    them; the others take their declared defaults.
    """
    every_shared = methods is None
    chosen = [m for m in registered() if m.kind == SHARED] if every_shared else check_methods(methods)
    _check_options(chosen, options)
    x = core.preprocess(image)
    info = resolve_layer(core, layer)
    out: dict[str, list[CamResult]] = {}
    shared = [m for m in chosen if m.kind == SHARED]
    if shared:
        out.update(_shared(core, x, info.name, shared, targets, top, every_shared, layer is None))
    for m in chosen:
        if m.kind == SAMPLED:
            out[m.name] = m.compute(core, x, info.name, targets, top, **m.settings(options))
        elif m.kind == MASKED:
            out[m.name] = score_cam(core, x, info.name, targets, top, m, **m.settings(options))
    return {m.name: out[m.name] for m in chosen if m.name in out}


def _shared(core: ModelCore, x: torch.Tensor, layer: str, chosen: list[CamMethod], targets: Sequence[Target] | None,
            top: int, optional: bool, automatic: bool) -> dict[str, list[CamResult]]:
    """The ``shared`` methods: one forward, and one backward unless none needs gradients.
    ``optional``: a method that refuses the model is left out instead of raising."""
    gradients = any(m.gradients for m in chosen)
    watch_head = any(m.reads_head and verified_head(core, layer) is None for m in chosen)
    run = layer_pass(core, x, layer, targets, top, gradients=gradients, linear=watch_head)
    shared = SharedPass(core, run, layer, automatic)
    raws: dict[str, torch.Tensor] = {}
    # The maps ReLU(Σ_k w_k A_k) share one product for all their weights.
    weighted = [m for m in chosen if m.weights is not None]
    if weighted:
        rows = _joined([m.weights(shared.A, shared.G) for m in weighted])
        maps = torch.relu(weighted_sum(rows, shared.A)).split(len(run.targets))
        raws.update({m.name: part for m, part in zip(weighted, maps)})
    for m in chosen:
        if m.weights is None:
            try:
                raws[m.name] = m.map(shared)
            except CnnvisError:
                if not optional:
                    raise
    names = [m.name for m in chosen if m.name in raws]
    if not names:
        return {}
    # All maps upsampled and scaled together: one call instead of one per method.
    count = len(run.targets)
    together = results(_joined([raws[name] for name in names]), tuple(x.shape[-2:]), run.targets * len(names),
                       layer, [name for name in names for _ in run.targets], run.scores)
    return {name: together[i * count:(i + 1) * count] for i, name in enumerate(names)}


def _joined(tensors: list[torch.Tensor]) -> torch.Tensor:
    """``torch.cat(tensors)``, without the copy when there is only one."""
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors)
