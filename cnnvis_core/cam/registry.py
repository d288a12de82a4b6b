"""Method names → computations, and the one entry point that batches methods and targets.

``cam``, ``gradcam``, ``gradcam++``, ``xgradcam`` and ``layercam`` need only the target layer's
activation and (except CAM) its gradient: however many of them are asked for, and for however
many target classes, they come from ONE forward and at most ONE backward pass.
``smoothgradcam++`` runs one forward and one backward of a batch of noisy copies; ``scorecam``,
``sscam`` and ``iscam`` run one forward, then batches of masked inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from ..errors import CnnvisError, InputError
from .activation import FAMILY, cam, cam_weights, score_cam, verified_head
from .base import CamResult, Target, layer_pass, resolve_layer, results, weighted_sum
from .gradient import CHANNEL_WEIGHTS, layercam, smooth_gradcam_pp

if TYPE_CHECKING:
    from ..engine import Engine, ImageLike

#: every method name, in the order the dashboard lists them
METHODS: tuple[str, ...] = ("cam", "gradcam", "gradcam++", "smoothgradcam++", "scorecam", "sscam", "iscam",
                            "xgradcam", "layercam")
#: methods computed together from one forward and one backward pass
SHARED: tuple[str, ...] = ("cam", "gradcam", "gradcam++", "xgradcam", "layercam")
#: human-readable names with their papers
TITLES: dict[str, str] = {
    "cam": "CAM (Zhou et al. 2016)",
    "gradcam": "Grad-CAM (Selvaraju et al. 2017)",
    "gradcam++": "Grad-CAM++ (Chattopadhyay et al. 2018)",
    "smoothgradcam++": "Smooth Grad-CAM++ (Omeiza et al. 2019)",
    "scorecam": "Score-CAM (Wang et al. 2020)",
    "sscam": "SS-CAM (Naidu & Michael 2020)",
    "iscam": "IS-CAM (Naidu et al. 2020)",
    "xgradcam": "XGrad-CAM (Fu et al. 2020)",
    "layercam": "Layer-CAM (Jiang et al. 2021)",
}
#: options each method accepts (keyword arguments of engine.cam)
OPTIONS: dict[str, tuple[str, ...]] = {
    "smoothgradcam++": ("n_samples", "noise", "seed"),
    "scorecam": ("precision", "progress"),
    "sscam": ("n_samples", "sigma", "seed", "precision", "progress"),
    "iscam": ("n_samples", "precision", "progress"),
}


def check_methods(methods: Sequence[str]) -> list[str]:
    """The names as given, each checked; :class:`InputError` listing the valid names."""
    names = [methods] if isinstance(methods, str) else list(dict.fromkeys(methods))
    for name in names:
        if name not in METHODS:
            raise InputError(f"Unknown CAM method {name!r}; use one of {', '.join(METHODS)}.")
    if not names:
        raise InputError(f"Name at least one CAM method: {', '.join(METHODS)}.")
    return names


def _check_options(names: Sequence[str], options: dict) -> None:
    allowed = {key for name in names for key in OPTIONS.get(name, ())}
    unknown = sorted(set(options) - allowed)
    if unknown:
        what = ", ".join(f"{n}: {', '.join(OPTIONS[n])}" for n in names if n in OPTIONS) or "none"
        raise InputError(f"Unknown option(s) {', '.join(unknown)} for {', '.join(names)} (options: {what}).")


def compute(engine: Engine, image: ImageLike, methods: Sequence[str] | None, layer: str | None = None,
            targets: Sequence[Target] | None = None, top: int = 1, **options) -> dict[str, list[CamResult]]:
    """``{method: [one CamResult per target]}``.

    ``targets``: class indices or names; ``None`` means the ``top`` classes by logit.
    ``methods=None``: every method of :data:`SHARED` (CAM left out when the model does not
    allow it). Options (``n_samples``, ``noise``, ``sigma``, ``seed``, ``precision``, ``progress``) go to the
    methods that take them (:data:`OPTIONS`).
    """
    optional_cam = methods is None
    names = list(SHARED) if methods is None else check_methods(methods)
    _check_options(names, options)
    x = engine.preprocess(image)
    info = resolve_layer(engine.layers(), layer if layer is not None else engine.default_cam_layer(), engine.model)
    out: dict[str, list[CamResult]] = {}
    shared = [name for name in names if name in SHARED]
    if shared:
        out.update(_shared(engine, x, info.name, shared, targets, top, optional_cam, layer is None))
    for name in names:
        if name == "smoothgradcam++":
            out[name] = smooth_gradcam_pp(engine, x, info.name, targets, top, **_pick(name, options))
        elif name in FAMILY:
            out[name] = score_cam(engine, x, info.name, targets, top, name, **_pick(name, options))
    return {name: out[name] for name in names if name in out}


def _pick(name: str, options: dict) -> dict:
    return {key: value for key, value in options.items() if key in OPTIONS.get(name, ())}


def _shared(engine: Engine, x: torch.Tensor, layer: str, names: list[str], targets: Sequence[Target] | None,
            top: int, optional_cam: bool, automatic: bool) -> dict[str, list[CamResult]]:
    """The methods of :data:`SHARED`: one forward, and one backward unless only CAM is asked for."""
    gradients = any(name != "cam" for name in names)
    watch_head = "cam" in names and verified_head(engine.model, layer) is None
    run = layer_pass(engine, x, layer, targets, top, gradients=gradients, linear=watch_head)
    A, G = run.activation[0], (run.grads[:, 0] if gradients else None)
    raws: dict[str, torch.Tensor] = {}
    if "cam" in names:
        try:
            raws["cam"] = cam(A, cam_weights(run, engine.model, layer, automatic))
        except CnnvisError:
            if not optional_cam:
                raise
    # Grad-CAM, Grad-CAM++ and XGrad-CAM are all ReLU(Σ_k w_k A_k): one product for all their weights.
    weighted = [name for name in names if name in CHANNEL_WEIGHTS]
    if weighted:
        rows = _joined([CHANNEL_WEIGHTS[name](A, G) for name in weighted])
        maps = torch.relu(weighted_sum(rows, A))
        for name, part in zip(weighted, maps.split(len(run.targets)) if len(weighted) > 1 else [maps]):
            raws[name] = part
    if "layercam" in names:
        raws["layercam"] = layercam(A, G)
    # All maps upsampled and scaled together: one call instead of one per method.
    count = len(run.targets)
    together = results(_joined(list(raws.values())), tuple(x.shape[-2:]), run.targets * len(raws), layer,
                       [name for name in raws for _ in run.targets], run.scores)
    return {name: together[i * count:(i + 1) * count] for i, name in enumerate(raws)}


def _joined(tensors: list[torch.Tensor]) -> torch.Tensor:
    """``torch.cat(tensors)``, without the copy when there is only one."""
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors)
