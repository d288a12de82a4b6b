"""Deconvnet reconstruction: one channel of one layer projected back to pixel space.

Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks" (ECCV 2014), §2.1:
keep the chosen channel's activation ``A_c`` of the chosen layer (all of it, or only its
strongest position with ``top_only=True``), set every other activation of the layer to zero,
and pass that down through the layers below in reverse order:

- max-pooling: *unpool* with the switches recorded in the forward pass (each value goes back
  to the position of the maximum it came from; others get zero; where overlapping windows
  share a maximum their values add up);
- ReLU: *rectify* the signal, ``max(r, 0)`` (the forward mask is not used);
- convolution: *filter* with the transposed convolution of the same weights
  (``conv_transpose2d(r, W)``, same stride, padding, dilation and groups; no bias);
- batch normalisation (eval): multiply each channel by ``γ / √(σ² + ε)``, the transpose of
  BN's linear part; the shift ``β − γμ/σ`` is dropped like the conv bias. Without the scale
  channels would mix with the wrong relative weights, since the conv was trained with BN's
  scaling after it (Zeiler & Fergus had no BN; this is our choice);
- dropout and identity (eval): pass through.

The projection needs a plain chain of such modules from the input to the layer (the demo
model's ``features``, VGG, AlexNet): checked in the forward pass, where each module must
take the previous one's output. For other architectures (residual or branching nets, other
layer types) :func:`reconstruct` falls back to backpropagating the same seed with the
deconvnet ReLU rule (:func:`~cnnvis_core.backprop.relu_rule`): for a conv/BN/ReLU/max-pool
chain this *equals* the projection above — the transposed conv and the switch unpooling
are exactly the gradients of conv and max-pool, and the deconvnet rule is the rectification —
and the tests check the two agree; for residual nets it is the natural extension
(the gradient of an addition copies the signal to both branches). ``mechanism`` in the
result says which one ran.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .backprop import gradient_rgb, magnitude_map, relu_rule
from .core import ImageLike, ModelCore
from .errors import InputError, LayerError
from .hooks import Tap, tapped
from .layers import LayerInfo

MECHANISMS: tuple[str, ...] = ("auto", "switches", "gradient")
#: module types the switch projection handles
SUPPORTED = (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.Dropout, nn.Dropout2d, nn.Identity)


@dataclass(frozen=True, eq=False)
class Reconstruction:
    """A channel's activation projected to pixel space.

    ``image``: 3×H×W float32, the projection at the model's input resolution (signed);
    ``map``: H×W float32 in [0, 1], ``max_c |image_c|`` over its maximum; ``position``:
    ``(row, col)`` of the channel's strongest activation in the layer's map, ``activation``
    its value; ``mechanism``: ``"switches"`` (the deconvnet projection) or ``"gradient"``
    (the deconvnet ReLU rule, for models that are not a plain chain); ``notes`` for a person.
    """

    layer: str
    channel: int
    top_only: bool
    position: tuple[int, int]
    activation: float
    image: np.ndarray
    map: np.ndarray
    mechanism: str
    notes: tuple[str, ...] = ()

    def rgb(self) -> np.ndarray:
        """The projection as an H×W×3 uint8 picture, zero mid-grey (see :func:`gradient_rgb`)."""
        return gradient_rgb(self.image)


@dataclass
class _Step:
    """One leaf module call of the forward pass: what the projection needs to undo it."""

    module: nn.Module
    name: str
    input: torch.Tensor
    output: torch.Tensor
    switches: torch.Tensor | None = None


def reconstruct(core: ModelCore, image: ImageLike, layer: str, channel: int, top_only: bool = False,
                mechanism: str = "auto") -> Reconstruction:
    """Project channel ``channel`` of ``layer`` back to pixel space (Zeiler & Fergus 2014).

    ``top_only=True`` keeps only the channel's strongest activation (the paper's figures);
    otherwise the whole feature map is projected. ``mechanism``: ``"auto"`` (switch
    projection where the model is a plain chain, else the deconvnet gradient rule),
    ``"switches"`` (error where it does not apply) or ``"gradient"``. Cost: one forward pass
    up to the layer and one backward projection.
    """
    if mechanism not in MECHANISMS:
        raise InputError(f"Unknown mechanism {mechanism!r}; use one of {', '.join(MECHANISMS)}.")
    info = _spatial_layer(core, layer)
    if isinstance(channel, bool) or not isinstance(channel, (int, np.integer)) or not 0 <= channel < info.channels:
        raise InputError(f"Layer {layer!r} has {info.channels} channels: choose a channel from 0 to "
                         f"{info.channels - 1}, got {channel!r}.")
    x = core.preprocess(image)
    if mechanism != "gradient":
        with core.session():
            steps, act = _record_chain(core, x, layer)
        problem = _chain_problem(steps, act, x)
        if problem is None:
            seed, position = _seed(act, int(channel), top_only)
            pixels = project(steps, seed)
            core.counters.add(backward=1)
            return _result(layer, channel, top_only, position, act, pixels, "switches", ())
        if mechanism == "switches":
            raise LayerError(f"The switch projection needs a plain chain of Conv2d, BatchNorm2d, ReLU and "
                             f"MaxPool2d layers up to {layer!r} (like the demo model, VGG or AlexNet); "
                             f"here {problem}. Use mechanism='gradient' (the deconvnet ReLU rule).")
        note = (f"This model is not a plain conv/ReLU/max-pool chain ({problem}), so the projection "
                "backpropagates with the deconvnet ReLU rule instead.",)
    else:
        note = ()
    pixels, act, seed_position = _gradient_rule(core, x, layer, int(channel), top_only)
    return _result(layer, channel, top_only, seed_position, act, pixels, "gradient", note)


def project(steps: list[_Step], seed: torch.Tensor) -> torch.Tensor:
    """Pass ``seed`` (the layer's masked activation) down the recorded chain: unpool with the
    switches, rectify, transposed convolution, BN scale (see the module docstring)."""
    signal = seed
    for step in reversed(steps):
        signal = _undo(step, signal)
    return signal


def _undo(step: _Step, signal: torch.Tensor) -> torch.Tensor:
    module = step.module
    if isinstance(module, nn.MaxPool2d):
        return _unpool(signal, step.switches, step.input.shape)
    if isinstance(module, nn.ReLU):
        return signal.clamp_min(0)
    if isinstance(module, nn.BatchNorm2d):
        scale = torch.rsqrt(module.running_var + module.eps)
        if module.weight is not None:
            scale = scale * module.weight
        return signal * scale.view(1, -1, 1, 1)
    if isinstance(module, nn.Conv2d):
        return _transposed_conv(module, signal, step.input.shape)
    return signal  # dropout, identity (eval)


def _unpool(signal: torch.Tensor, switches: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Each pooled value goes back to the input position its maximum came from (values add up
    where overlapping windows picked the same position); all other positions get zero."""
    n, c = signal.shape[:2]
    flat = signal.new_zeros(n, c, shape[2] * shape[3])
    flat.scatter_add_(2, switches.flatten(2), signal.flatten(2))
    return flat.view(shape)


def _transposed_conv(conv: nn.Conv2d, signal: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """``conv_transpose2d`` with the conv's own weights, output padded to the input's size."""
    stride, padding, dilation = conv.stride, conv.padding, conv.dilation
    kernel = conv.weight.shape[2:]
    extra = [shape[2 + i] - ((signal.shape[2 + i] - 1) * stride[i] - 2 * padding[i] + dilation[i] * (kernel[i] - 1) + 1)
             for i in range(2)]
    return F.conv_transpose2d(signal, conv.weight, None, stride, padding, tuple(extra), conv.groups, dilation)


# ---------------------------------------------------------------------------- forward bookkeeping
def _spatial_layer(core: ModelCore, layer: str) -> LayerInfo:
    info = core.layer(layer)
    if not info.is_spatial:
        spatial = [li.name for li in core.layers() if li.is_spatial and max(li.output_shape[1:]) > 1]
        hint = f", e.g. {spatial[-1]!r}" if spatial else ""
        raise LayerError(f"Layer {layer!r} outputs {tuple(info.output_shape)}, not feature maps: the "
                         f"reconstruction needs a layer with a C×H×W output{hint}.")
    return info


def _stop_at(core: ModelCore, layer: str, seen: dict[str, torch.Tensor], detach: bool) -> Tap:
    """A tap that keeps the output of ``layer``'s last call in ``seen["act"]`` and ends the forward."""
    def action(_module: nn.Module, _inputs: tuple, output: object) -> None:
        if isinstance(output, torch.Tensor):
            seen["act"] = output.detach().clone() if detach else output

    return core.tap(layer, action, stop=True)


def _record_chain(core: ModelCore, x: torch.Tensor, layer: str) -> tuple[list[_Step], torch.Tensor]:
    """One forward pass (counted) up to the last call of ``layer``, recording every leaf module
    call (with max-pool switches) and the layer's output."""
    steps: list[_Step] = []
    seen: dict[str, torch.Tensor] = {}

    def leaf(name: str):
        def action(module: nn.Module, inputs: tuple, output: object) -> None:
            if not inputs or not isinstance(inputs[0], torch.Tensor) or not isinstance(output, torch.Tensor):
                steps.append(_Step(module, name, torch.empty(0), torch.empty(0)))
                return
            step = _Step(module, name, inputs[0], output)
            if isinstance(module, nn.MaxPool2d) and inputs[0].dim() == 4:
                step.switches = _switches(module, inputs[0])
            steps.append(step)
        return action

    leaves = [Tap(core.module(name), leaf(name), every_call=True) for name in _leaf_names(core)]
    with tapped([*leaves, _stop_at(core, layer, seen, detach=True)]), torch.no_grad():
        core.forward(x)
    if "act" not in seen:
        raise LayerError(f"Layer {layer!r} did not run in the forward pass.")
    return steps, seen["act"]


def _leaf_names(core: ModelCore) -> list[str]:
    """Names of the modules without children (the layers a chain is made of)."""
    return core.cache.get("leaf modules", lambda: [
        name for name in core.named_modules_of_type(nn.Module) if not any(True for _ in core.module(name).children())])


def _switches(pool: nn.MaxPool2d, z: torch.Tensor) -> torch.Tensor:
    """The flat index of each window's maximum (the "switches" of Zeiler & Fergus)."""
    _, indices = F.max_pool2d(z, pool.kernel_size, pool.stride, pool.padding, pool.dilation,
                              ceil_mode=pool.ceil_mode, return_indices=True)
    return indices


def _chain_problem(steps: list[_Step], act: torch.Tensor, x: torch.Tensor) -> str | None:
    """None if the steps form a plain chain x → … → layer of supported modules, else why not."""
    if not steps:
        return "no layer runs before it"
    previous = x
    for step in steps:
        if not isinstance(step.module, SUPPORTED):
            return f"{step.name!r} is a {type(step.module).__name__}"
        if isinstance(step.module, nn.Conv2d) and (isinstance(step.module.padding, str)
                                                  or step.module.padding_mode != "zeros"):
            return f"{step.name!r} uses {step.module.padding_mode!r}/{step.module.padding!r} padding"
        if isinstance(step.module, nn.BatchNorm2d) and step.module.running_var is None:
            return f"{step.name!r} normalises with batch statistics"
        if step.input is not previous:
            return f"{step.name!r} does not take the previous layer's output (a branch or functional op)"
        previous = step.output
    if previous.shape != act.shape or not torch.equal(previous, act):
        return "the layer's output is not the last module's output"
    return None


def _seed(act: torch.Tensor, channel: int, top_only: bool) -> tuple[torch.Tensor, tuple[int, int]]:
    """The layer's activation with every other channel zeroed (and, if ``top_only``, every
    position but the channel's maximum); also that maximum's ``(row, col)``."""
    fmap = act[0, channel]
    flat = int(fmap.argmax())
    position = (flat // fmap.shape[1], flat % fmap.shape[1])
    seed = torch.zeros_like(act)
    if top_only:
        seed[0, channel, position[0], position[1]] = fmap[position]
    else:
        seed[0, channel] = fmap
    return seed, position


def _gradient_rule(core: ModelCore, x: torch.Tensor, layer: str, channel: int, top_only: bool
                   ) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    """Backpropagate the seed from ``layer`` to the input with the deconvnet ReLU rule."""
    seen: dict[str, torch.Tensor] = {}
    x = x.detach().clone().requires_grad_(True)
    stop = _stop_at(core, layer, seen, detach=False)
    with core.session(), torch.enable_grad():
        with relu_rule("deconvnet"), tapped([stop]):
            core.forward(x)
        act = seen.get("act")
        if act is None:
            raise LayerError(f"Layer {layer!r} did not run in the forward pass.")
        seed, position = _seed(act.detach(), channel, top_only)
        (pixels,) = torch.autograd.grad(act, x, grad_outputs=seed, allow_unused=True)
        core.counters.add(backward=1)
    pixels = torch.zeros_like(x) if pixels is None else pixels
    return pixels, act.detach(), position


def _result(layer: str, channel: int, top_only: bool, position: tuple[int, int], act: torch.Tensor,
            pixels: torch.Tensor, mechanism: str, notes: tuple[str, ...]) -> Reconstruction:
    value = float(act[0, channel, position[0], position[1]])
    if value <= 0 and float(act[0, channel].abs().max()) == 0:
        notes = notes + (f"Channel {channel} of {layer!r} is zero everywhere on this image: nothing to project.",)
    image = pixels[0].detach().float().cpu()
    return Reconstruction(layer, int(channel), bool(top_only), (int(position[0]), int(position[1])), value,
                          image.numpy().astype(np.float32), magnitude_map(image), mechanism, notes)
