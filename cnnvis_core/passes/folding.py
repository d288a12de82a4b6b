"""A faster copy of the model for the many inference-only passes of Score-CAM and kin.

Score-CAM, SS-CAM, IS-CAM and the deletion/insertion curves run the model hundreds or
thousands of times with no gradient. For those passes only, :func:`inference_copy` gives a
copy of the model in which every BatchNorm that directly follows a convolution (and is the
only user of its output) is folded into it, with the weights stored channels-last. In eval
mode BatchNorm is the affine map ``y = γ (z − μ) / √(σ² + ε) + β``; after a convolution
``z = W * x + b`` it is the same convolution with

    ``W' = W · s``,   ``b' = (b − μ) · s + β``,   ``s = γ / √(σ² + ε)`` (one per output channel)

so the copy computes the same function (to float rounding) while skipping one full read and
write of every folded activation. The graph is found with ``torch.fx``; a model it cannot
trace, one with nothing to fold, or a copy whose logits differ from the model's on a probe
input is not used (the model itself runs instead). The original model is never modified;
the copy is kept per model (weakly, so it goes with the model).
"""

from __future__ import annotations

import copy

import torch
from torch import fx, nn

from ..core import ModelCore


def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new convolution equal to ``bn(conv(x))`` with ``bn`` in eval mode (see module doc)."""
    scale = bn.weight.detach() if bn.affine else torch.ones_like(bn.running_var)
    shift = bn.bias.detach() if bn.affine else torch.zeros_like(bn.running_mean)
    s = scale / torch.sqrt(bn.running_var + bn.eps)
    fused = copy.deepcopy(conv)
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(bn.running_mean)
    with torch.no_grad():
        fused.weight = nn.Parameter(conv.weight.detach() * s.view(-1, 1, 1, 1), requires_grad=False)
        fused.bias = nn.Parameter((bias - bn.running_mean) * s + shift, requires_grad=False)
    return fused


def _foldable(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op != "call_module" or type(modules.get(node.target)) is not nn.BatchNorm2d or len(node.args) != 1:
        return False
    source = node.args[0]
    bn = modules[node.target]
    return (isinstance(source, fx.Node) and source.op == "call_module"
            and type(modules.get(source.target)) is nn.Conv2d and len(source.users) == 1
            and bn.track_running_stats and bn.running_mean is not None and not node.kwargs)


def _fold_all(model: nn.Module) -> fx.GraphModule | None:
    """The traced copy with every conv→BN pair folded; None when nothing folds."""
    traced = fx.symbolic_trace(copy.deepcopy(model).eval())
    modules = dict(traced.named_modules())
    folded = 0
    for node in list(traced.graph.nodes):
        if _foldable(node, modules):
            conv_node = node.args[0]
            fused = fold_batchnorm(modules[conv_node.target], modules[node.target])
            parent, _, leaf = conv_node.target.rpartition(".")
            setattr(traced.get_submodule(parent) if parent else traced, leaf, fused)
            modules[conv_node.target] = fused
            node.replace_all_uses_with(conv_node)
            traced.graph.erase_node(node)
            folded += 1
    if not folded:
        return None
    traced.graph.lint()
    traced.recompile()
    traced.delete_all_unused_submodules()
    return traced.eval().to(memory_format=torch.channels_last)


def inference_copy(core: ModelCore, probe: torch.Tensor) -> nn.Module:
    """The folded copy of the core's model (eval mode), or the model itself when there is none.

    Call it inside ``core.session()``. The first call for a model and device builds the copy
    and checks it on ``probe`` (a ``(1, 3, H, W)`` input): its logits must match the model's to
    1e-4 of their scale (two counted forward passes).
    """
    folded = core.cache.get(("folded copy", str(probe.device)), lambda: _checked_copy(core, probe))
    return folded or core.model


def _checked_copy(core: ModelCore, probe: torch.Tensor) -> nn.Module | None:
    model = core.model
    try:
        fused = _fold_all(model)
    except Exception:  # noqa: BLE001 - any model fx cannot trace (dynamic control flow…) keeps running as it is
        return None
    if fused is None:
        return None
    with torch.inference_mode():
        expected, got = model(probe), fused(probe.contiguous(memory_format=torch.channels_last))
    core.counters.add(forward=2)
    if (isinstance(expected, torch.Tensor) and isinstance(got, torch.Tensor) and got.shape == expected.shape
            and torch.allclose(got, expected, rtol=1e-4, atol=1e-4 * (float(expected.abs().max()) + 1e-6))):
        return fused
    return None
