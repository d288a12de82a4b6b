"""Layouts in the layer catalogue (issue 17): NCHW, NHWC, tokens, vector, other; maps read through them.

Small configurations (2 CPU cores): torchvision's VisionTransformer at 32 px, timm's ViT-Tiny at
64 px, timm's Swin-T at 112 px; random weights (no download).
"""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
import torchvision
from torch import nn
from torchvision.models import VisionTransformer

from cnnvis_core import Engine, LayerError
from cnnvis_core.hooks import hook_count
from cnnvis_core.layers import LayerInfo
from cnnvis_core.layouts import as_maps, describe


def _head_random(model: VisionTransformer) -> VisionTransformer:
    # torchvision zero-initialises the ViT head: every logit would be 0 and every gradient too.
    nn.init.normal_(model.heads.head.weight, std=0.5)
    return model


@pytest.fixture(scope="module")
def tv_vit() -> Engine:
    torch.manual_seed(0)
    model = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64)
    return Engine(_head_random(model), input_size=(32, 32), device="cpu")


@pytest.fixture(scope="module")
def timm_vit() -> Engine:
    torch.manual_seed(0)
    return Engine(timm.create_model("vit_tiny_patch16_224", img_size=64, depth=3), input_size=(64, 64), device="cpu")


@pytest.fixture(scope="module")
def timm_swin() -> Engine:
    torch.manual_seed(0)
    model = timm.create_model("swin_tiny_patch4_window7_224", img_size=112, depths=(1, 1, 1, 1))
    return Engine(model, input_size=(112, 112), device="cpu")


def _check_map(result, size: tuple[int, int]) -> None:
    assert result.map.shape == size
    assert result.map.dtype == np.float32
    assert result.map.min() >= 0.0 and result.map.max() <= 1.0
    assert result.map.max() - result.map.min() > 0.5, "the map is constant"


def test_a_cnn_keeps_its_catalogue_as_before(demo_engine: Engine) -> None:
    for info in demo_engine.layers():
        assert info.layout == ("NCHW" if len(info.output_shape) == 3 else "vector")
        assert info.is_spatial == (len(info.output_shape) == 3)
        if info.is_spatial:
            assert info.map_shape == info.output_shape and info.channels == info.output_shape[0]
            assert info.label == f"{info.name} · {info.kind} · {'×'.join(map(str, info.output_shape))}"
    assert describe(demo_engine.model).family == "cnn"


def test_layer_info_built_by_hand_follows_its_shape() -> None:
    assert LayerInfo("a", "ReLU", (4, 3, 3), 0).layout == "NCHW"
    assert LayerInfo("b", "Linear", (10,), 1).layout == "vector"
    assert LayerInfo("c", "X", (6, 197, 64, 2), 2).layout == "other"
    tokens = LayerInfo("d", "LayerNorm", (17, 32), 3, 1, "tokens", 1, (4, 4))
    assert tokens.map_shape == (32, 4, 4) and tokens.has_map and not tokens.is_spatial and tokens.channels == 32
    assert "tokens → 32×4×4" in tokens.label


def test_torchvision_vit_tokens_grid_and_default_layer(tv_vit: Engine) -> None:
    by_name = {info.name: info for info in tv_vit.layers()}
    block = by_name["encoder.layers.encoder_layer_1"]
    assert (block.layout, block.prefix_tokens, block.grid, block.output_shape) == ("tokens", 1, (4, 4), (17, 32))
    assert by_name["conv_proj"].layout == "NCHW" and by_name["heads.head"].layout == "vector"
    assert tv_vit.default_cam_layer() == "encoder.layers.encoder_layer_1.ln_1"
    maps = tv_vit.feature_maps(torch.randn(1, 3, 32, 32), ["encoder.layers.encoder_layer_1", "conv_proj"])
    assert maps["encoder.layers.encoder_layer_1"].shape == (32, 4, 4)
    _check_map(tv_vit.cam(torch.randn(1, 3, 32, 32), "gradcam"), (32, 32))
    assert hook_count(tv_vit.model) == 0


def test_timm_vit_tokens_attention_internals_are_other(timm_vit: Engine) -> None:
    by_name = {info.name: info for info in timm_vit.layers()}
    assert by_name["blocks.2"].layout == "tokens" and by_name["blocks.2"].prefix_tokens == 1
    assert by_name["blocks.2"].grid == (4, 4)
    assert by_name["patch_embed"].layout == "tokens" and by_name["patch_embed"].prefix_tokens == 0
    k_norm = by_name["blocks.2.attn.k_norm"]  # (heads, tokens, head dim): not a map, whatever its shape
    assert k_norm.layout == "other" and not k_norm.has_map and not k_norm.is_spatial
    assert timm_vit.default_cam_layer() == "blocks.2.norm1"
    with pytest.raises(LayerError, match="not a spatial map"):
        timm_vit.cam(torch.randn(1, 3, 64, 64), "gradcam", layer="blocks.2.attn.k_norm")
    x = torch.randn(1, 3, 64, 64)
    for method in ("gradcam", "gradcam++", "layercam", "xgradcam"):
        result = timm_vit.cam(x, method)
        assert result.raw.shape == (4, 4) and result.map.shape == (64, 64)
    _check_map(timm_vit.cam(x, "gradcam"), (64, 64))


