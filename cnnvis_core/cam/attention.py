"""Explanations read off a vision transformer's attention: attention rollout and Chefer et al.'s
gradient-weighted attention.

Both need each block's attention probabilities ``A_l`` (``heads × N × N`` for ``N`` tokens,
rows summing to 1). They are read where timm's ``Attention`` (ViT, DeiT and kin) applies its
``attn_drop`` to the softmax: for the pass, each such module's ``fused_attn`` is turned off (so
the probabilities are computed explicitly, the same numbers up to rounding), and a tap on its
``attn_drop`` keeps them, in the autograd graph (the input is made to require a gradient, so
``∂y^c/∂A_l`` takes every path, through the later blocks' attention too, as Chefer et al.'s
tensor hooks do). torchvision's ``VisionTransformer`` runs ``nn.MultiheadAttention`` with
``need_weights=False``: there a tap recomputes the probabilities from the block's input and the
module's weights and hands the rest of the network the output made from them (:mod:`.mha`).
Models without such modules are refused with a :class:`~cnnvis_core.errors.ModelError`. The
maps are the class token's row over the patch tokens (the prefix tokens left out), on the patch
grid of the model (:func:`cnnvis_core.layouts.describe`).

- **Attention rollout** (Abnar & Zuidema, ACL 2020, arXiv:2005.00928):
  ``Â_l = ½ mean_h(A_l) + ½ I``, ``R = Â_L · … · Â_1``; map ``R[0, P:]``. Class-agnostic.
- **Gradient-weighted attention** (Chefer, Gur & Wolf, ICCV 2021, "Generic Attention-model
  Explainability", arXiv:2103.15679, their rule for self-attention):
  ``R = I``; for ``l = 1 … L``: ``Ā_l = mean_h((∇_{A_l} y^c ⊙ A_l)^+)``, ``R ← R + Ā_l · R``;
  map ``R[0, P:]``. One forward and one backward per target class.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager

import torch
from torch import nn

from ..core import ModelCore
from ..errors import ModelError
from ..hooks import Tap, tapped
from ..layouts import describe
from ..targets import Target, resolve_targets
from . import mha
from .base import CamResult, results


def _timm_like(module: nn.Module) -> bool:
    """timm's ``Attention`` layout: ``attn_drop`` applied to the softmax, ``fused_attn`` switchable."""
    return isinstance(getattr(module, "attn_drop", None), nn.Module) and hasattr(module, "fused_attn")


def attention_modules(core: ModelCore) -> list[nn.Module]:
    """The model's attention modules whose probabilities can be read, in order: timm's
    ``Attention`` (and kin) and ``nn.MultiheadAttention`` (torchvision's ViT)."""
    return [m for m in core.model.modules() if _timm_like(m) or isinstance(m, nn.MultiheadAttention)]


def _check(core: ModelCore, title: str) -> tuple[list[nn.Module], int, tuple[int, int]]:
    modules = attention_modules(core)
    structure = describe(core.model)
    if not modules or structure.family != "vit" or structure.grid is None:
        raise ModelError(f"{title} reads a vision transformer's attention probabilities (timm's ViT, DeiT and kin, "
                         "torchvision's ViT: a class token, a patch grid and attention modules); this model has "
                         "none. Use Grad-CAM, which reads any layer with a map.")
    return modules, structure.prefix_tokens, structure.grid


@contextmanager
def _explicit_attention(modules: Sequence[nn.Module]):
    """Turn each module's fused attention off for the block (the probabilities then exist as a tensor)."""
    modules = [m for m in modules if _timm_like(m)]
    fused = [bool(m.fused_attn) for m in modules]
    try:
        for m in modules:
            m.fused_attn = False
        yield
    finally:
        for m, was in zip(modules, fused):
            m.fused_attn = was


