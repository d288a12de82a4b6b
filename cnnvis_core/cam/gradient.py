"""Gradient-weighted class activation maps: Grad-CAM, Grad-CAM++, XGrad-CAM, Layer-CAM, Smooth Grad-CAM++.

Notation: ``A_k`` is channel ``k`` of the target layer's activation (``h×w``), ``y^c`` the
pre-softmax score of class ``c``, ``g_k = ∂y^c/∂A_k`` its gradient (one backward, see
:func:`cnnvis_core.cam.base.layer_pass`), sums over ``(i, j)`` run over the ``h×w`` positions.
Every function here takes ``A`` as ``(C, h, w)`` and ``G`` as ``(T, C, h, w)`` (one gradient
per target class); the ``*_weights`` functions return the channel weights ``w`` ``(T, C)`` of
a map ``L = ReLU(Σ_k w_k A_k)``, :func:`layercam` the raw maps ``(T, h, w)``. They only
combine tensors the shared pass already holds, so all of them together cost one forward and
one backward. The methods are declared in :mod:`.methods`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..core import ModelCore
from ..errors import InputError
from ..targets import Target
from .base import CamResult, layer_pass, results, weighted_sum


def _safe_divide(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """``numerator / denominator`` where the denominator is non-zero, else 0 (the quotient's
    infinities and NaNs there are never picked)."""
    return torch.where(denominator != 0, numerator / denominator, 0.0)


def gradcam_weights(A: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al., ICCV 2017, arXiv:1610.02391): ``(T, C)``.

    ``w_k = (1/hw) Σ_ij g_k(i, j)`` (global-average-pooled gradient), ``L = ReLU(Σ_k w_k A_k)``.
    """
    return G.mean((-2, -1))


def gradcam_pp_weights(A: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++ (Chattopadhyay et al., WACV 2018, arXiv:1710.11063): ``(T, C)``.

    With the score taken as ``exp(y^c)``, its higher derivatives are powers of ``g`` (exact for
    a piecewise-linear network), and the common factor ``exp(y^c)`` cancels or only scales::

        α_k(i, j) = g_k(i, j)² / (2 g_k(i, j)² + Σ_ab A_k(a, b) · g_k(i, j)³)   (0 where the denominator is 0)
        w_k = Σ_ij α_k(i, j) · ReLU(g_k(i, j)),        L = ReLU(Σ_k w_k A_k)

    Where ``g > 0`` (elsewhere ``ReLU(g) = 0``), ``α · ReLU(g) = g / (2 + Σ_ab A_k · g)``, which is
    what is computed (fewer passes over the tensors). Where ``2 + Σ A · g = 0`` the quotient is
    not finite (``g / 0`` or ``0 / 0``) and is set to 0, as the formula says.
    """
    quotient = torch.relu(G).div_(G * A.sum((-2, -1), keepdim=True) + 2)
    return quotient.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0).sum((-2, -1))


def _plus_plus_weights(A: torch.Tensor, D1: torch.Tensor, D2: torch.Tensor, D3: torch.Tensor) -> torch.Tensor:
    """``Σ_ij α · ReLU(D1)`` with ``α = D2 / (2 D2 + Σ_ab A · D3)``: ``(T, C)``."""
    alpha = _safe_divide(D2, 2 * D2 + A.sum((-2, -1), keepdim=True) * D3)
    return (alpha * torch.relu(D1)).sum((-2, -1))


def xgradcam_weights(A: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """XGrad-CAM (Fu et al., BMVC 2020, arXiv:2008.02312): ``(T, C)``.

    ``w_k = Σ_ij (A_k(i, j) / Σ_ab A_k(a, b)) · g_k(i, j)`` (0 for a channel whose sum is 0),
    ``L = ReLU(Σ_k w_k A_k)``.
    """
    return _safe_divide((A * G).sum((-2, -1)), A.sum((-2, -1)))


def layercam(A: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """Layer-CAM (Jiang et al., IEEE TIP 2021).

    A weight per position: ``L(i, j) = ReLU(Σ_k ReLU(g_k(i, j)) · A_k(i, j))``.
    """
    return torch.relu((torch.relu(G) * A).sum(-3))


def smooth_gradcam_pp(core: ModelCore, x: torch.Tensor, layer: str, targets: Sequence[Target] | None, top: int,
                      n_samples: int = 8, noise: float = 0.15, seed: int = 0) -> list[CamResult]:
    """Smooth Grad-CAM++ (Omeiza et al., 2019, arXiv:1908.01224).

    The derivatives of Grad-CAM++ are averaged over ``n`` noisy copies ``x + ε_m`` of the input,
    ``ε_m ~ N(0, σ²)`` with ``σ = noise · (max x − min x)`` (SmoothGrad's noise level,
    Smilkov et al. 2017)::

        D1 = (1/n) Σ_m g_m,   D2 = (1/n) Σ_m g_m²,   D3 = (1/n) Σ_m g_m³
        α_k(i, j) = D2 / (2 D2 + Σ_ab A_k(a, b) · D3),   w_k = Σ_ij α_k(i, j) · ReLU(D1)
        L = ReLU(Σ_k w_k A_k)

    with ``A`` the activation of the clean image. Cost: ONE forward of the batch
    ``[x, x + ε_1, …, x + ε_n]`` and ONE backward (targets are resolved on the clean image).
    Noise is drawn from ``seed``, so a call is reproducible.
    """
    if int(n_samples) < 1:
        raise InputError(f"Smooth Grad-CAM++ needs at least one noisy sample, got n_samples={n_samples}.")
    generator = torch.Generator().manual_seed(int(seed))
    sigma = float(noise) * float(x.max() - x.min())
    eps = torch.randn((int(n_samples), *x.shape[1:]), generator=generator).to(x.device, x.dtype) * sigma
    batch = torch.cat([x, x + eps])
    run = layer_pass(core, batch, layer, targets, top)
    A, noisy = run.activation[0], run.grads[:, 1:]
    weights = _plus_plus_weights(A, noisy.mean(1), noisy.pow(2).mean(1), noisy.pow(3).mean(1))
    raw = torch.relu(weighted_sum(weights, A))
    return results(raw, tuple(x.shape[-2:]), run.targets, layer, "smoothgradcam++", run.scores)
