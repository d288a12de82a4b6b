"""Class activation maps: where in the image does the network look when it decides?

Modules: :mod:`.declaration` (what a method is: :class:`CamMethod`, :func:`register`),
:mod:`.methods` (the nine built-in declarations), :mod:`.compute` (the entry point that batches
methods and targets), :mod:`.base` (the result, the target layer, the shared forward/backward
pass, upsampling), the formulas in :mod:`.gradient` (Grad-CAM, Grad-CAM++, Smooth Grad-CAM++,
XGrad-CAM, Layer-CAM) and :mod:`.activation` (CAM, Score-CAM, SS-CAM, IS-CAM), and
:mod:`.metrics` (deletion/insertion curves, pointing game). Use them through the engine::

    engine.cam(image, "gradcam")                       # CamResult(map, raw, target, layer, method, score)
    engine.cams(image, ["cam", "gradcam", "layercam"])  # one forward + one backward for all
    engine.cam_targets(image, "gradcam", targets=5)     # top-5 classes, one forward + one backward
    engine.faithfulness(image, result.map, result.target)

``METHODS``, ``SHARED``, ``TITLES`` and ``OPTIONS`` are read from the registered declarations
each time they are looked up, so a method registered later shows in them too.
"""

from .base import CamResult, cam_layers, default_layer, resolve_layer
from .compute import check_methods, compute
from .declaration import CamMethod, Option, method, register, registered, unregister
from .metrics import Faithfulness, auc, faithfulness, pointing_game, silhouette

__all__ = ["METHODS", "OPTIONS", "SHARED", "TITLES", "CamMethod", "CamResult", "Faithfulness", "Option", "auc",
           "cam_layers", "check_methods", "compute", "default_layer", "faithfulness", "method", "pointing_game",
           "register", "registered", "resolve_layer", "silhouette", "unregister"]


def __getattr__(name: str) -> object:
    """``METHODS`` (every name), ``SHARED`` (the shared-pass names), ``TITLES`` (name → title with
    paper) and ``OPTIONS`` (name → option names), from the registry as it is now."""
    methods = registered()
    if name == "METHODS":
        return tuple(m.name for m in methods)
    if name == "SHARED":
        return tuple(m.name for m in methods if m.kind == "shared")
    if name == "TITLES":
        return {m.name: m.label for m in methods}
    if name == "OPTIONS":
        return {m.name: m.option_names for m in methods if m.options}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
