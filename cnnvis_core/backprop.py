"""Backpropagation saliency: vanilla gradient, deconvnet, guided backpropagation, guided Grad-CAM.

All four are the gradient of the class score ``y_c`` (the pre-softmax logit) with respect to
the input pixels, ``∂y_c/∂x`` (3×H×W), computed with a different rule for the ReLU's backward
pass. With ``z`` the ReLU's input and ``g`` the gradient arriving from above:

========================  ===========================  ==========================================
method                    ReLU backward                paper
========================  ===========================  ==========================================
``gradient``              ``g · [z > 0]``              Simonyan, Vedaldi & Zisserman 2014
``deconvnet``             ``max(g, 0)``                Zeiler & Fergus 2014 (forward mask ignored)
``guided``                ``max(g, 0) · [z > 0]``      Springenberg et al. 2015 (both)
``guided_gradcam``        guided, then ``· Grad-CAM``  Selvaraju et al. 2017
========================  ===========================  ==========================================

Guided Grad-CAM multiplies the guided gradient, channel by channel, by the Grad-CAM map
bilinearly upsampled to the input's resolution (and scaled to a maximum of 1).

How the rule is applied: :func:`relu_rule` is a context manager around the *forward* pass that
intercepts every ReLU call through PyTorch's ``__torch_function__`` mechanism (a
:class:`~torch.overrides.TorchFunctionMode`, thread-local) and computes it with a small
autograd function carrying the chosen backward. It catches ``nn.ReLU`` modules — in place
or not, as torchvision uses them — *and* functional calls (``F.relu``, ``torch.relu``,
``x.relu()``, their in-place ``_`` forms), which module hooks cannot reach. The model itself
is never modified: no hook, no swapped module, no changed ``inplace`` flag. Limits: a
rectifier written another way (``clamp(min=0)``, ``torch.maximum(x, 0)``) and other
activations (ReLU6, LeakyReLU, GELU, SiLU…) keep their ordinary gradient; the result says how
many ReLU calls were rewritten and which other activation modules the model has, and a model
without any ReLU gets a :class:`~cnnvis_core.errors.ModelError` for ``deconvnet``/``guided``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from .cam.compute import compute as compute_cams
from .core import ImageLike, ModelCore
from .errors import InputError, ModelError
from .targets import Target, class_index, top_classes

#: the method names of :func:`saliency`
METHODS: tuple[str, ...] = ("gradient", "deconvnet", "guided", "guided_gradcam")
#: ReLU backward rules of :func:`relu_rule` (``gradient`` is autograd's own)
RULES: tuple[str, ...] = ("gradient", "deconvnet", "guided")

_RELU_OUT_OF_PLACE = (F.relu, torch.relu, torch.Tensor.relu)
_RELU_IN_PLACE = (F.relu_, torch.relu_, torch.Tensor.relu_)
#: activation modules the rules do not rewrite (reported, not an error)
_OTHER_ACTIVATIONS = (nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU,
                      nn.SiLU, nn.Mish, nn.Hardswish, nn.Hardsigmoid, nn.Softplus, nn.Tanh, nn.Sigmoid)


# ---------------------------------------------------------------------------- the ReLU rules
class _RuleReLU(torch.autograd.Function):
    """``max(z, 0)`` forward; backward ``max(g, 0)`` (deconvnet) or ``max(g, 0)·[z > 0]`` (guided)."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, guided: bool, inplace: bool) -> torch.Tensor:  # type: ignore[override]
        if inplace:
            ctx.mark_dirty(z)
            out = z.clamp_min_(0)
        else:
            out = z.clamp_min(0)
        ctx.guided = guided
        if guided:
            ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # type: ignore[override]
        grad = grad.clamp_min(0)
        if ctx.guided:
            (out,) = ctx.saved_tensors
            grad = grad * (out > 0)
        return grad, None, None


