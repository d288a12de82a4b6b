"""Attention probabilities of ``torch.nn.MultiheadAttention``, recomputed inside a tap.

torchvision's ``VisionTransformer`` calls its blocks' ``nn.MultiheadAttention`` with
``need_weights=False``: the probabilities never exist as a tensor (and when asked for, the
module returns a *view* of them that the output does not depend on, so no gradient reaches it).
A tap on the module (:mod:`cnnvis_core.hooks`: installed for one pass, removed after it, even on
error) recomputes the self-attention from the block's input ``x`` and the module's own weights
(Vaswani et al., 2017, "Attention Is All You Need")::

    [Q K V] = x W_inᵀ + b_in,    A_h = softmax(Q_h K_hᵀ / √d),    y = concat_h(A_h V_h) W_outᵀ + b_out

and returns ``y`` in place of the module's output, so that the rest of the network runs on the
recomputed ``A`` and ``∂y^c/∂A`` exists for Chefer et al.'s rule. ``y`` is checked against the
module's own output: a difference (an attention mask, ``bias_k``/``add_zero_attn``, separate
key/value inputs) is refused with a :class:`~cnnvis_core.errors.ModelError` rather than read wrongly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelError

#: relative tolerance of the check of the recomputed output against the module's own
TOLERANCE = 1e-3


def _projections(module: nn.MultiheadAttention, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``Q, K, V`` ``(B, N, E)`` of a batch-first ``x`` ``(B, N, E)``."""
    bias = module.in_proj_bias
    if module._qkv_same_embed_dim:
        return F.linear(x, module.in_proj_weight, bias).chunk(3, dim=-1)
    biases = bias.chunk(3) if bias is not None else (None, None, None)
    weights = (module.q_proj_weight, module.k_proj_weight, module.v_proj_weight)
    return tuple(F.linear(x, w, b) for w, b in zip(weights, biases))  # type: ignore[return-value]


def recompute(module: nn.MultiheadAttention, inputs: tuple, output: object) -> tuple[torch.Tensor, torch.Tensor]:
    """``(A, y)``: the probabilities ``(B, heads, N, N)`` and the output ``y`` (the module's layout)
    of a self-attention call with positional ``inputs`` ``(query, key, value, …)``."""
    query = inputs[0] if inputs else None
    if (not isinstance(query, torch.Tensor) or len(inputs) < 3 or any(t is not query for t in inputs[1:3])
            or any(extra is not None for extra in inputs[3:]) or module.bias_k is not None or module.add_zero_attn):
        raise ModelError("The attention is read from self-attention modules called as attention(x, x, x) without "
                         "masks or extra key/value biases; this model's attention is called otherwise.")
    x = query if module.batch_first else query.transpose(0, 1)
    batch, tokens, embed = x.shape
    heads = module.num_heads
    q, k, v = (t.reshape(batch, tokens, heads, embed // heads).transpose(1, 2) for t in _projections(module, x))
    attention = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(embed // heads), dim=-1)
    y = module.out_proj((attention @ v).transpose(1, 2).reshape(batch, tokens, embed))
    y = y if module.batch_first else y.transpose(0, 1)
    own = output[0] if isinstance(output, tuple) else output
    if isinstance(own, torch.Tensor) and own.shape == y.shape:
        scale = float(own.detach().abs().max()) or 1.0
        if float((own.detach() - y.detach()).abs().max()) > TOLERANCE * scale:
            raise ModelError("Recomputing this attention module's probabilities did not give its own output (a mask "
                             "or another variant of attention); the attention cannot be read.")
    return attention, y
