"""Dead feature maps: channels that stay at zero for every image, and a check that they can go.

A channel ``c`` of layer ``l`` is *dead* on a set of images when its largest absolute
activation over all images and positions, its *peak* ``p_c = max_{n,i,j} |A_c(x_n)(i, j)|``,
is at most ``eps`` (``eps = 0``: exactly zero everywhere). After a ReLU such a channel
carries no information, so the filter that feeds it can be removed (Hu et al., "Network
Trimming: A Data-Driven Neuron Pruning Approach", 2016, prune channels whose Average
Percentage of Zeros is high; a dead channel has APoZ = 100 %).

The claim is checked, not assumed: :func:`verify_pruning` runs the same images twice, once
as they are and once with a forward hook that sets the dead channels' outputs to zero, and
reports ``max_n max_k |z_k(x_n) − z'_k(x_n)|`` over the logits ``z`` and whether any top-1
class changed.

Channels are read through the layer's layout (:func:`~cnnvis_core.layouts.channels_first`): a
vision transformer block's output ``(B, P + h·w, D)`` is ``D`` channels over the ``h×w`` patch
grid (the ``P`` prefix tokens, class and distillation, are not positions of the map), a Swin
stage's ``(B, H, W, C)`` is ``C`` channels; zeroing a channel zeroes it at those positions only.

Images are streamed: any iterable (a generator, a list, a ``(N, 3, H, W)`` tensor) is read
lazily, ``batch_size`` at a time, and only per-channel peaks (one float per channel) are kept,
so memory does not grow with the number of images. Each batch takes the engine's session on
its own, and its hooks live only for that batch, so other callers can interleave.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import nn

from .core import ModelCore, stack_batch
from .errors import InputError
from .hooks import Action, tapped
from .layouts import channels_first, fill_channels

#: module types whose channels :func:`default_layers` examines: convolutions and ReLU-like
#: activations (their outputs are exactly 0 wherever the unit is off)
DEAD_LAYER_TYPES: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.ReLU, nn.ReLU6)


# ---------------------------------------------------------------------------- inputs
def default_layers(core: ModelCore) -> list[str]:
    """The layers examined when none are named: every 2-D conv and every ReLU / ReLU6 with a
    ``C×h×w`` map (any map layout), in execution order (containers and other activations are
    left out; name them explicitly to include them, a ViT block too)."""
    return [info.name for info in core.layers()
            if info.map_shape is not None and isinstance(core.module(info.name), DEAD_LAYER_TYPES)]


def preprocessed_batches(core: ModelCore, images: Iterable, batch_size: int = 16) -> Iterator[torch.Tensor]:
    """Preprocess ``images`` lazily into ``(B, 3, H, W)`` batches of at most ``batch_size``.

    Items are taken from the iterable only as each batch is built, so a generator of a million
    images never sits in memory at once.
    """
    if isinstance(images, (Image.Image, str, bytes, np.ndarray)):
        raise InputError("Expected an iterable of images (a list, a generator…); wrap a single image in a list.")
    if int(batch_size) < 1:
        raise InputError(f"The batch size must be at least 1, got {batch_size}.")
    chunk: list[torch.Tensor] = []
    for image in images:
        chunk.append(core.preprocess(image))
        if len(chunk) == batch_size:
            yield stack_batch(chunk)
            chunk = []
    if chunk:
        yield stack_batch(chunk)


# ---------------------------------------------------------------------------- hooks
def _channel_peak(output: torch.Tensor) -> torch.Tensor:
    """``max |a|`` per channel (dim 1) over the batch and every other dimension, on the CPU."""
    x = output.detach()
    return x.abs().reshape(x.shape[0], x.shape[1], -1).amax(2).amax(0).float().cpu()


def _on_maps(core: ModelCore, names: Iterable[str], act: Callable[[str, torch.Tensor], torch.Tensor | None]
             ) -> AbstractContextManager[None]:
    """A :func:`~cnnvis_core.hooks.tapped` block calling ``act(name, output)`` on the last call of
    each named layer per forward pass (a shared ReLU runs several times; its last output is what
    the engine shows), for outputs with a channel dimension; what ``act`` returns replaces the output
    (``act`` reads the output through the layer's layout, see the module docstring)."""
    def tap_action(name: str) -> Action:
        def action(_module: nn.Module, _inputs: tuple, output: object) -> torch.Tensor | None:
            if not isinstance(output, torch.Tensor) or output.dim() < 2:
                return None
            return act(name, output)
        return action

    return tapped([core.tap(name, tap_action(name)) for name in names])


@contextmanager
def recorded_peaks(core: ModelCore, names: Iterable[str], peaks: dict[str, torch.Tensor]
                   ) -> Iterator[dict[str, torch.Tensor]]:
    """While the block runs, fold every forward's per-channel peak of the named layers into
    ``peaks`` (running maximum); the hooks are removed when the block ends."""
    names = list(names)
    infos = {name: core.layer(name) for name in names}

    def act(name: str, output: torch.Tensor) -> None:
        peak = _channel_peak(channels_first(infos[name], output))
        peaks[name] = peak if name not in peaks else torch.maximum(peaks[name], peak)

    with _on_maps(core, names, act):
        yield peaks


@contextmanager
def zeroed_channels(core: ModelCore, channels: Mapping[str, Sequence[int]]) -> Iterator[None]:
    """While the block runs, the named layers' outputs have ``channels[name]`` (dim 1) set to
    zero, as if those filters had been removed; the hooks are removed when the block ends."""
    indices = {name: torch.as_tensor(list(c), dtype=torch.long) for name, c in channels.items() if len(c)}

    infos = {name: core.layer(name) for name in indices}

    def act(name: str, output: torch.Tensor) -> torch.Tensor:
        return fill_channels(infos[name], output, indices[name].to(output.device), 0.0)

    with _on_maps(core, indices, act):
        yield


# ---------------------------------------------------------------------------- results
@dataclass(frozen=True)
class ChannelPeaks:
    """Per layer, the peak ``max |activation|`` of every channel over a set of images.

    Dead channels for any ``eps`` follow without running the model again: :meth:`dead`.
    """

    names: tuple[str, ...]
    kinds: tuple[str, ...]
    peaks: tuple[np.ndarray, ...]
    images: int

    def dead(self, eps: float = 0.0) -> DeadChannels:
        """The channels with peak ``≤ eps``, per layer."""
        if not eps >= 0:
            raise InputError(f"Epsilon must be zero or positive, got {eps}.")
        layers = tuple(DeadLayer(name, kind, int(p.size), tuple(int(c) for c in np.flatnonzero(p <= eps)))
                       for name, kind, p in zip(self.names, self.kinds, self.peaks))
        return DeadChannels(layers, float(eps), self.images)


@dataclass(frozen=True)
class DeadLayer:
    """One layer's dead channels: their indices (ascending) among ``channels``."""

    name: str
    kind: str
    channels: int
    dead: tuple[int, ...]

    @property
    def fraction(self) -> float:
        """Fraction of the layer's channels that are dead."""
        return len(self.dead) / self.channels if self.channels else 0.0


@dataclass(frozen=True)
class DeadChannels:
    """Dead channels of each examined layer over ``images`` images, with threshold ``eps``."""

    layers: tuple[DeadLayer, ...]
    eps: float
    images: int

    def __getitem__(self, name: str) -> DeadLayer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    @property
    def total(self) -> int:
        """Dead channels over all layers."""
        return sum(len(layer.dead) for layer in self.layers)

    def as_dict(self) -> dict[str, tuple[int, ...]]:
        """``{layer: dead channel indices}`` for the layers that have any (what
        :func:`verify_pruning` takes)."""
        return {layer.name: layer.dead for layer in self.layers if layer.dead}

    def to_csv(self) -> str:
        """One ``layer,kind,channel`` row per dead channel."""
        rows = ["layer,kind,channel"]
        rows += [f"{layer.name},{layer.kind},{c}" for layer in self.layers for c in layer.dead]
        return "\n".join(rows) + "\n"

    def to_json(self) -> str:
        """Every examined layer with its channel count, dead channels and fraction dead."""
        return json.dumps({
            "eps": self.eps, "images": self.images,
            "layers": [{"name": layer.name, "kind": layer.kind, "channels": layer.channels,
                        "dead": list(layer.dead), "fraction_dead": layer.fraction} for layer in self.layers],
        }, indent=1)


@dataclass(frozen=True)
class PruningCheck:
    """What masking the dead channels did to the logits over ``images`` images.

    ``max_logit_change = max_n max_k |z_k − z'_k|``; ``top1_changed`` is True when any image's
    arg-max class changed (``changed_images`` of them); ``max_abs_logit = max |z|`` gives the
    scale; ``masked_channels`` channels in ``masked_layers`` layers were set to zero.
    """

    max_logit_change: float
    top1_changed: bool
    changed_images: int
    images: int
    max_abs_logit: float
    masked_channels: int
    masked_layers: int


# ---------------------------------------------------------------------------- computations
def channel_peaks(core: ModelCore, images: Iterable, layers: str | Iterable[str] | None = None,
                  batch_size: int = 16) -> ChannelPeaks:
    """Stream ``images`` through the model and keep each channel's peak ``max |a|``.

    ``layers=None``: :func:`default_layers`. One counted forward per batch; the engine's
    session and the hooks are taken per batch.
    """
    if layers is None:
        names = default_layers(core)
    else:
        names = list(dict.fromkeys([layers] if isinstance(layers, str) else layers))
    if not names:
        raise InputError("This model has no conv or ReLU layer with C×h×w maps; name the layers to examine.")
    for name in names:
        core.layer(name)  # an unknown name fails before any image is read
    peaks: dict[str, torch.Tensor] = {}
    count = 0
    for x in preprocessed_batches(core, images, batch_size):
        with core.session(background=True), recorded_peaks(core, names, peaks), torch.no_grad():
            core.forward(x)
        count += x.shape[0]
    if count == 0:
        raise InputError("No images were given: pass at least one image.")
    missing = [n for n in names if n not in peaks]
    if missing:
        raise InputError(f"These layers produced no tensor with channels: {', '.join(missing)}.")
    return ChannelPeaks(tuple(names), tuple(core.layer(n).kind for n in names),
                        tuple(peaks[n].numpy() for n in names), count)


def dead_channels(core: ModelCore, images: Iterable, layers: str | Iterable[str] | None = None,
                  eps: float = 0.0, batch_size: int = 16) -> DeadChannels:
    """Per layer, the channels whose ``|activation| ≤ eps`` at every position of every image."""
    if not eps >= 0:
        raise InputError(f"Epsilon must be zero or positive, got {eps}.")
    return channel_peaks(core, images, layers, batch_size).dead(eps)


def _mask_spec(core: ModelCore, dead: DeadChannels | Mapping[str, Sequence[int]]) -> dict[str, tuple[int, ...]]:
    if isinstance(dead, DeadChannels):
        spec = dead.as_dict()
    else:
        spec = {str(name): tuple(int(c) for c in chans) for name, chans in dead.items()}
    for name, chans in spec.items():
        n = core.layer(name).channels
        bad = [c for c in chans if not 0 <= c < n]
        if bad:
            raise InputError(f"Layer {name!r} has {n} channels (0–{n - 1}); cannot mask {bad[:5]}.")
    return {name: chans for name, chans in spec.items() if chans}


def verify_pruning(core: ModelCore, images: Iterable, dead: DeadChannels | Mapping[str, Sequence[int]],
                   batch_size: int = 16) -> PruningCheck:
    """Run ``images`` plain and with the ``dead`` channels zeroed; compare the logits.

    ``dead``: a :class:`DeadChannels` or ``{layer: channel indices}``. Two counted forwards
    per batch, in one session with the masking hooks only around the second.
    """
    spec = _mask_spec(core, dead)
    change, top, changed, count = 0.0, 0.0, 0, 0
    for x in preprocessed_batches(core, images, batch_size):
        with core.session(background=True), torch.no_grad():
            plain = core.forward(x).float()
            with zeroed_channels(core, spec):
                masked = core.forward(x).float()
        change = max(change, float((masked - plain).abs().max()))
        top = max(top, float(plain.abs().max()))
        changed += int((masked.argmax(-1) != plain.argmax(-1)).sum())
        count += x.shape[0]
    if count == 0:
        raise InputError("No images were given: pass at least one image.")
    return PruningCheck(change, changed > 0, changed, count, top, sum(map(len, spec.values())), len(spec))
