"""The input size the model's forward sees during filter optimisation.

Lucid's transformation robustness (pad → jitter → zoom/rotate → jitter; Olah et al., 2017,
"Feature Visualization", Distill) changes the size of the image the forward sees: the lucid
recipe turns a 224 px image into 236 px, the keras recipe starts at 180 px, the multi-scale one
at 56 px. A CNN takes any of these. A model with a *fixed* input size does not:

- a vision transformer adds one learned position embedding per patch of its training grid
  (Dosovitskiy et al., 2021, ViT; DeiT, BEiT, EVA: timm's ``PatchEmbed`` with
  ``strict_img_size``; torchvision's ``VisionTransformer`` asserts its ``image_size``);
- Swin in timm builds its attention masks for one resolution (Liu et al., 2021); MaxViT's
  block and grid partitions need sides divisible by the partition size at every stage (Tu et
  al., 2022); LeViT and CoAtNet have their own fixed-size parts;
- an exported program or a converted ONNX graph may hold static shapes.

For such a model (:func:`native_size` from the structure, else a first step that fails at the
asked size while a forward at the model's input size works: :func:`fallback`, remembered per
model, so a model of any size costs no extra pass) the image is optimised at the native size ``N`` and
every transformed copy is brought back to ``N×N`` before the forward (:class:`Fit`): centre-
cropped when it is at least as large both ways (the random shifts of the jitter stay), resized
bilinearly otherwise. Both commute with the per-channel normalisation. The result says so in a
note. A size the model cannot run at all is an :class:`~cnnvis_core.errors.InputError` naming
the size and the cause, never the framework's raw error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError, ModelError
from .settings import Settings

Size = tuple[int, int]

#: exceptions a forward at an unsupported size raises (assertions, shape errors); anything else
#: (every CnnvisError, and running out of memory) passes through unchanged
SIZE_ERRORS = (AssertionError, RuntimeError, ValueError, IndexError)

#: why a structurally fixed-size model is optimised at its native size
STRUCTURAL = "its position embeddings or partitions fix the input size"


@dataclass(frozen=True)
class Fit:
    """Brings transformed images to ``size`` before the forward (``None``: as they are), and the
    note that says so."""

    size: Size | None = None
    note: str = ""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(B, C, h, w)`` → ``(B, C, H, W)``: the centre ``H×W`` when ``h ≥ H`` and ``w ≥ W``,
        else a bilinear resize (``align_corners=False``)."""
        if self.size is None or tuple(x.shape[-2:]) == self.size:
            return x
        (h, w), (big_h, big_w) = x.shape[-2:], self.size
        if h >= big_h and w >= big_w:
            top, left = (h - big_h) // 2, (w - big_w) // 2
            return x[..., top:top + big_h, left:left + big_w]
        return F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)


def native_size(model: nn.Module, input_size: Size) -> Size | None:
    """The one input size the structure allows, or None when it does not fix one: torchvision's
    ``VisionTransformer`` (``image_size``), timm's strict ``PatchEmbed`` (``img_size``: ViT, DeiT,
    BEiT, EVA, Swin), torchvision's ``MaxVit`` (its input size)."""
    if hasattr(model, "class_token") and isinstance(getattr(model, "image_size", None), int):
        return int(model.image_size), int(model.image_size)
    for module in model.modules():
        size = getattr(module, "img_size", None)
        if getattr(module, "strict_img_size", False) is True and size is not None and len(size) == 2:
            return int(size[0]), int(size[1])
    if type(model).__name__ == "MaxVit":
        return input_size
    return None


def forward_side(settings: Settings, side: int) -> int:
    """The side of the transformed image for an image of ``side`` pixels: ``side + 2·pad − jitter −
    jitter_after`` (the zoom and rotation keep the size)."""
    return side + 2 * settings.pad - settings.jitter - settings.jitter_after


def image_size(settings: Settings, input_size: Size, native: Size | None) -> Size:
    """The size of the optimised image at the start: ``settings.size``, else the model's input size;
    a fixed-size model's native size for a single-scale recipe (a multi-scale one keeps its schedule)."""
    if native is not None and settings.upscale_steps == 1:
        return native
    if settings.size is not None:
        return int(settings.size), int(settings.size)
    return int(input_size[0]), int(input_size[-1])


def fixed_note(native: Size, why: str, settings: Settings, start: Size, structural: bool = True) -> str:
    """The sentence that tells the user the run was brought to the model's size (``structural``:
    a size the architecture fixes, "native"; else the input size a probe found to work)."""
    n = f"{native[0]}×{native[1]}"
    what = f"the model's native {n} input" if structural else f"the model's {n} input size"
    asked = (f" (not the {settings.size} px asked)" if settings.size is not None and settings.upscale_steps == 1
             and (settings.size, settings.size) != native else "")
    side = forward_side(settings, start[0])
    if settings.upscale_steps > 1:
        how = f"; each step's transformed image ({side} px at first, growing) is resized to it before the forward"
    elif side != native[0]:
        how = f"; each step's transformed image ({side} px) is centre-cropped back to it before the forward"
    else:
        how = ""
    return f"Optimised at {what}{asked}: {why}{how}."


def structural(model: nn.Module, input_size: Size, settings: Settings) -> tuple[Size, Fit]:
    """``(start image size, Fit)`` from the structure alone: a model whose structure fixes its size
    is fitted to it; any other starts as asked, unfitted (:func:`fallback` if its forward fails)."""
    native = native_size(model, input_size)
    start = image_size(settings, input_size, native)
    if native is None:
        return start, Fit()
    return start, Fit(native, fixed_note(native, STRUCTURAL, settings, start))


def fallback(first: Size, input_size: Size, error: BaseException, settings: Settings, start: Size,
             try_size: Callable[[Size], BaseException | None]) -> Fit:
    """The Fit for a model whose forward failed at ``first`` with ``error``: its own input size
    when a forward there works (``try_size`` returns the error it raised, or None), noted; an
    :class:`InputError` when ``first`` is the input size already; a
    :class:`~cnnvis_core.errors.ModelError` when the input size fails too (the model is broken,
    not the size)."""
    native = (int(input_size[0]), int(input_size[-1]))
    if tuple(first) == native:
        raise size_error(first, native, error)
    at_native = try_size(native)
    if at_native is not None:
        raise broken_error(native, at_native)
    why = f"it cannot run on {first[0]}×{first[1]} images ({describe(error)})"
    return Fit(native, fixed_note(native, why, settings, start, structural=False))


def describe(error: BaseException) -> str:
    """``Type: first line`` of an exception, at most 160 characters."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}"[:160] if text else type(error).__name__


def broken_error(input_size: Size, error: BaseException) -> ModelError:
    """The ModelError for a model that fails on its own input size too (not a matter of size)."""
    return ModelError(f"The model's forward fails on its own input size, {input_size[0]}×{input_size[1]}, up to "
                      f"the layer optimised ({describe(error)}), so nothing can be optimised on it.")


def size_error(size: Size, input_size: Size, error: BaseException) -> InputError:
    """The InputError for a forward that failed at ``size``."""
    return InputError(f"The model cannot run on {size[0]}×{size[1]} images ({describe(error)}). Its input size "
                      f"is {input_size[0]}×{input_size[1]}: choose a size nearer to it (the image size plus "
                      "twice the padding, less the jitter, is what the model sees), or another recipe.")
