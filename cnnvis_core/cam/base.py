"""What every class activation map shares: the result, the target layer, the classes, the passes.

A CAM is computed on the target layer's activation ``A`` (``C×h×w`` for one image) and, for
the gradient family, its gradient ``G = ∂y_c/∂A`` where ``y_c`` is the class's pre-softmax
logit. :func:`layer_pass` gets both from ONE forward pass and ONE call of
``torch.autograd.grad(y, A)``: a forward hook on the target layer swaps its output for a
copy that is a fresh autograd leaf, so the graph starts at that layer (nothing before it is
recorded, no parameter and no input receive a gradient) and the backward stops there. The
leaf is handed on as a clone, so an in-place ReLU after the layer edits the clone and never
the activation we keep. Several classes share the pass: their gradients come from one
batched backward (``is_grads_batched=True``).

Maps: ``raw`` is the method's low-resolution map, after its ReLU where it has one, before any
normalisation; ``map`` is ``raw`` bilinearly upsampled (``align_corners=False``) to the
resolution of the tensor the model sees (``engine.preprocess(image)``, e.g. 224×224 after a
torchvision model's resize and centre crop) and min–max scaled to [0, 1] (all zeros when
``raw`` is constant). Overlay it on ``engine.model_view(image)``, the picture of that tensor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core import ModelCore
from ..errors import LayerError
from ..hooks import Tap, tapped
from ..layers import LayerInfo, find_layer
from ..layouts import NCHW, as_maps, describe
from ..targets import Target, resolve_targets


@dataclass(frozen=True, eq=False)
class CamResult:
    """One class activation map.

    ``map``: float32 ``H×W`` in [0, 1] at the resolution of the tensor the model sees;
    ``raw``: float32 ``h×w`` at the layer's resolution, as the method defines it (after its
    ReLU, before normalisation); ``target``: the class index; ``layer``: the layer's name;
    ``method``: the method's name; ``score``: the class's logit on the image.
    """

    map: np.ndarray
    raw: np.ndarray
    target: int
    layer: str
    method: str
    score: float = float("nan")


# ---------------------------------------------------------------------------- layers
def cam_layers(layers: Sequence[LayerInfo]) -> list[LayerInfo]:
    """Layers a CAM can use: an output holding a ``C×h×w`` map with more than one position,
    read through its layout (``NCHW``, ``NHWC`` or a ViT's ``tokens``)."""
    return [info for info in layers if info.has_map]


def default_layer(core: ModelCore) -> LayerInfo:
    """The layer a CAM takes when none is named (worked out once per model).

    Where the model's family names one (:func:`cnnvis_core.layouts.describe`): a ViT/DeiT's last
    block's first norm (``blocks[-1].norm1``, ``encoder.layers[-1].ln_1``: the tokens the last
    attention mixes into the class token, the layer pytorch-grad-cam's ViT tutorial uses; the
    last block's own output reaches the class score only through its class token), a Swin's
    last stage, a MaxViT's last block. Otherwise the last layer, in execution order, with a
    ``C×h×w`` map and ``h·w > 1``, going back over trailing poolings (VGG's ``avgpool`` and
    last ``MaxPool2d``: the last ReLU of ``features``). When it is an ``nn.Sequential``
    (``features``, ``layer4``), whose output is by definition that of its last child, the child
    is named instead while it runs once per pass (``features.relu7``, ``layer4.2``); other
    containers (a residual block) are kept as they are, since their output is not any child's.
    """
    return core.cache.get("default CAM layer", lambda: _last_spatial_layer(core))


def _last_child(core: ModelCore, by_name: dict[str, LayerInfo], chosen: LayerInfo) -> LayerInfo:
    """``chosen``, or for an ``nn.Sequential`` its last child (recursively) while that gives the
    same output, run once per pass."""
    while isinstance(module := core.module(chosen.name), nn.Sequential) and len(module) > 0:
        child = by_name.get(f"{chosen.name}.{list(module._modules)[-1]}")
        if child is None or child.output_shape != chosen.output_shape or child.calls != 1:
            break
        chosen = child
    return chosen


#: skipped as the automatic layer when an earlier one gives the map: pools, and pass-throughs (timm's
#: ConvNeXt ends its trunk in ``norm_pre = Identity()``, the last stage's output under another name)
_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Identity)


