"""The optimisation loop: render, transform, forward to the target, ascend, report.

Each step, with the engine's session held for that step only (so other users interleave):

1. ``image = image_fn()``: the ``(B, 3, H, W)`` images from the parameters;
2. ``x = normalise(T_b(image_b))`` with a random transform ``T_b`` drawn for each item from
   its own generator;
3. the transformed images brought to the model's native size when it has a fixed one
   (:mod:`.fit`: ViT, Swin, MaxViT…), then a forward that stops at the target layer(s)
   (:func:`~.capture.forward_until`; the full network only for class logits), each target read
   as ``(B, C, h, w)`` maps through its layout (:func:`~cnnvis_core.layouts.as_maps`: a ViT
   block's tokens without the class token, a Swin stage's NHWC output permuted);
4. ``loss = -Σ_b (score_b - tv·TV_b - l2·L2_b)`` and its gradient with respect to the
   parameters only (``torch.autograd.grad``: the model's frozen parameters never get a
   ``.grad``); an item whose score is exactly 0 at a ReLU target (dark wherever it looks, so
   no gradient) is scored through the leaky copy of the activations instead (same value, a
   leaky ReLU's gradient; see :mod:`.capture`);
5. an Adam step, or ``p += lr · g_b / ‖g_b‖`` (L2-normalised ascent, per item).

Nothing couples the items of the batch, so unit ``u`` gets the same picture optimised alone
or with 63 others (same seed). ``on_step(step, total, preview)`` is called after each step
with a uint8 preview grid; returning ``False`` stops the run early.
"""

from __future__ import annotations

import hashlib
import math
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torchvision.utils import make_grid

from ..core import ModelCore
from ..errors import CnnvisError
from ..layouts import MAP_LAYOUTS, NCHW, layer_maps
from ..normalization import Stats, normalize
from . import fit as fitting
from .capture import Captured, forward_until
from .objectives import OUTPUT, Objective, per_item
from .params import ImageFn, fft_image, pixel_image, pixel_params_from_image, resize_images
from .settings import Settings
from .transforms import box_blur, l2_penalty, total_variation

OnStep = Callable[[int, int, np.ndarray], "bool | None"]

#: at most this many items are tiled into the preview handed to ``on_step``
PREVIEW_ITEMS = 16


@dataclass(frozen=True)
class LoopOutput:
    """Final images ``(B, H, W, 3)`` uint8, the objective of each (on those exact pixels), how far it got."""

    images: np.ndarray
    scores: np.ndarray
    steps_done: int
    steps_total: int
    cancelled: bool
    notes: tuple[str, ...] = ()


def item_generator(seed: int, key: int) -> torch.Generator:
    """A CPU generator for one batch item, seeded from ``(seed, key)`` alone (not its place in the batch)."""
    digest = hashlib.blake2b(f"cnnvis-optimize:{int(seed)}:{int(key)}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") & ((1 << 63) - 1))


def run(core: ModelCore, objectives: Sequence[Objective], keys: Sequence[int], settings: Settings, seed: int,
        stats: Stats, on_step: OnStep | None = None) -> LoopOutput:
    """Optimise one image per objective (item ``b`` seeded by ``(seed, keys[b])``)."""
    objective = per_item(objectives)
    plan = _Plan(core, objective, settings, stats, seed)
    plan.choose_fit()
    while True:
        try:
            return _optimise(plan, keys, on_step)
        except _Refit:  # the first forward found a fixed size: start again at it (nothing done yet)
            continue


class _Refit(Exception):
    """The model cannot run at the size asked: the run starts again fitted to its input size."""


def _optimise(plan: _Plan, keys: Sequence[int], on_step: OnStep | None) -> LoopOutput:
    core, settings, stats, size = plan.core, plan.settings, plan.stats, plan.start
    gens = [item_generator(plan.seed, k) for k in keys]
    params, image_fn = _start(settings, gens, size, stats, core.device)
    total, done, cancelled = settings.total_steps, 0, False
    for round_index in range(settings.upscale_steps):
        if round_index > 0:
            size = (int(size[0] * settings.upscale_factor), int(size[1] * settings.upscale_factor))
            image = box_blur(resize_images(image_fn().detach(), size), settings.blur)
            params, image_fn = pixel_params_from_image(image, *stats)
        step = _stepper(params, settings)
        for i in range(settings.steps):
            image = image_fn()
            grads = plan.gradients(image, params, gens)
            with torch.no_grad():
                step(grads)
                if settings.blur_every and (i + 1) % settings.blur_every == 0:
                    _blur_pixels(params, image_fn, settings.blur, stats)
            done += 1
            if on_step is not None:
                with torch.no_grad():
                    shown = preview(image_fn())
                if on_step(done, total, shown) is False:
                    cancelled = True
                    break
        if cancelled:
            break
    images, scores = plan.finish(image_fn)
    notes = (plan.fit.note,) if plan.fit.note else ()
    return LoopOutput(images, scores, done, total, cancelled, notes)


