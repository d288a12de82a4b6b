"""Activation-weighted class activation maps: CAM, and Score-CAM with its kin SS-CAM and IS-CAM.

Notation as in :mod:`cnnvis_core.cam.gradient`: ``A_k`` channel ``k`` of the target layer's
activation, ``y^c`` the pre-softmax score of class ``c``.

CAM reads the weights of the model's final linear layer, so it needs the model to end in
global average pooling of the target layer followed by that layer (checked numerically on
the pass itself). The Score-CAM family weights each channel by the score the model gives to
the input masked by that channel's map; the masked inputs run in batches whose size comes
from the free memory (:mod:`cnnvis_core.passes`), each batch in its own session so
other callers can interleave. Two exact savings: channels whose normalised maps are equal
(in particular all-zero channels, frequent after a ReLU) give the same masked input and are
scored once, and the baseline ``f(X_b)`` of the papers is not run, because the softmax over
channels does not change when the same number is subtracted from every channel's score.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..core import ModelCore
from ..errors import InputError, LayerError, ModelError
from ..passes import PRECISIONS, Progress, batched_logits
from ..targets import Target
from .base import CamResult, LayerPass, SharedPass, layer_pass, results, unit_scale, upsample, weighted_sum
from .declaration import CamMethod


# ---------------------------------------------------------------------------- CAM
def cam(A: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """CAM (Zhou et al., CVPR 2016, arXiv:1512.04150).

    ``M_c(i, j) = Σ_k w_k^c A_k(i, j)`` with ``w^c`` the final linear layer's row for class
    ``c`` (the paper's map has no ReLU and no bias; ``raw`` keeps its negative values).
    ``weights``: ``(T, C)``, one row per target.
    """
    return weighted_sum(weights, A)


def cam_map(shared: SharedPass) -> torch.Tensor:
    """CAM's raw maps ``(T, h, w)`` from a shared pass (see :func:`cam` and :func:`cam_weights`).
    A head that pools ``ReLU(A)`` of the automatic layer (torchvision's DenseNet: a functional
    ReLU after ``norm5``, which no module outputs) gets the map of ``ReLU(A)``, the features its
    linear layer reads. A named layer must be the pooled one itself."""
    weights = cam_weights(shared.core, shared.run, shared.layer, shared.automatic)
    A = torch.relu(shared.A) if shared.layer in _relu_heads(shared.core) else shared.A
    return cam(A, weights)


def cam_weights(core: ModelCore, run: LayerPass, layer: str, automatic: bool = False) -> torch.Tensor:
    """The final linear layer's rows for the pass's targets, ``(T, C)``, after checking on the
    pass that the model is ``logits = W · GAP(A) + b`` for this layer's activation ``A``.

    The check needs the linear layer's input and output, recorded by the pass
    (``layer_pass(..., linear=True)``). The structure does not change from one image to the
    next, so a check passed is remembered per model and layer (:func:`verified_head`), and later
    passes need not record the linear layer at all. Refusals: :class:`ModelError` when the
    model does not end that way for its automatic layer (no linear layer, an MLP head, a pooled
    tensor no module outputs), else :class:`LayerError` for a layer that is not the pooled one.
    """
    advice = "Use 'gradcam' instead: where CAM applies it gives the same map up to a factor, and it works on any model."
    linear = verified_head(core, layer)
    if linear is None:
        if run.linear is None:
            raise ModelError(f"CAM needs a model that ends in global average pooling and one linear layer; this "
                             f"model has no linear layer. {advice}")
        linear, features, output = run.linear
        if automatic and not _head_fits(run, features, output) and _head_fits(run, features, output, relu=True):
            _relu_heads(core).add(layer)  # the automatic layer pooled through a functional ReLU (DenseNet)
        elif not _head_fits(run, features, output):
            if automatic:
                raise ModelError("CAM needs a model whose output is one linear layer applied to the global average "
                                 f"of its last feature maps ({layer!r}); this model's head is different (more layers, "
                                 f"or it pools something no module outputs). {advice}")
            raise LayerError(f"CAM needs the layer whose global average feeds the final linear layer, and {layer!r} "
                             f"is not it. Leave the layer on automatic, or {advice[0].lower()}{advice[1:]}")
        _heads(core)[layer] = linear
    return linear.weight.detach()[run.targets].to(run.activation.dtype)


def verified_head(core: ModelCore, layer: str) -> nn.Linear | None:
    """The linear layer that reads the global average of ``layer``, once a pass has shown it
    (see :func:`cam_weights`); else None."""
    return _heads(core).get(layer)


def _heads(core: ModelCore) -> dict[str, nn.Linear]:
    """layer → the linear layer seen to read its global average (checks passed), per model."""
    return core.cache.get("CAM heads", dict)


def _relu_heads(core: ModelCore) -> set[str]:
    """Layers whose verified head pools ``ReLU(A)`` rather than ``A`` (per model)."""
    return core.cache.get("CAM heads after a ReLU", set)


def _head_fits(run: LayerPass, features: torch.Tensor, output: torch.Tensor, relu: bool = False) -> bool:
    """Whether the linear layer's input is the pass's pooled activation (of ``ReLU(A)`` with
    ``relu``) and its output the logits."""
    pooled = (torch.relu(run.activation) if relu else run.activation).mean((-2, -1))
    scale = float(pooled.abs().max()) + 1e-6
    return (output.shape == run.logits.shape and torch.allclose(output, run.logits, rtol=1e-4, atol=1e-5)
            and features.shape == pooled.shape and torch.allclose(features, pooled, rtol=1e-4, atol=1e-5 * scale))


# ---------------------------------------------------------------------------- the Score-CAM family
def scorecam_variants(masks: torch.Tensor, variant: torch.Tensor, n: int, sigma: float, seed: int,
                      items: torch.Tensor) -> torch.Tensor:
    """Score-CAM's mask itself (one variant)."""
    return masks


def iscam_variants(masks: torch.Tensor, variant: torch.Tensor, n: int, sigma: float, seed: int,
                   items: torch.Tensor) -> torch.Tensor:
    """IS-CAM's path from the black image to the mask: variant ``v`` is ``((v + 1) / n) · M``."""
    return masks * ((variant + 1).to(masks.dtype) / n).view(-1, 1, 1)


def sscam_variants(masks: torch.Tensor, variant: torch.Tensor, n: int, sigma: float, seed: int,
                   items: torch.Tensor) -> torch.Tensor:
    """SS-CAM's noisy masks ``M + δ``, ``δ ~ N(0, σ²)`` per pixel, drawn from ``seed`` and the item."""
    noise = torch.empty_like(masks, device="cpu")
    generator = torch.Generator()
    for row, item in enumerate(items.tolist()):
        generator.manual_seed(int(seed) * 1_000_003 + item)
        noise[row].normal_(0.0, sigma, generator=generator)
    return masks + noise.to(masks.device)


def score_cam(core: ModelCore, x: torch.Tensor, layer: str, targets: Sequence[Target] | None, top: int,
              method: CamMethod, n_samples: int = 1, sigma: float = 0.0, seed: int = 0,
              precision: str = "float32", progress: Progress | None = None) -> list[CamResult]:
    """Score-CAM (Wang et al., CVPR-W 2020, arXiv:1910.01279), SS-CAM (Naidu & Michael 2020,
    arXiv:2006.14255) and IS-CAM (Naidu et al. 2020, arXiv:2010.03023).

    ``M_k = s(Up(A_k))``: channel ``k`` upsampled to the input's size and min–max normalised
    to [0, 1] (0 for a constant channel); ``y^c(X ∘ M)`` the class logit of the masked input::

        Score-CAM  S_k = y^c(X ∘ M_k)
        SS-CAM     S_k = (1/N) Σ_i y^c(X ∘ (M_k + δ_i)),   δ_i ~ N(0, σ²)   (N = 35, σ = 2)
        IS-CAM     S_k = (1/N) Σ_i y^c(X ∘ (i/N) M_k),     i = 1 … N          (N = 10)
        α_k = softmax_k(S_k),   L = ReLU(Σ_k α_k A_k)

    (the papers subtract the baseline score ``y^c(X_b)`` first, which the softmax ignores). All
    targets share the masked passes: one pass scores every class. SS-CAM's noise comes from
    ``seed`` and the mask's index, so a call is reproducible; channels with equal normalised
    maps share their masked inputs (and, for SS-CAM, their noise draws).

    ``precision="bfloat16"`` runs the masked passes under bfloat16 autocast (fast on CPUs
    with AMX and on GPUs; logits then carry about 3 significant digits, so the map is close
    to, not equal to, the float32 one). The default is float32. ``progress(done, total)``, when
    given, is called after every batch of masked passes (``total`` of them in all).

    ``method`` is the declaration (:mod:`.methods`): its ``variants`` make the samples of a mask.
    """
    n, sigma = int(n_samples), float(sigma)
    if n < 1:
        raise InputError(f"{method.title} needs at least one sample per channel, got n_samples={n}.")
    if precision not in PRECISIONS:
        raise InputError(f"Unknown precision {precision!r}; use {' or '.join(PRECISIONS)}.")
    variants = method.variants
    run = layer_pass(core, x, layer, targets, top, gradients=False)
    A = run.activation[0]
    groups, inverse = _distinct_maps(A)
    size = tuple(x.shape[-2:])

    def masks_of(items: torch.Tensor) -> torch.Tensor:
        reps = groups[torch.div(items, n, rounding_mode="floor")]
        base = unit_scale(upsample(reps, size))
        return variants(base, items % n, n, sigma, seed, items)

    def inputs_of(items: torch.Tensor) -> torch.Tensor:
        return x * masks_of(items).unsqueeze(1)

    scores = batched_logits(core, inputs_of, groups.shape[0] * n, run.targets, tuple(x.shape[1:]), ("masked",),
                            precision, progress)
    per_channel = scores.view(groups.shape[0], n, -1).mean(1)[inverse.to(scores.device)]
    weights = torch.softmax(per_channel.to(A.device, A.dtype), dim=0).T
    raw = torch.relu(weighted_sum(weights, A))
    return results(raw, size, run.targets, layer, method.name, run.scores)


def _distinct_maps(A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Channels grouped by their min–max normalised map: ``(one map per group, group of each channel)``."""
    normalised = unit_scale(A)
    flat = normalised.flatten(1)
    _unique, inverse = torch.unique(flat, dim=0, return_inverse=True)
    first = torch.full((int(inverse.max()) + 1,), A.shape[0], dtype=torch.long, device=A.device)
    first.scatter_reduce_(0, inverse, torch.arange(A.shape[0], device=A.device), reduce="amin")
    return A[first], inverse
