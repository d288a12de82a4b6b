"""The classic recipes, as :class:`Settings` (parameters as their authors published them).

* ``"lucid"`` — Olah et al., 2017, "Feature Visualization" (Distill), Lucid/Lucent's
  ``render_vis``: Fourier parameterisation with decorrelated colour, Adam lr 0.05,
  transforms pad 12, jitter 8, scale 0.9–1.1, rotate ±10°, jitter 4. Lucent runs 512 steps;
  we default to 256, which on small models looks the same (raise ``steps`` at will).
* ``"multiscale"`` — the fastai FilterVisualizer: start at 56 px from uniform noise in
  [150, 180]/255; 12 rounds of 20 Adam steps (lr 0.1, weight decay 1e-6) on the pixels,
  each followed by a ×1.2 bicubic upscale and a box blur (the final image is ≈ 416 px).
* ``"keras"`` — the keras "Visualizing what convnets learn" example: 180 px from gray ± noise,
  30 steps of L2-normalised gradient ascent with step 10, the loss ignoring a 2-pixel border,
  deprocessed (standardised to std 0.15 around gray) and cropped by 25 px per side.
"""

from __future__ import annotations

from ..errors import InputError
from .settings import Settings

PRESETS: dict[str, Settings] = {
    "lucid": Settings(steps=256, lr=0.05, param="fft", sd=0.01, decorrelate=True, optimizer="adam",
                      pad=12, jitter=8, scale=(0.9, 1.1), degrees=10.0, jitter_after=4),
    "multiscale": Settings(steps=20, lr=0.1, size=56, param="pixel", init_low=150 / 255, init_high=180 / 255,
                           optimizer="adam", weight_decay=1e-6, upscale_steps=12, upscale_factor=1.2, blur=5),
    # keras draws noise in [-0.125, 0.125] in ResNet50V2's [-1, 1] input range: ±0.0625 on the [0, 1] scale
    "keras": Settings(steps=30, lr=10.0, size=180, param="pixel", init_low=0.5 - 0.0625, init_high=0.5 + 0.0625,
                      optimizer="ascent", border=2, finish="standardize", crop=25),
}

DESCRIPTIONS: dict[str, str] = {
    "lucid": "Lucid: Fourier image, decorrelated colour, jitter/scale/rotate (Olah et al., 2017)",
    "multiscale": "Multi-scale: Adam on pixels, 12 upscalings ×1.2 with blur (fastai FilterVisualizer)",
    "keras": "Gradient ascent, L2-normalised gradients, border crop (keras example)",
}


def preset(name: str) -> Settings:
    """The settings of a named recipe; :class:`InputError` listing the names if unknown."""
    try:
        return PRESETS[name]
    except KeyError:
        raise InputError(f"Unknown preset {name!r}; choose one of {', '.join(PRESETS)}.") from None
