"""Attention rollout and Chefer et al.'s gradient-weighted attention (issue 17), against their
papers' definitions computed independently on a tiny hand-built transformer."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from torch import nn

from cnnvis_core import Engine, ModelError
from cnnvis_core.hooks import hook_count


class Attention(nn.Module):
    """timm's attention layout: ``attn_drop`` applied to the softmax, ``fused_attn`` switchable."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads, self.fused_attn = heads, True
        self.qkv, self.proj, self.attn_drop = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim), nn.Dropout(0.0)

    def probabilities(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        return ((q @ k.transpose(-2, -1)) * (d // self.heads) ** -0.5).softmax(-1), v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        attn, v = self.probabilities(x)
        if self.fused_attn:
            attn = attn.detach() * 0 + attn  # the same numbers, without passing attn_drop
        else:
            attn = self.attn_drop(attn)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, heads)
        self.norm2, self.mlp = nn.LayerNorm(dim), nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(),
                                                                nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj, self.grid_size = nn.Conv2d(3, dim, 4, 4), (3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class TinyViT(nn.Module):
    """12×12 input, 4×4 patches (a 3×3 grid), one class token, two blocks."""

    num_prefix_tokens = 1

    def __init__(self, dim: int = 8, heads: int = 2, classes: int = 4) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(dim)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.blocks = nn.Sequential(Block(dim, heads), Block(dim, heads))
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), self.patch_embed(x)], 1)
        return self.head(self.norm(self.blocks(tokens))[:, 0])

    def by_hand(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The logits and every block's attention probabilities (1, heads, N, N), no hooks."""
        tokens = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), self.patch_embed(x)], 1)
        attentions = []
        for block in self.blocks:
            h = block.norm1(tokens)
            attn, v = block.attn.probabilities(h)
            attentions.append(attn)
            b, n, d = h.shape
            tokens = tokens + block.attn.proj((attn @ v).transpose(1, 2).reshape(b, n, d))
            tokens = tokens + block.mlp(block.norm2(tokens))
        return self.head(self.norm(tokens)[:, 0]), attentions


@pytest.fixture(scope="module")
def tiny() -> tuple[TinyViT, Engine]:
    torch.manual_seed(0)
    model = TinyViT()
    return model, Engine(model, input_size=(12, 12), device="cpu")


def test_rollout_is_abnar_and_zuidema(tiny) -> None:
    model, engine = tiny
    x = torch.randn(1, 3, 12, 12)
    with torch.no_grad():
        _logits, attentions = model.by_hand(x)
    n = attentions[0].shape[-1]
    joint = torch.eye(n)
    for A in attentions:  # Â = 0.5 · mean over heads + 0.5 · I (rows still sum to 1), R = Â_L ⋯ Â_1
        a_hat = 0.5 * A[0].mean(0) + 0.5 * torch.eye(n)
        assert torch.allclose(a_hat.sum(-1), torch.ones(n), atol=1e-6)
        joint = a_hat @ joint
    expected = joint[0, 1:].reshape(3, 3).numpy()
    result = engine.cam(x, "rollout")
    assert result.raw.shape == (3, 3) and result.map.shape == (12, 12)
    np.testing.assert_allclose(result.raw, expected, rtol=1e-5, atol=1e-6)
    assert result.map.min() >= 0.0 and result.map.max() == pytest.approx(1.0)
    assert all(m.fused_attn for m in (b.attn for b in model.blocks))  # restored
    assert hook_count(model) == 0


def test_gradient_weighted_attention_is_chefer_et_al(tiny) -> None:
    model, engine = tiny
    x = torch.randn(1, 3, 12, 12)
    logits, attentions = model.by_hand(x.clone().requires_grad_(True))  # the parameters are frozen
    target = 2
    grads = torch.autograd.grad(logits[0, target], attentions)
    n = attentions[0].shape[-1]
    R = torch.eye(n)
    for A, G in zip(attentions, grads):  # Ā = E_h[(∇A ⊙ A)⁺], R ← R + Ā R
        R = R + (G[0] * A[0]).clamp(min=0).mean(0) @ R
    expected = R[0, 1:].reshape(3, 3).detach().numpy()
    result = engine.cam(x, "chefer", target=target)
    assert result.target == target
    np.testing.assert_allclose(result.raw, expected, rtol=1e-4, atol=1e-6)
    assert result.map.min() == 0.0 and result.map.max() == pytest.approx(1.0)
    assert hook_count(model) == 0 and not any(p.requires_grad for p in model.parameters())


