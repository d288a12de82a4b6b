"""The built-in CAM methods: one declaration each, in the order the dashboard lists them.

The formulas live in :mod:`.gradient` and :mod:`.activation`; a declaration ties one to its
name, title, paper, kind and options (see :mod:`.declaration`). A new method is one more
``register(CamMethod(...))`` here (or in any module imported before use).
"""

from __future__ import annotations

from .activation import cam_map, iscam_variants, scorecam_variants, sscam_variants
from .attention import attention_rollout, gradient_attention
from .base import SharedPass
from .declaration import MASKED, SAMPLED, SHARED, CamMethod, Option, register
from .gradient import gradcam_pp_weights, gradcam_weights, layercam, smooth_gradcam_pp, xgradcam_weights


def _layercam_map(shared: SharedPass):
    return layercam(shared.A, shared.G)


def _seed() -> Option:
    return Option("seed", 0, "Seed", "The noise is drawn from it: the same seed gives the same map.", 0, 2**31 - 1, 1)


def _precision() -> Option:
    return Option("precision", "float32", "Precision", "bfloat16 runs the masked passes under autocast: faster "
                  "on CPUs with AMX and on GPUs, logits to about 3 digits.", choices=("float32", "bfloat16"))


def _progress() -> Option:
    return Option("progress", None, "Progress", "progress(done, total) after every batch of masked passes; "
                  "an exception raised there cancels the job.", widget=False)


def _samples(default: int, what: str, high: int = 200) -> Option:
    return Option("n_samples", default, "Samples", what, 1, high, 1)


register(CamMethod(
    "cam", "CAM", "Zhou et al. 2016", SHARED,
    "Σ_k w_k^c A_k with w^c the final linear layer's row (models that end in GAP and one linear layer)",
    map=cam_map, gradients=False, reads_head=True))
register(CamMethod(
    "gradcam", "Grad-CAM", "Selvaraju et al. 2017", SHARED, "ReLU(Σ_k mean(g_k) A_k)",
    weights=gradcam_weights))
register(CamMethod(
    "gradcam++", "Grad-CAM++", "Chattopadhyay et al. 2018", SHARED,
    "w_k = Σ α ReLU(g), α = g² / (2g² + ΣA·g³)", weights=gradcam_pp_weights))
register(CamMethod(
    "smoothgradcam++", "Smooth Grad-CAM++", "Omeiza et al. 2019", SAMPLED,
    "Grad-CAM++ on derivatives averaged over noisy copies of the input", compute=smooth_gradcam_pp,
    options=(_samples(8, "Noisy copies of the input whose derivatives are averaged (the paper's default: 8)."),
             Option("noise", 0.15, "Noise", "σ of the noise as a fraction of the input's range.", 0.0, 1.0, 0.05),
             _seed())))
register(CamMethod(
    "scorecam", "Score-CAM", "Wang et al. 2020", MASKED, "softmax_k y^c(x ∘ M_k) weights, one masked pass per channel",
    variants=scorecam_variants, options=(_precision(), _progress())))
register(CamMethod(
    "sscam", "SS-CAM", "Naidu & Michael 2020", MASKED, "Score-CAM with noisy masks M_k + N(0, σ²)",
    variants=sscam_variants,
    options=(_samples(35, "Noisy masks per channel (the paper's default: 35)."),
             Option("sigma", 2.0, "σ", "Standard deviation of the noise added to each mask.", 0.0, 10.0, 0.5),
             _seed(), _precision(), _progress())))
register(CamMethod(
    "iscam", "IS-CAM", "Naidu et al. 2020", MASKED, "Score-CAM averaged over masks (i/N)·M_k, i = 1…N",
    variants=iscam_variants,
    options=(_samples(10, "Steps on the path from the black image to each mask (the paper's default: 10)."),
             _precision(), _progress())))
register(CamMethod(
    "xgradcam", "XGrad-CAM", "Fu et al. 2020", SHARED, "w_k = Σ (A_k / ΣA_k) g_k", weights=xgradcam_weights))
register(CamMethod(
    "layercam", "Layer-CAM", "Jiang et al. 2021", SHARED, "ReLU(Σ_k ReLU(g_k) A_k) at each position",
    map=_layercam_map))
register(CamMethod(
    "rollout", "Attention rollout", "Abnar & Zuidema 2020", SAMPLED,
    "R = Π_l (½ mean_h A_l + ½ I); the class token's row over the patches (vision transformers; class-agnostic)",
    compute=attention_rollout, gradients=False))
register(CamMethod(
    "chefer", "Gradient-weighted attention", "Chefer et al. 2021", SAMPLED,
    "R ← R + mean_h((∇A ⊙ A)⁺) R over the blocks; the class token's row over the patches (vision transformers)",
    compute=gradient_attention))