class _ReluRuleMode(TorchFunctionMode):
    """Computes every ReLU call made while active with :class:`_RuleReLU`; counts them."""

    def __init__(self, rule: str) -> None:
        super().__init__()
        self.guided = rule == "guided"
        self.calls = 0
        self.image_calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _RELU_OUT_OF_PLACE or func in _RELU_IN_PLACE:
            inplace = func in _RELU_IN_PLACE or bool(kwargs.get("inplace", args[1] if len(args) > 1 else False))
            self.calls += 1
            # the parameters are frozen: an input that requires grad depends on the image
            self.image_calls += bool(getattr(args[0], "requires_grad", False))
            return _RuleReLU.apply(args[0], self.guided, inplace)
        return func(*args, **kwargs)


@dataclass
class RuleStats:
    """What :func:`relu_rule` did: ``calls``, the number of ReLU calls given the rule;
    ``image_calls``, those whose input required a gradient (with frozen parameters: depended on
    the input image, so the rule can change the input gradient)."""

    rule: str
    calls: int = 0
    image_calls: int = 0


@contextmanager
def relu_rule(rule: str) -> Iterator[RuleStats]:
    """Run the forward passes inside the block with the ReLU backward rule ``rule``.

    ``rule`` is ``"gradient"`` (nothing changes), ``"deconvnet"`` or ``"guided"`` (see the
    module's table). The gradient graph built inside the block keeps the rule, so the
    backward pass may run after the block. The model is not touched; the mode is
    thread-local, so other threads' forwards are unaffected.
    """
    if rule not in RULES:
        raise InputError(f"Unknown ReLU rule {rule!r}; use one of {', '.join(RULES)}.")
    stats = RuleStats(rule)
    if rule == "gradient":
        yield stats
        return
    mode = _ReluRuleMode(rule)
    try:
        with mode:
            yield stats
    finally:
        stats.calls = mode.calls
        stats.image_calls = mode.image_calls


def other_activations(model: nn.Module) -> tuple[str, ...]:
    """Kinds of activation modules in ``model`` that the rules leave alone (sorted, unique)."""
    return tuple(sorted({type(m).__name__ for m in model.modules() if isinstance(m, _OTHER_ACTIVATIONS)}))


# ---------------------------------------------------------------------------- results
@dataclass(frozen=True, eq=False)
class Saliency:
    """A backpropagation saliency map for one image and one class.

    ``gradient``: the raw 3×H×W float32 array at the model's input resolution (for
    ``guided_gradcam`` the guided gradient times the upsampled Grad-CAM map);
    ``map``: H×W float32 in [0, 1], the channel-wise maximum of ``|gradient|`` divided by its
    maximum (Simonyan et al.'s display); ``target``: the class; ``score``: its logit;
    ``relus``: ReLU calls that got the method's rule; ``notes``: what a person should know.
    """

    method: str
    target: int
    score: float
    gradient: np.ndarray
    map: np.ndarray
    relus: int = 0
    notes: tuple[str, ...] = field(default=())

    def rgb(self) -> np.ndarray:
        """The gradient as an H×W×3 uint8 picture (see :func:`gradient_rgb`)."""
        return gradient_rgb(self.gradient)


def magnitude_map(gradient: torch.Tensor | np.ndarray) -> np.ndarray:
    """``max_c |g_c|`` of a 3×H×W gradient, divided by its maximum (zeros stay zeros): H×W float32."""
    g = torch.as_tensor(gradient).detach().float().cpu()
    m = g.abs().amax(0)
    top = float(m.max()) if m.numel() else 0.0
    return (m / top if top > 0 else m).numpy().astype(np.float32)


def gradient_rgb(gradient: np.ndarray, spread: float = 0.15) -> np.ndarray:
    """A signed 3×H×W gradient as an RGB picture: zero is mid-grey.

    Each value is standardised over the whole array, ``0.5 + spread · (g − mean) / std``,
    clipped to [0, 1] (the usual display of guided backpropagation), then scaled to uint8.
    """
    g = np.asarray(gradient, np.float32)
    std = float(g.std())
    unit = np.full(g.shape, 0.5, np.float32) if std <= 0 else 0.5 + spread * (g - g.mean()) / std
    return (np.clip(unit, 0.0, 1.0) * 255 + 0.5).astype(np.uint8).transpose(1, 2, 0)