def _last_spatial_layer(core: ModelCore) -> LayerInfo:
    layers = core.layers()
    named = describe(core.model).auto_layer
    by_name = {info.name: info for info in layers}
    if named is not None and named in by_name and by_name[named].has_map:
        return by_name[named]
    spatial = cam_layers(layers)
    if not spatial:
        raise LayerError("This model has no layer with a spatial (C×H×W) output, so no class activation "
                         "map applies; use a saliency method (engine.saliency) instead.")
    for candidate in reversed(spatial):
        chosen = _last_child(core, by_name, candidate)
        if not isinstance(core.module(chosen.name), _POOLS):
            break
    else:
        chosen = _last_child(core, by_name, spatial[-1])
    return chosen


def resolve_layer(core: ModelCore, name: str | None) -> LayerInfo:
    """The layer called ``name`` (the default one for None); :class:`LayerError` if unfit for a CAM."""
    if name is None:
        return default_layer(core)
    layers = core.layers()
    info = find_layer(layers, name)  # raises with close names
    if not info.has_map:
        suitable = [i.name for i in cam_layers(layers)][-4:]
        shape = "×".join(map(str, info.output_shape))
        if info.layout == "other":
            shape += " (a layout the model's structure does not tell: not read as a map)"
        raise LayerError(f"Layer {name!r} outputs {shape}, not a spatial map (C×H×W with H·W > 1), so it has no "
                         f"class activation map. Pick a layer with feature maps, e.g. "
                         f"{', '.join(repr(s) for s in suitable)} (the default is the last of them).")
    return info


# ---------------------------------------------------------------------------- the pass
@dataclass
class LayerPass:
    """What one pass recorded. ``activation``: ``(B, C, h, w)``; ``grads``: ``(T, B, C, h, w)``
    (one slice per target) or None; ``logits``: ``(B, K)``; ``scores``: the first image's logits
    as a float32 array (``K``); ``linear``: the input and output of the model's last
    ``nn.Linear`` when asked for (CAM needs them)."""

    activation: torch.Tensor
    grads: torch.Tensor | None
    logits: torch.Tensor
    scores: np.ndarray
    targets: list[int]
    linear: tuple[nn.Linear, torch.Tensor, torch.Tensor] | None = None


@dataclass(frozen=True)
class SharedPass:
    """What a shared-pass method's ``map`` function gets: the pass, and where it ran.

    ``A``: the first image's activation ``(C, h, w)``; ``G``: its gradient per target
    ``(T, C, h, w)`` (None when no method asked for gradients); ``automatic``: the layer was
    chosen by default, not named by the caller.
    """

    core: ModelCore
    run: LayerPass
    layer: str
    automatic: bool

    @property
    def A(self) -> torch.Tensor:
        return self.run.activation[0]

    @property
    def G(self) -> torch.Tensor | None:
        return None if self.run.grads is None else self.run.grads[:, 0]


def layer_tap(core: ModelCore, layer: str, record: dict[str, torch.Tensor], differentiable: bool) -> Tap:
    """A tap that keeps the output of ``layer`` (its last call) in ``record["a"]``, raw, as the
    layer outputs it (read it as maps with :func:`as_layer_maps`).

    ``differentiable=True``: the output is replaced by a clone of a new autograd leaf, the
    recorded tensor, so that ``torch.autograd.grad(score, record["a"])`` reaches exactly that
    layer. Otherwise a detached copy is kept.
    """
    def action(_module: nn.Module, _inputs: tuple, output: object) -> torch.Tensor | None:
        if not isinstance(output, torch.Tensor):
            return None
        if not differentiable:
            record["a"] = output.detach().clone()
            return None
        leaf = output.detach().clone().requires_grad_(True)
        record["a"] = leaf
        return leaf.clone()

    return core.tap(layer, action)


def as_layer_maps(info: LayerInfo, output: torch.Tensor) -> torch.Tensor:
    """``(B, …)`` raw output (or gradient) of layer ``info`` → ``(B, C, h, w)`` through its layout
    (:func:`cnnvis_core.layouts.as_maps`); an NCHW tensor is returned as it is."""
    if info.layout == NCHW:
        return output
    return as_maps(output, info.layout, info.prefix_tokens, info.grid)


