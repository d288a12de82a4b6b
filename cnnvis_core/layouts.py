"""How a layer's output is laid out, decided from the model's structure, and the one function
that turns it into feature maps.

Layouts (``LayerInfo.layout``):

- ``NCHW``: ``(B, C, H, W)``, channels first (convolutions, batch norms, poolings…);
- ``NHWC``: ``(B, H, W, C)``, channels last (a Swin stage: its ``LayerNorm`` and ``Linear``
  layers act on the last dimension of a 4-D tensor);
- ``tokens``: ``(B, P + h·w, D)``, a vision transformer's token sequence: ``P`` prefix tokens
  (class, distillation, register tokens) then one token per patch of the ``h×w`` grid;
- ``vector``: ``(B, F)``;
- ``other``: anything else, and whatever the structure does not settle (a window partition, the
  heads of an attention, a 4-D tensor inside a transformer made by a functional reshape). The
  shape alone never decides between two readings.

What is read from the structure (:func:`describe`): the family (``vit``: timm's
``VisionTransformer`` and kin, with ``num_prefix_tokens`` and ``patch_embed.grid_size``, or
torchvision's, with its class token and ``image_size // patch_size``; ``swin``: timm's
``SwinTransformer*`` or torchvision's ``SwinTransformer``; ``maxvit``; ``attention``: another
model with attention modules; ``cnn``: the rest), and, per module call during the layer probe
(:class:`LayoutTracker`), the module's type, the layout of the tensor it was given (tensors
are followed by identity from one module to the next), and, for a container, the layout of
the last of its children to finish.

:func:`as_maps` turns ``(B, …)`` into ``(B, C, h, w)`` by the layout (permute NHWC, drop the
prefix tokens and fold the rest onto the grid); the CAM pass and the feature capture read
spatial maps through it.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from torch import nn

NCHW = "NCHW"
NHWC = "NHWC"
TOKENS = "tokens"
VECTOR = "vector"
OTHER = "other"
LAYOUTS = (NCHW, NHWC, TOKENS, VECTOR, OTHER)
#: the layouts that hold a ``C × h × w`` map
MAP_LAYOUTS = (NCHW, NHWC, TOKENS)

_CHANNELS_FIRST = (nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
                   nn.AdaptiveMaxPool2d, nn.GroupNorm, nn.InstanceNorm2d, nn.Upsample, nn.PixelShuffle,
                   nn.LocalResponseNorm, nn.ZeroPad2d, nn.ReflectionPad2d, nn.ReplicationPad2d, nn.ConstantPad2d)
_LAST_DIM = (nn.Linear, nn.LayerNorm) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())


@dataclass(frozen=True)
class Layout:
    """One output's layout: ``kind`` (one of :data:`LAYOUTS`), and for tokens the number of
    prefix tokens and the ``(h, w)`` grid."""

    kind: str
    prefix_tokens: int = 0
    grid: tuple[int, int] | None = None


@dataclass(frozen=True)
class Structure:
    """What the model's structure says: its ``family`` (``vit``, ``swin``, ``maxvit``,
    ``attention``, ``cnn``), for a ViT the prefix tokens and the patch grid, and the layer a CAM
    takes by default when the family names one (``auto_layer``; None: the last spatial layer)."""

    family: str
    prefix_tokens: int = 0
    grid: tuple[int, int] | None = None
    auto_layer: str | None = None

    @property
    def transformer(self) -> bool:
        """Whether a 4-D tensor of unknown origin may be something other than NCHW."""
        return self.family != "cnn"


def _last_key(container: nn.Module) -> str | None:
    keys = list(container._modules)
    return keys[-1] if keys else None


def describe(model: nn.Module) -> Structure:
    """The :class:`Structure` of ``model`` (see the module docstring)."""
    kind = type(model).__name__
    patch_embed = getattr(model, "patch_embed", None)
    grid = getattr(patch_embed, "grid_size", None)
    if isinstance(getattr(model, "num_prefix_tokens", None), int) and grid is not None and len(grid) == 2:
        auto = None
        blocks = getattr(model, "blocks", None)
        if isinstance(blocks, nn.Module) and (last := _last_key(blocks)) is not None:
            auto = f"blocks.{last}.norm1" if hasattr(blocks._modules[last], "norm1") else f"blocks.{last}"
        return Structure("vit", int(model.num_prefix_tokens), (int(grid[0]), int(grid[1])), auto)
    if hasattr(model, "class_token") and hasattr(model, "patch_size") and hasattr(model, "image_size"):
        side = int(model.image_size) // int(model.patch_size)
        layers = getattr(getattr(model, "encoder", None), "layers", None)
        auto = None
        if isinstance(layers, nn.Module) and (last := _last_key(layers)) is not None:
            auto = (f"encoder.layers.{last}.ln_1" if hasattr(layers._modules[last], "ln_1")
                    else f"encoder.layers.{last}")
        return Structure("vit", 1, (side, side), auto)
    if kind.startswith("SwinTransformer"):
        for stages in ("layers", "features"):
            container = getattr(model, stages, None)
            if isinstance(container, nn.Module) and (last := _last_key(container)) is not None:
                return Structure("swin", auto_layer=f"{stages}.{last}")
        return Structure("swin")
    if kind in ("MaxVit", "MaxxVit"):
        for stages in ("blocks", "stages"):
            container = getattr(model, stages, None)
            if isinstance(container, nn.Module) and (last := _last_key(container)) is not None:
                name, stage = f"{stages}.{last}", container._modules[last]
                for inner in ("layers", "blocks"):  # the stage's last block
                    blocks = getattr(stage, inner, None)
                    if isinstance(blocks, nn.Module) and (end := _last_key(blocks)) is not None:
                        return Structure("maxvit", auto_layer=f"{name}.{inner}.{end}")
                return Structure("maxvit", auto_layer=name)
        return Structure("maxvit")
    if any(isinstance(m, nn.MultiheadAttention) or "Attention" in type(m).__name__ for m in model.modules()):
        return Structure("attention")
    return Structure("cnn")


class LayoutTracker:
    """Decides the layout of each module's output during the layer probe.

    Call :meth:`note` from a forward hook on every module (children finish before their parent);
    it keeps a weak reference to each output it has seen, to follow a tensor from the module that
    made it to the next one (a freed tensor's reused ``id`` never matches: its reference is dead),
    without keeping the activations alive.
    """

    def __init__(self, model: nn.Module) -> None:
        self.structure = describe(model)
        self._seen: dict[int, tuple[weakref.ref, Layout]] = {}
        self._descendants: dict[int, set[int]] = {}
        self._last: tuple[nn.Module, torch.Size, Layout] | None = None

    def _inside(self, container: nn.Module, module: nn.Module) -> bool:
        ids = self._descendants.get(id(container))
        if ids is None:
            ids = {id(m) for m in container.modules() if m is not container}
            self._descendants[id(container)] = ids
        return id(module) in ids

    def note(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> Layout:
        """The layout of ``output``, produced by ``module`` from ``inputs``."""
        source = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
        known = self._seen.get(id(source)) if source is not None else None
        given = known[1] if known is not None and known[0]() is source else None
        layout = self._decide(module, source, given, output)
        self._seen[id(output)] = (weakref.ref(output), layout)
        self._last = (module, output.shape, layout)
        return layout

    def _decide(self, module: nn.Module, source: torch.Tensor | None, given: Layout | None,
                output: torch.Tensor) -> Layout:
        if output.dim() == 2:
            return Layout(VECTOR)
        if output.dim() == 3:
            return self._tokens(output)
        if output.dim() != 4:
            return Layout(OTHER)
        kind = type(module).__name__
        swin = self.structure.family == "swin"
        if kind == "Permute" and list(getattr(module, "dims", ())) in ([0, 2, 3, 1], [0, 3, 1, 2]):
            if given is None or given.kind in (NCHW, NHWC):
                return Layout(NHWC if list(module.dims) == [0, 2, 3, 1] else NCHW)
            return Layout(OTHER)
        leaf = not module._modules
        if leaf and "Departition" in kind:
            return Layout(NCHW)
        if leaf and ("Partition" in kind or "SwapAxes" in kind):
            return Layout(OTHER)
        if isinstance(module, _CHANNELS_FIRST) or kind.endswith(("2d", "2D")):
            return Layout(NCHW)
        if isinstance(module, _LAST_DIM):
            if swin:
                return Layout(NHWC)
            if isinstance(module, nn.Linear):
                return given if given is not None and given.kind == NHWC else Layout(OTHER)
        if self._last is not None and module._modules and self._inside(module, self._last[0]) \
                and self._last[1] == output.shape:
            return self._last[2]
        if given is not None and source is not None and source.shape == output.shape:
            return given
        return Layout(OTHER) if self.structure.transformer else Layout(NCHW)

    def _tokens(self, output: torch.Tensor) -> Layout:
        s = self.structure
        if s.family != "vit" or s.grid is None:
            return Layout(OTHER)
        n, cells = int(output.shape[1]), s.grid[0] * s.grid[1]
        if n == cells + s.prefix_tokens:
            return Layout(TOKENS, s.prefix_tokens, s.grid)
        if n == cells:
            return Layout(TOKENS, 0, s.grid)
        return Layout(OTHER)


def map_shape(layout: str, output_shape: tuple[int, ...], prefix_tokens: int = 0,
              grid: tuple[int, int] | None = None) -> tuple[int, int, int] | None:
    """``(C, h, w)`` of an output of shape ``output_shape`` (no batch dimension) read by its
    layout; None when it holds no map."""
    if layout == NCHW and len(output_shape) == 3:
        return tuple(output_shape)  # type: ignore[return-value]
    if layout == NHWC and len(output_shape) == 3:
        h, w, c = output_shape
        return (c, h, w)
    if layout == TOKENS and len(output_shape) == 2 and grid is not None:
        return (output_shape[1], grid[0], grid[1])
    return None


def as_maps(output: torch.Tensor, layout: str, prefix_tokens: int = 0,
            grid: tuple[int, int] | None = None) -> torch.Tensor:
    """A layer's raw output ``(B, …)`` as maps ``(B, C, h, w)`` according to its layout
    (differentiable: the CAM reads gradients through it too). ``ValueError`` for a layout
    without maps."""
    if layout == NCHW and output.dim() == 4:
        return output
    if layout == NHWC and output.dim() == 4:
        return output.permute(0, 3, 1, 2)
    if layout == TOKENS and output.dim() == 3 and grid is not None:
        patches = output[:, prefix_tokens:]
        if patches.shape[1] != grid[0] * grid[1]:
            raise ValueError(f"{patches.shape[1]} patch tokens do not fill a {grid[0]}×{grid[1]} grid.")
        return patches.transpose(1, 2).reshape(output.shape[0], output.shape[2], grid[0], grid[1])
    raise ValueError(f"A {layout} output of shape {tuple(output.shape)} holds no C×h×w map.")


def layer_maps(info: object, output: torch.Tensor) -> torch.Tensor:
    """:func:`as_maps` with the layout of a :class:`~cnnvis_core.layers.LayerInfo`."""
    return as_maps(output, info.layout, info.prefix_tokens, info.grid)


def channels_first(info: object, output: torch.Tensor) -> torch.Tensor:
    """A layer's output with its channels on dim 1: the ``(B, C, h, w)`` maps of a map layout
    (:func:`layer_maps`: a ViT block's ``D`` channels over its ``h×w`` patch grid, prefix tokens
    excluded; a Swin stage permuted), any other output as it is (a vector ``(B, F)``)."""
    if info.layout in MAP_LAYOUTS and info.map_shape is not None and output.dim() in (3, 4):
        return layer_maps(info, output)
    return output


def fill_channels(info: object, output: torch.Tensor, channels: torch.Tensor, value: float = 0.0) -> torch.Tensor:
    """``output`` with ``channels`` (a long tensor) set to ``value`` where :func:`channels_first`
    reads them: dim 1 of NCHW and of non-map outputs, the last dim of NHWC, the last dim of the
    patch tokens of a token layout (the prefix tokens keep their values: they are not in the map)."""
    if info.layout == NHWC and output.dim() == 4:
        return output.index_fill(3, channels, value)
    if info.layout == TOKENS and output.dim() == 3:
        prefix = int(info.prefix_tokens)
        return torch.cat([output[:, :prefix], output[:, prefix:].index_fill(2, channels, value)], 1)
    return output.index_fill(1, channels, value)