def test_tokens_map_is_the_patch_tokens_on_the_grid(timm_vit: Engine) -> None:
    """The map read through the layout equals the patch tokens reshaped by hand (row-major patches)."""
    x = torch.randn(1, 3, 64, 64)
    raw = {}
    with timm_vit.session(), torch.no_grad():
        handle = timm_vit.module("blocks.1").register_forward_hook(lambda m, i, o: raw.setdefault("o", o.clone()))
        try:
            timm_vit.forward(x)
        finally:
            handle.remove()
    expected = raw["o"][0, 1:].T.reshape(192, 4, 4)
    got = timm_vit.feature_maps(x, "blocks.1")["blocks.1"]
    assert torch.equal(got, expected)
    assert torch.equal(as_maps(raw["o"], "tokens", 1, (4, 4))[0], expected)


def test_swin_stage_is_nhwc_and_read_permuted(timm_swin: Engine) -> None:
    by_name = {info.name: info for info in timm_swin.layers()}
    stage = by_name["layers.3"]
    assert stage.layout == "NHWC" and stage.output_shape == (4, 4, 768) and stage.map_shape == (768, 4, 4)
    assert by_name["norm"].layout == "NHWC"
    assert timm_swin.default_cam_layer() == "layers.3"
    x = torch.randn(1, 3, 112, 112)
    maps = timm_swin.feature_maps(x, ["layers.3"])
    assert maps["layers.3"].shape == (768, 4, 4)
    result = timm_swin.cam(x, "gradcam")
    assert result.raw.shape == (4, 4)
    _check_map(result, (112, 112))
    assert hook_count(timm_swin.model) == 0 and not any(p.requires_grad for p in timm_swin.model.parameters())


def test_torchvision_swin_features_and_permute() -> None:
    torch.manual_seed(0)
    model = torchvision.models.SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[1, 1], num_heads=[1, 2],
                                               window_size=[4, 4], num_classes=10)
    engine = Engine(model, input_size=(32, 32), device="cpu")
    by_name = {info.name: info for info in engine.layers()}
    assert by_name["features.0.1"].layout == "NHWC" and by_name["features.3"].layout == "NHWC"
    assert by_name["permute"].layout == "NCHW"
    assert engine.default_cam_layer() == "features.3"
    _check_map(engine.cam(torch.randn(1, 3, 32, 32), "gradcam"), (32, 32))


def test_vgg_default_layer_is_the_last_relu_of_features() -> None:
    engine = Engine(torchvision.models.vgg11(), input_size=(64, 64), device="cpu")
    assert engine.default_cam_layer() == "features.19"
    assert engine.layer("features.19").kind == "ReLU"


def test_timm_convnext_default_layer_is_its_last_stage_not_the_identity_after_it() -> None:
    """timm's ConvNeXt ends its trunk in ``norm_pre = nn.Identity()``: the same map under a name that
    says nothing (issue 17); the automatic layer is the stage that makes it."""
    timm = pytest.importorskip("timm")
    engine = Engine(timm.create_model("convnext_atto", num_classes=5), input_size=(64, 64), device="cpu")
    assert isinstance(engine.module("norm_pre"), torch.nn.Identity)
    assert engine.default_cam_layer() == "stages.3"
    assert engine.layer("stages.3").layout == "NCHW"


def test_densenet_functional_relu_head_gets_cam() -> None:
    """torchvision's DenseNet: logits = W · GAP(relu(norm5)) + b, the ReLU functional: CAM applies
    to ReLU(A) of norm5 (issue 17)."""
    torch.manual_seed(0)
    engine = Engine(torchvision.models.densenet121(num_classes=5), input_size=(64, 64), device="cpu")
    x = torch.randn(1, 3, 64, 64)
    result = engine.cam(x, "cam", target=3)
    A = engine.feature_maps(x, "features.norm5")["features.norm5"]
    expected = torch.einsum("c,chw->hw", engine.model.classifier.weight[3], torch.relu(A))
    np.testing.assert_allclose(result.raw, expected.numpy(), rtol=1e-4, atol=1e-5)


def test_guided_on_swin_v2_says_no_relu_depends_on_the_image() -> None:
    """Swin V2's only ReLUs are in the position-bias MLP, whose input never depends on the image."""
    from torchvision.models.swin_transformer import PatchMergingV2, SwinTransformerBlockV2

    from cnnvis_core import ModelError
    torch.manual_seed(0)
    model = torchvision.models.SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[1, 1], num_heads=[1, 2],
                                               window_size=[4, 4], num_classes=10, block=SwinTransformerBlockV2,
                                               downsample_layer=PatchMergingV2)
    engine = Engine(model, input_size=(32, 32), device="cpu")
    for method in ("guided", "deconvnet"):
        with pytest.raises(ModelError, match="depends on the image"):
            engine.saliency(torch.randn(1, 3, 32, 32), method)
    assert engine.saliency(torch.randn(1, 3, 32, 32), "gradient").map.shape == (32, 32)
    assert hook_count(engine.model) == 0