def linear_taps(core: ModelCore, record: dict[str, object]) -> list[Tap]:
    """Taps that keep ``(module, input, output)`` of the last ``nn.Linear`` to run in ``record["last"]``."""
    def action(module: nn.Module, inputs: tuple, output: object) -> None:
        if inputs and isinstance(inputs[0], torch.Tensor) and isinstance(output, torch.Tensor):
            record["last"] = (module, inputs[0].detach(), output.detach())

    return [Tap(module, action, every_call=True) for module in core.modules_of_type(nn.Linear)]


def layer_pass(core: ModelCore, x: torch.Tensor, layer: str, targets: Sequence[Target] | None = None,
               top: int = 1, *, gradients: bool = True, linear: bool = False) -> LayerPass:
    """ONE forward pass of ``x`` (``(B, 3, H, W)``) recording ``layer``; with ``gradients``, ONE
    backward to that layer for every target class (batched when there are several). The
    activation and its gradients are read as ``(B, C, h, w)`` maps through the layer's layout
    (a Swin stage's NHWC permuted, a ViT's tokens without the prefix on the patch grid).

    Targets are resolved on the first image of the batch. Runs inside the core's session
    and counts its passes; every hook is gone when it returns or raises.
    """
    seen: dict[str, torch.Tensor] = {}
    last: dict[str, object] = {}
    taps = [layer_tap(core, layer, seen, gradients), *(linear_taps(core, last) if linear else ())]
    with core.session():
        with tapped(taps), torch.set_grad_enabled(gradients):
            logits = core.forward(x)
        if "a" not in seen:
            raise LayerError(f"Layer {layer!r} did not run in the forward pass; pick another layer.")
        scores = logits[0].detach().float().cpu().numpy()
        classes = resolve_targets(scores, targets, top, core.categories)
        grads = _gradients(core, logits, seen["a"], classes) if gradients else None
    info = core.layer(layer)
    activation = as_layer_maps(info, seen["a"].detach())
    if grads is not None and info.layout != NCHW:  # the gradient is read through the same layout
        grads = as_layer_maps(info, grads.flatten(0, 1)).unflatten(0, grads.shape[:2])
    return LayerPass(activation, grads, logits.detach(), scores, classes, last.get("last"))


def _gradients(core: ModelCore, logits: torch.Tensor, activation: torch.Tensor, classes: list[int]) -> torch.Tensor:
    """``∂ logits[b, c] / ∂ activation[b]`` for every class ``c``: ``(T, B, C, h, w)``, one backward."""
    # Seed 1 at [b, c] for every item b (items of a batch do not interact in eval mode): one-hot
    # rows broadcast over the batch without a copy.
    n = int(logits.shape[-1])
    try:
        if len(classes) == 1:
            seed = _one_hot_row(classes[0], n, logits.device, logits.dtype).expand_as(logits)
            (grad,) = torch.autograd.grad(logits, activation, seed)
            grad = grad.unsqueeze(0)
        else:
            seeds = _one_hot_rows(classes, n, logits.device, logits.dtype).unsqueeze(1)
            (grad,) = torch.autograd.grad(logits, activation, seeds.expand(len(classes), *logits.shape),
                                          is_grads_batched=True)
    except RuntimeError as error:
        if "does not require grad" in str(error) or "not have been used" in str(error):
            raise LayerError("The class scores do not depend on this layer's output (the model does not use "
                             "it, or detaches it); pick another layer.") from error
        raise
    core.counters.add(backward=1)
    return grad.detach()