def attention_pass(core: ModelCore, x: torch.Tensor, targets: Sequence[Target] | None, top: int,
                   gradients: bool) -> tuple[list[torch.Tensor], list[list[torch.Tensor]] | None, list[int], object]:
    """ONE forward pass of ``x`` (``(1, 3, H, W)``) keeping every block's attention ``(heads, N, N)``;
    with ``gradients``, one backward per target for ``∂y^c/∂A_l``. Returns
    ``(attentions, gradients per target or None, targets, logits as an array)``."""
    modules, _prefix, _grid = _check(core, "This method")
    leaves: list[torch.Tensor | None] = [None] * len(modules)

    def keep(i: int):
        def action(_module: nn.Module, _inputs: tuple, output: object) -> None:
            if isinstance(output, torch.Tensor):
                leaves[i] = output  # in the graph: ∂y/∂A_l takes every path, later attentions' included
        return action

    def recomputed(i: int):
        def action(module: nn.Module, inputs: tuple, output: object) -> tuple:
            leaves[i], y = mha.recompute(module, inputs, output)
            return (y, *output[1:]) if isinstance(output, tuple) else y  # the network goes on from this A
        return action

    taps = [Tap(m.attn_drop, keep(i)) if _timm_like(m) else Tap(m, recomputed(i)) for i, m in enumerate(modules)]
    with core.session(), _explicit_attention(modules):
        with tapped(taps), torch.set_grad_enabled(gradients):
            # The parameters are frozen: the input carries the graph the gradients run through.
            logits = core.forward(x.detach().clone().requires_grad_(True) if gradients else x)
        if any(leaf is None for leaf in leaves):
            raise ModelError("Some attention modules did not run in the forward pass; the attention cannot be read.")
        scores = logits[0].detach().float().cpu().numpy()
        classes = resolve_targets(scores, targets, top, core.categories)
        grads = None
        if gradients:
            grads = []
            for c in classes:
                found = torch.autograd.grad(logits[0, c], leaves, retain_graph=True, allow_unused=True)
                grads.append([torch.zeros_like(a) if g is None else g[0].detach() for a, g in zip(leaves, found)])
                core.counters.add(backward=1)
    return [leaf[0].detach() for leaf in leaves], grads, classes, scores


def rollout(attentions: Sequence[torch.Tensor]) -> torch.Tensor:
    """Abnar & Zuidema's rollout ``R = Â_L · … · Â_1`` with ``Â = ½ mean_h(A) + ½ I``: ``(N, N)``."""
    n = attentions[0].shape[-1]
    eye = torch.eye(n, dtype=attentions[0].dtype, device=attentions[0].device)
    joint = eye
    for A in attentions:
        joint = (0.5 * A.mean(0) + 0.5 * eye) @ joint
    return joint


def chefer_relevance(attentions: Sequence[torch.Tensor], grads: Sequence[torch.Tensor]) -> torch.Tensor:
    """Chefer et al. 2021: ``R = I``, ``R ← R + mean_h((∇A ⊙ A)^+) · R`` block by block: ``(N, N)``."""
    n = attentions[0].shape[-1]
    R = torch.eye(n, dtype=attentions[0].dtype, device=attentions[0].device)
    for A, G in zip(attentions, grads):
        R = R + (G * A).clamp_min(0).mean(0) @ R
    return R


def _grid_maps(rows: torch.Tensor, prefix: int, grid: tuple[int, int]) -> torch.Tensor:
    """Class-token rows ``(T, N)`` → patch maps ``(T, h, w)``."""
    return rows[:, prefix:].reshape(rows.shape[0], *grid)


def attention_rollout(core: ModelCore, x: torch.Tensor, layer: str, targets: Sequence[Target] | None,
                      top: int) -> list[CamResult]:
    """Attention rollout (class-agnostic: the same map for every target), one forward pass."""
    _modules, prefix, grid = _check(core, "Attention rollout")
    attentions, _grads, classes, scores = attention_pass(core, x[:1], targets, top, gradients=False)
    row = rollout(attentions)[0:1]
    raw = _grid_maps(row, prefix, grid).expand(len(classes), *grid)
    return results(raw, tuple(x.shape[-2:]), classes, "attention", "rollout", scores)


def gradient_attention(core: ModelCore, x: torch.Tensor, layer: str, targets: Sequence[Target] | None,
                       top: int) -> list[CamResult]:
    """Chefer et al.'s gradient-weighted attention relevance, per target class."""
    _modules, prefix, grid = _check(core, "Gradient-weighted attention")
    attentions, grads, classes, scores = attention_pass(core, x[:1], targets, top, gradients=True)
    rows = torch.stack([chefer_relevance(attentions, g)[0] for g in grads])
    return results(_grid_maps(rows, prefix, grid), tuple(x.shape[-2:]), classes, "attention", "chefer", scores)