def _start(settings: Settings, gens: Sequence[torch.Generator], size: tuple[int, int], stats: Stats,
           device: torch.device) -> tuple[list[torch.Tensor], ImageFn]:
    if settings.param == "fft":
        return fft_image(gens, size, sd=settings.sd, decorrelate=settings.decorrelate, device=device)
    return pixel_image(gens, size, *stats, low=settings.init_low, high=settings.init_high, device=device)


def _stepper(params: list[torch.Tensor], settings: Settings) -> Callable[[Sequence[torch.Tensor]], None]:
    """A function applying one update from the gradients of the loss (to be minimised)."""
    if settings.optimizer == "adam":
        optimizer = torch.optim.Adam(params, lr=settings.lr, weight_decay=settings.weight_decay)

        def adam(grads: Sequence[torch.Tensor]) -> None:
            for p, g in zip(params, grads):
                p.grad = g  # our own image tensors, never the model's parameters
            optimizer.step()
            for p in params:
                p.grad = None
        return adam

    def ascent(grads: Sequence[torch.Tensor]) -> None:
        for p, g in zip(params, grads):
            norm = g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (g.dim() - 1)))
            p.sub_(settings.lr * g / norm)
    return ascent


def _blur_pixels(params: list[torch.Tensor], image_fn: ImageFn, kernel: int, stats: Stats) -> None:
    blurred = box_blur(image_fn(), kernel)
    params[0].copy_(normalize(blurred, stats))


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)`` on [0, 1] → ``(B, H, W, 3)`` uint8 (clipped, rounded)."""
    return (images.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu()


def preview(images: torch.Tensor) -> np.ndarray:
    """The first :data:`PREVIEW_ITEMS` images tiled into one uint8 ``H×W×3`` array."""
    batch = images[:PREVIEW_ITEMS].detach().float().clamp(0, 1).cpu()
    grid = make_grid(batch, nrow=math.ceil(math.sqrt(batch.shape[0])), padding=2, pad_value=1.0)
    return to_uint8(grid.unsqueeze(0))[0].numpy()


def preview_tiles(grid: np.ndarray, count: int) -> list[np.ndarray]:
    """The ``count`` images of a :func:`preview` grid of ``count`` items, in batch order (the
    grid's layout: ``ceil(√count)`` per row, 2-pixel borders; one item alone has no border), so
    a page can caption each one."""
    if count == 1:
        return [grid]
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    height, width = (grid.shape[0] - 2) // rows - 2, (grid.shape[1] - 2) // columns - 2
    return [grid[2 + r * (height + 2):2 + r * (height + 2) + height, 2 + c * (width + 2):2 + c * (width + 2) + width]
            for r, c in (divmod(i, columns) for i in range(count))]


def standardize(images: torch.Tensor, std: float = 0.15) -> torch.Tensor:
    """The keras deprocessing: per image ``(I - mean) / std(I) · 0.15 + 0.5``, clipped to [0, 1]."""
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    spread = images.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-5)
    return ((images - mean) / spread * std + 0.5).clamp(0, 1)


#: per core, the sizes already tried: ``{(size, layers, output, stop): error or None}``
_TRIED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class _Plan:
    """Where to stop the forward, how to read and score the targets, at what size, for one run."""

    def __init__(self, core: ModelCore, objective: Objective, settings: Settings, stats: Stats, seed: int = 0) -> None:
        self.core, self.objective, self.settings, self.stats, self.seed = core, objective, settings, stats, seed
        self.layers = sorted(objective.layers - {OUTPUT})
        # an unknown layer fails before the first step; map layouts other than NCHW are read as maps
        self.read = {name: info for name in self.layers
                     if (info := core.layer(name)).layout in MAP_LAYOUTS and info.layout != NCHW}
        self.wants_output = OUTPUT in objective.layers
        self.stop = settings.stop_early and not self.wants_output
        self.fit = fitting.Fit()
        self.start, self.sized = (0, 0), False

    def choose_fit(self) -> tuple[int, int]:
        """The start size of the image, and the size of the forward as far as the structure (or an
        earlier run's failure at this size) tells (:mod:`.fit`); the start size."""
        input_size = (int(self.core.input_size[0]), int(self.core.input_size[-1]))
        self.start, self.fit = fitting.structural(self.core.model, input_size, self.settings)
        self.sized = self.fit.size is not None
        first = (fitting.forward_side(self.settings, self.start[0]), fitting.forward_side(self.settings, self.start[1]))
        known = _TRIED.get(self.core, {}).get(self._key(first))
        if not self.sized and known is not None:
            self._fall_back(first, known)
        return self.start

    def _key(self, size: tuple[int, int]) -> tuple:
        return size, tuple(self.layers), self.wants_output, self.stop

    def _fall_back(self, first: tuple[int, int], error: BaseException) -> None:
        """The forward failed at ``first``: fit the model's input size (see :func:`.fit.fallback`)."""
        _TRIED.setdefault(self.core, {})[self._key(first)] = error.with_traceback(None)
        input_size = (int(self.core.input_size[0]), int(self.core.input_size[-1]))
        native = (int(input_size[0]), int(input_size[1]))
        start = fitting.image_size(self.settings, input_size, native)
        self.fit = fitting.fallback(first, input_size, error, self.settings, start, self._try_size)
        self.start, self.sized = start, True

    def _try_size(self, size: tuple[int, int]) -> BaseException | None:
        """The error a forward of one ``size`` image to the targets raises, or None (remembered per core)."""
        tried = _TRIED.setdefault(self.core, {})
        key = self._key(size)
        if key not in tried:
            x = torch.zeros(1, 3, *size, device=self.core.device)
            try:
                with torch.no_grad(), self.core.session():
                    self._forward(x)
                tried[key] = None
            except (CnnvisError, torch.OutOfMemoryError):
                raise
            except fitting.SIZE_ERRORS as error:
                tried[key] = error.with_traceback(None)  # kept without its frames (and their tensors)
        return tried[key]

    def _forward(self, x: torch.Tensor) -> Captured:
        """The targets' activations for inputs ``x`` (as given), map layouts read as ``(B, C, h, w)``."""
        with forward_until(self.core, self.layers, self.stop) as acts:
            out = self.core.forward(x)
            if self.wants_output:
                acts[OUTPUT] = out
        for name, info in self.read.items():
            acts[name] = layer_maps(info, acts[name])
            if name in acts.leaky:
                acts.leaky[name] = layer_maps(info, acts.leaky[name])
        return acts

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """The objective of normalised inputs ``x`` (call inside the core's session), brought to the
        model's size first; a forward that fails on that size is an InputError."""
        fitted = self.fit(x)
        try:
            acts = self._forward(fitted)
        except (CnnvisError, torch.OutOfMemoryError):
            raise
        except fitting.SIZE_ERRORS as error:
            if not self.sized:  # a size the structure did not fix fails: fit the input size, start again
                self._fall_back(tuple(fitted.shape[-2:]), error)
                raise _Refit from error
            input_size = (int(self.core.input_size[0]), int(self.core.input_size[-1]))
            raise fitting.size_error(tuple(fitted.shape[-2:]), input_size, error) from error
        score = self.objective(acts)
        if not acts.leaky:
            return score
        # an item whose objective is exactly 0 has a dead ReLU gradient: it follows the leaky one instead
        dark = score.detach() == 0
        return torch.where(dark, self.objective({**acts, **acts.leaky}), score) if bool(dark.any()) else score

    def gradients(self, image: torch.Tensor, params: list[torch.Tensor],
                  gens: Sequence[torch.Generator]) -> tuple[torch.Tensor, ...]:
        s = self.settings
        x = normalize(s.robustness(image, gens), self.stats)
        with self.core.session():
            score = self.scores(x)
            if s.tv:
                score = score - s.tv * total_variation(image)
            if s.l2:
                score = score - s.l2 * l2_penalty(image)
            grads = torch.autograd.grad(-score.sum(), params)
            self.core.counters.add(backward=1)
        return grads

    @torch.no_grad()
    def finish(self, image_fn: ImageFn) -> tuple[np.ndarray, np.ndarray]:
        image = image_fn().detach()
        image = standardize(image) if self.settings.finish == "standardize" else image.clamp(0, 1)
        c = self.settings.crop
        if c and image.shape[-1] > 2 * c + 8 and image.shape[-2] > 2 * c + 8:
            image = image[..., c:-c, c:-c]
        pixels = to_uint8(image)
        shown = pixels.permute(0, 3, 1, 2).to(self.core.device, torch.float32) / 255.0
        with self.core.session():
            scores = self.scores(normalize(shown, self.stats))
        return pixels.numpy(), scores.float().cpu().numpy()
