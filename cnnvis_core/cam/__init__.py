"""Class activation maps: where in the image does the network look when it decides?

One module per family: :mod:`.gradient` (Grad-CAM, Grad-CAM++, Smooth Grad-CAM++, XGrad-CAM,
Layer-CAM), :mod:`.activation` (CAM, Score-CAM, SS-CAM, IS-CAM), :mod:`.base` (the result,
the target layer, the shared forward/backward pass), :mod:`.registry` (method names),
:mod:`.metrics` (deletion/insertion curves, pointing game), :mod:`.batching` (batch sizes),
:mod:`.fused` (the BatchNorm-folded model copy the masked passes run).
Use them through the engine::

    engine.cam(image, "gradcam")                       # CamResult(map, raw, target, layer, method, score)
    engine.cams(image, ["cam", "gradcam", "layercam"])  # one forward + one backward for all
    engine.cam_targets(image, "gradcam", targets=5)     # top-5 classes, one forward + one backward
    engine.faithfulness(image, result.map, result.target)
"""

from .base import CamResult, cam_layers, default_layer, resolve_layer
from .metrics import Faithfulness, auc, faithfulness, pointing_game, silhouette
from .registry import METHODS, OPTIONS, SHARED, TITLES, check_methods, compute

__all__ = ["METHODS", "OPTIONS", "SHARED", "TITLES", "CamResult", "Faithfulness", "auc", "cam_layers",
           "check_methods", "compute", "default_layer", "faithfulness", "pointing_game", "silhouette", "resolve_layer"]