@lru_cache(maxsize=256)
def _one_hot_row(c: int, n: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The ``n`` vector that is 1 at ``c``, 0 elsewhere (cached: a class asked once is asked again)."""
    row = torch.zeros(n, device=device, dtype=dtype)
    row[c] = 1.0
    return row


def _one_hot_rows(classes: list[int], n: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``(T, n)``: row ``t`` is 1 at ``classes[t]``."""
    return torch.stack([_one_hot_row(c, n, device, dtype) for c in classes])


# ---------------------------------------------------------------------------- maps
def weighted_sum(weights: torch.Tensor, activation: torch.Tensor) -> torch.Tensor:
    """``Σ_k w_k A_k`` for each row of ``weights`` (``(T, C)``) and ``activation`` (``(C, h, w)``): ``(T, h, w)``."""
    return (weights @ activation.flatten(1)).view(-1, *activation.shape[1:])


@lru_cache(maxsize=64)
def _interpolation(n_in: int, n_out: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The ``(n_out, n_in)`` matrix of 1-D linear interpolation with ``align_corners=False``,
    read off ``F.interpolate`` applied to the identity (so it is PyTorch's own rule, edge
    clamping included)."""
    eye = torch.eye(n_in, dtype=torch.float64).unsqueeze(1)
    matrix = F.interpolate(eye, size=n_out, mode="linear", align_corners=False)[:, 0].T
    return matrix.to(device, dtype).contiguous()


def upsample(raw: torch.Tensor | np.ndarray, size: tuple[int, int]) -> torch.Tensor | np.ndarray:
    """Maps ``(T, h, w)`` → ``(T, H, W)``, bilinear with ``align_corners=False``; a tensor stays
    on its device, a float32 array stays an array.

    Bilinear interpolation is separable: ``Up(M) = R · M · Cᵀ`` with ``R`` (``H×h``) and ``C``
    (``W×w``) the 1-D interpolation matrices, which is what is computed (two small matrix
    products instead of a pass that recomputes the source positions of every pixel; equal to
    ``F.interpolate(…, mode="bilinear", align_corners=False)`` to float rounding).
    """
    if isinstance(raw, np.ndarray):
        rows, cols_t = _interpolation_arrays(raw.shape[-2], size[0], raw.shape[-1], size[1])
        return rows @ raw @ cols_t
    rows = _interpolation(int(raw.shape[-2]), int(size[0]), raw.device, raw.dtype)
    cols = _interpolation(int(raw.shape[-1]), int(size[1]), raw.device, raw.dtype)
    return rows @ raw @ cols.T


@lru_cache(maxsize=64)
def _interpolation_arrays(h: int, height: int, w: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """float32 ``R`` (``H×h``) and ``Cᵀ`` (``w×W``, contiguous) for arrays."""
    cpu = torch.device("cpu")
    rows = _interpolation(int(h), int(height), cpu, torch.float32).numpy()
    cols_t = np.ascontiguousarray(_interpolation(int(w), int(width), cpu, torch.float32).numpy().T)
    return rows, cols_t


def unit_scale(maps: torch.Tensor) -> torch.Tensor:
    """Each map ``(T, H, W)`` min–max scaled to [0, 1]; a constant map becomes all zeros."""
    flat = maps.flatten(1)
    low, high = torch.aminmax(flat, dim=1, keepdim=True)
    span = high - low
    # A constant map has flat − low = 0 everywhere, so dividing it by 1 gives the zeros.
    return ((flat - low) / torch.where(span > 0, span, 1.0)).view_as(maps)


def unit_scale_array(maps: np.ndarray) -> np.ndarray:
    """:func:`unit_scale` for a float array ``(T, H, W)``, in place (numpy's small operations
    cost a fraction of torch's, and the maps end up as arrays anyway). Map by map: with one
    or a few maps, scalar operands are cheaper than broadcast columns."""
    for one in maps:
        low, high = one.min(), one.max()
        one -= low
        if high > low:  # a constant map: one − low = 0 everywhere, and stays so
            one /= high - low
    return maps


def results(raw: torch.Tensor, size: tuple[int, int], classes: Sequence[int], layer: str,
            method: str | Sequence[str], scores: np.ndarray) -> list[CamResult]:
    """One :class:`CamResult` per row of ``raw`` (``(T, h, w)``), maps at ``size``; ``method``
    names them all, or each row when it is a sequence; ``scores``: the image's logits.

    Upsampling and scaling run on the CPU in numpy, whatever the device: the low-resolution
    maps are tiny, and the results are arrays.
    """
    raw_np = np.ascontiguousarray(raw.detach().float().cpu().numpy())
    maps = unit_scale_array(upsample(raw_np, size))
    names = [method] * len(classes) if isinstance(method, str) else list(method)
    return [CamResult(maps[i], raw_np[i], int(cls), layer, names[i], float(scores[cls]))
            for i, cls in enumerate(classes)]