def test_timm_vit_gets_both_and_a_cnn_is_refused(demo_engine: Engine) -> None:
    torch.manual_seed(0)
    engine = Engine(timm.create_model("vit_tiny_patch16_224", img_size=32, depth=2), input_size=(32, 32),
                    device="cpu")
    x = torch.randn(1, 3, 32, 32)
    for method in ("rollout", "chefer"):
        result = engine.cam(x, method)
        assert result.raw.shape == (2, 2) and result.map.shape == (32, 32)
    with pytest.raises(ModelError, match="vision transformer"):
        demo_engine.cam(demo_engine.preprocess(torch.zeros(1, 3, 128, 128)), "rollout")


# ---------------------------------------------------------------------------- torchvision's ViT
@pytest.fixture(scope="module")
def tv_vit():
    from torchvision.models import VisionTransformer
    torch.manual_seed(0)
    model = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32)
    nn.init.normal_(model.heads.head.weight, std=0.5)  # torchvision zero-initialises it
    return model, Engine(model, input_size=(32, 32), device="cpu")


def _tv_by_hand(model, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """torchvision's ViT forward written out, with each block's attention ``(heads, N, N)`` as a
    tensor the output depends on (``nn.MultiheadAttention`` gives no such tensor)."""
    tokens = model._process_input(x)
    tokens = torch.cat([model.class_token.expand(x.shape[0], -1, -1), tokens], dim=1)
    tokens = tokens + model.encoder.pos_embedding
    attentions = []
    for block in model.encoder.layers:
        attention = block.self_attention
        h = block.ln_1(tokens)
        b, n, d = h.shape
        heads = attention.num_heads
        q, k, v = (t.reshape(b, n, heads, d // heads).transpose(1, 2)
                   for t in (h @ attention.in_proj_weight.T + attention.in_proj_bias).split(d, dim=-1))
        A = torch.softmax(q @ k.transpose(-1, -2) * (d // heads) ** -0.5, dim=-1)
        attentions.append(A)
        tokens = tokens + attention.out_proj((A @ v).transpose(1, 2).reshape(b, n, d))
        tokens = tokens + block.mlp(block.ln_2(tokens))
    logits = model.heads(model.encoder.ln(tokens)[:, 0])
    with torch.no_grad():
        assert torch.allclose(logits, model(x), atol=1e-5), "the hand-written forward is torchvision's"
    return logits, attentions


def test_torchvision_vit_rollout_and_chefer_against_a_hand_computation(tv_vit) -> None:
    model, engine = tv_vit
    x = torch.randn(1, 3, 32, 32)
    logits, attentions = _tv_by_hand(model, x.clone().requires_grad_(True))
    n = attentions[0].shape[-1]
    joint = torch.eye(n)
    for A in attentions:
        joint = (0.5 * A[0].mean(0) + 0.5 * torch.eye(n)) @ joint
    rollout = engine.cam(x, "rollout")
    np.testing.assert_allclose(rollout.raw, joint[0, 1:].reshape(4, 4).detach().numpy(), rtol=1e-4, atol=1e-6)
    target = int(logits[0].argmin())  # not the top class: the target is honoured
    grads = torch.autograd.grad(logits[0, target], attentions)
    R = torch.eye(n)
    for A, G in zip(attentions, grads):
        R = R + (G[0] * A[0]).clamp(min=0).mean(0) @ R
    chefer = engine.cam(x, "chefer", target=target)
    assert chefer.target == target and float(np.ptp(chefer.map)) > 0.5
    np.testing.assert_allclose(chefer.raw, R[0, 1:].reshape(4, 4).detach().numpy(), rtol=1e-4, atol=1e-6)
    assert hook_count(model) == 0 and not any(p.requires_grad for p in model.parameters())
    assert engine.predict(x, k=1)[0].index == int(logits[0].argmax())  # the model runs as before


def test_a_masked_multihead_attention_is_refused_not_misread(tv_vit) -> None:
    model, engine = tv_vit
    block = model.encoder.layers[0]
    original = block.forward

    def masked(x: torch.Tensor) -> torch.Tensor:  # a causal mask the recomputation cannot see
        h = block.ln_1(x)
        mask = torch.triu(torch.ones(h.shape[1], h.shape[1], dtype=torch.bool), 1)
        h, _ = block.self_attention(h, h, h, attn_mask=mask, need_weights=False)
        x = x + h
        return x + block.mlp(block.ln_2(x))

    block.forward = masked
    try:
        with pytest.raises(ModelError, match="did not give its own output"):
            engine.cam(torch.randn(1, 3, 32, 32), "rollout")
    finally:
        block.forward = original
    assert hook_count(model) == 0
