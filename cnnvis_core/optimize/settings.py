"""Every knob of one optimisation run, as one frozen (hashable) value: a cache key and a preset."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from ..errors import InputError
from .transforms import Robustness

PARAMS = ("fft", "pixel")
OPTIMIZERS = ("adam", "ascent")
FINISHES = ("clip", "standardize")


@dataclass(frozen=True)
class Settings:
    """How to optimise.

    * ``steps`` per scale; ``lr`` the step size; ``size`` the (square) image side at the start,
      ``None`` for the model's input size.
    * ``param``: ``"fft"`` (Lucid: spectrum, decorrelated colour, sigmoid; ``sd`` its initial
      spread) or ``"pixel"`` (normalised pixels, started from uniform noise in
      ``[init_low, init_high]`` on the [0, 1] image scale).
    * ``optimizer``: ``"adam"`` (with ``weight_decay``) or ``"ascent"``: ``x += lr · g / ‖g‖₂``
      per image (the keras recipe's L2-normalised gradient ascent).
    * transformation robustness each step: ``pad``, ``jitter``, ``scale`` (a range), ``degrees``
      (±), ``jitter_after`` — see :class:`~cnnvis_core.optimize.transforms.Robustness`.
    * ``blur``: box-blur kernel applied to pixel images between upscaling rounds, and every
      ``blur_every`` steps when that is > 0.
    * penalties subtracted from the objective: ``tv`` × total variation, ``l2`` × mean (I-0.5)².
    * ``upscale_steps`` rounds of ``steps``, the pixel image enlarged by ``upscale_factor``
      (bicubic) between rounds (the multi-scale FilterVisualizer recipe).
    * ``border``: activation positions ignored at each edge by channel objectives.
    * at the end: ``finish`` ``"clip"`` to [0, 1], or ``"standardize"`` (centre, std 0.15,
      + 0.5, clip: the keras deprocessing); then ``crop`` pixels off each side.
    * ``stop_early``: stop the forward at the target layer (results do not depend on it).
    """

    steps: int = 128
    lr: float = 0.05
    size: int | None = None
    param: str = "fft"
    sd: float = 0.01
    decorrelate: bool = True
    init_low: float = 0.0
    init_high: float = 1.0
    optimizer: str = "adam"
    weight_decay: float = 0.0
    pad: int = 0
    jitter: int = 0
    scale: tuple[float, float] = (1.0, 1.0)
    degrees: float = 0.0
    jitter_after: int = 0
    blur: int = 0
    blur_every: int = 0
    tv: float = 0.0
    l2: float = 0.0
    upscale_steps: int = 1
    upscale_factor: float = 1.2
    border: int = 0
    finish: str = "clip"
    crop: int = 0
    stop_early: bool = True

    def __post_init__(self) -> None:
        _check(self.param in PARAMS, f"param must be one of {', '.join(PARAMS)}, got {self.param!r}.")
        _check(self.optimizer in OPTIMIZERS,
               f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}.")
        _check(self.finish in FINISHES, f"finish must be one of {', '.join(FINISHES)}, got {self.finish!r}.")
        _check(int(self.steps) >= 0, f"steps must be 0 or more, got {self.steps}.")
        _check(self.lr > 0, f"The learning rate must be positive, got {self.lr}.")
        _check(self.size is None or 8 <= int(self.size) <= 1024,
               f"size must be between 8 and 1024 pixels, got {self.size}.")
        _check(int(self.upscale_steps) >= 1, f"upscale_steps must be at least 1, got {self.upscale_steps}.")
        _check(self.upscale_steps == 1 or self.param == "pixel",
               "Upscaling rounds work on pixel images: use param='pixel' or upscale_steps=1.")
        _check(self.param == "pixel" or (self.blur <= 1 and self.blur_every == 0),
               "Blurring works on pixel images: use param='pixel' or blur=0.")
        _check(min(self.pad, self.jitter, self.jitter_after, self.blur, self.blur_every, self.crop, self.border) >= 0,
               "pad, jitter, blur, crop and border must not be negative.")
        _check(len(self.scale) == 2 and 0 < self.scale[0] <= self.scale[1],
               f"scale must be a range (low, high) with 0 < low ≤ high, got {self.scale}.")
        object.__setattr__(self, "scale", (float(self.scale[0]), float(self.scale[1])))

    @property
    def robustness(self) -> Robustness:
        return Robustness(self.pad, self.jitter, self.scale, float(self.degrees), self.jitter_after)

    @property
    def total_steps(self) -> int:
        return int(self.steps) * int(self.upscale_steps)

    def updated(self, **overrides: Any) -> Settings:
        """A copy with some knobs changed (``None`` values are ignored); unknown names raise InputError."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise InputError(f"Unknown optimisation setting(s) {', '.join(unknown)}; "
                             f"known: {', '.join(sorted(known))}.")
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise InputError(message)
