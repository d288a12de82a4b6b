"""Filter optimisation (activation maximisation): what does a channel, a neuron or a class want to see?

Start from noise and follow the gradient of a unit's activation with respect to the image
(Erhan et al., 2009), regularised by a Fourier parameterisation with decorrelated colour and
transformation robustness (Olah et al., 2017, "Feature Visualization", Distill), or by the
classic recipes in :mod:`.presets`. Many units run at once as one batch; the forward stops
at the target layer. Engine entry points: ``engine.optimize`` and
``engine.optimize_objectives``; modules:

* :mod:`.objectives` — channel, neuron, class logit, DeepDream, and their algebra;
* :mod:`.params` — pixel and Fourier parameterisations ``(params, image_fn)``;
* :mod:`.transforms` — seeded per-item jitter/scale/rotation, blur, TV and L2 penalties;
* :mod:`.presets` / :mod:`.settings` — the recipes and their knobs;
* :mod:`.loop` — the loop with its ``on_step`` callback; :mod:`.capture` — the early stop.
"""

from ..normalization import normalization_of
from .objectives import OUTPUT, Objective, channel, class_logit, deepdream, neuron, per_item
from .presets import DESCRIPTIONS, PRESETS, preset
from .run import KINDS, OptimizationResult
from .settings import Settings

__all__ = ["DESCRIPTIONS", "KINDS", "OUTPUT", "PRESETS", "Objective", "OptimizationResult", "Settings", "channel",
           "class_logit", "deepdream", "neuron", "normalization_of", "per_item", "preset"]