# ---------------------------------------------------------------------------- computation
def resolve_target(logits: torch.Tensor, target: Target | None, categories: list[str]) -> int:
    """``target`` (an index or a class name) as an index, or the top-1 class when None."""
    if logits.dim() != 2 or logits.shape[0] != 1:
        raise ModelError(f"The model must return one row of class scores, got shape {tuple(logits.shape)}.")
    if target is None:
        return top_classes(logits[0], 1)[0]
    return class_index(target, categories, int(logits.shape[1]))


def input_gradient(core: ModelCore, x: torch.Tensor, target: Target | None, rule: str
                   ) -> tuple[torch.Tensor, int, float, int]:
    """``∂y_c/∂x`` with the ReLU rule ``rule``: one forward, one backward (counted).

    Returns ``(gradient 3×H×W on the CPU, target, logit, ReLU calls rewritten)``. Only the
    input gets a gradient (``torch.autograd.grad``); parameter ``.grad`` stays untouched.
    """
    x = x.detach().clone().requires_grad_(True)
    with core.session(), torch.enable_grad():
        with relu_rule(rule) as stats:
            logits = core.forward(x)
        target = resolve_target(logits, target, core.categories)
        score = logits[0, target]
        (grad,) = torch.autograd.grad(score, x)
        core.counters.add(backward=1)
    if stats.calls and not stats.image_calls:
        raise ModelError(f"The {rule} rule changes the backward pass of ReLUs, and none of this model's "
                         f"{stats.calls} ReLU calls depends on the image (they compute something else, such as Swin "
                         "V2's position-bias MLP): the result would be the plain gradient. Use method 'gradient' "
                         "instead.")
    return grad[0].detach().float().cpu(), target, float(score.detach()), stats.calls


def saliency(core: ModelCore, image: ImageLike, method: str = "gradient", target: Target | None = None
             ) -> Saliency:
    """The backpropagation saliency of ``image`` for class ``target`` (an index or a class name;
    top-1 when None).

    ``method``: ``gradient``, ``deconvnet``, ``guided`` or ``guided_gradcam`` (see the module
    docstring for each rule and paper). Cost: one forward and one backward pass;
    ``guided_gradcam`` adds the Grad-CAM call (one more of each).
    """
    if method not in METHODS:
        raise InputError(f"Unknown saliency method {method!r}; use one of {', '.join(METHODS)}.")
    x = core.preprocess(image)
    rule = "guided" if method == "guided_gradcam" else method
    grad, target, score, relus = input_gradient(core, x, target, rule)
    notes = _rule_notes(core.model, rule, relus)
    if method == "guided_gradcam":
        grad = grad * upsampled_gradcam(core, x, target, tuple(grad.shape[1:]))
    return Saliency(method, target, score, grad.numpy().astype(np.float32), magnitude_map(grad), relus, notes)


def upsampled_gradcam(core: ModelCore, x: torch.Tensor, target: int, size: tuple[int, int]) -> torch.Tensor:
    """Grad-CAM's low-resolution map (``engine.cam(…, "gradcam").raw``), bilinearly upsampled to
    ``size`` (the input tensor's grid, so any crop of the transform stays aligned) and divided
    by its maximum: H×W in [0, 1]."""
    found = compute_cams(core, x, ["gradcam"], targets=[target])["gradcam"][0]
    raw = torch.as_tensor(np.asarray(found.raw), dtype=torch.float32)
    while raw.dim() < 4:
        raw = raw.unsqueeze(0)
    up = F.interpolate(raw, size=size, mode="bilinear", align_corners=False)[0, 0].clamp_min(0)
    top = float(up.max())
    return up / top if top > 0 else up


def _rule_notes(model: nn.Module, rule: str, relus: int) -> tuple[str, ...]:
    if rule == "gradient":
        return ()
    others = other_activations(model)
    if relus == 0:
        extra = f" (it uses {', '.join(others)})" if others else ""
        raise ModelError(f"The {rule} rule changes the backward pass of ReLUs, and this model runs none"
                         f"{extra}: the result would be the plain gradient. Use method 'gradient' instead.")
    if others:
        return (f"The {rule} rule was applied to {relus} ReLU calls; the model's {', '.join(others)} "
                "activations keep their ordinary gradient.",)
    return ()
