"""Filter optimisation on fixed-size models (issue 17): vision transformers optimised at their
native size with the transforms cropped (or resized) back to it, channel objectives read through
the layer's layout, and every failure at an odd size a CnnvisError.

Tiny configurations (2 CPU cores): torchvision's VisionTransformer at 32 px (4×4 patches of 8 px),
torchvision's Swin at 32 px, timm's Swin at 56 px and ViT-Tiny at 64 px; random weights.
"""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
import torchvision
from torch import nn
from torchvision.models import VisionTransformer

from cnnvis_core import Engine, InputError, ModelError
from cnnvis_core.hooks import hook_count
from cnnvis_core.optimize.fit import Fit, native_size

#: no random transform: the score of a step is the score of its image, so 5 steps must raise it
PLAIN = {"pad": 0, "jitter": 0, "jitter_after": 0, "degrees": 0.0, "scale": (1.0, 1.0)}


def _tv_vit() -> Engine:
    torch.manual_seed(0)
    model = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64)
    nn.init.normal_(model.heads.head.weight, std=0.5)  # torchvision zero-initialises it
    return Engine(model, input_size=(32, 32), device="cpu")


def _tv_swin() -> Engine:
    torch.manual_seed(0)
    model = torchvision.models.SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[1, 1], num_heads=[1, 2],
                                               window_size=[4, 4], num_classes=10)
    return Engine(model, input_size=(32, 32), device="cpu")


def _timm_swin() -> Engine:
    torch.manual_seed(0)
    model = timm.create_model("swin_tiny_patch4_window7_224", img_size=56, depths=(1, 1), num_heads=(1, 2),
                              embed_dim=16, window_size=7, num_classes=10)
    return Engine(model, input_size=(56, 56), device="cpu")


def _timm_vit() -> Engine:
    torch.manual_seed(0)
    return Engine(timm.create_model("vit_tiny_patch16_224", img_size=64, depth=2, num_classes=10),
                  input_size=(64, 64), device="cpu")


BUILDERS = {"torchvision vit": _tv_vit, "torchvision swin": _tv_swin, "timm swin": _timm_swin, "timm vit": _timm_vit}


@pytest.fixture(scope="module", params=list(BUILDERS))
def engine(request) -> Engine:
    return BUILDERS[request.param]()


def _direct_channel_mean(engine: Engine, layer: str, image: np.ndarray, channel: int) -> float:
    """The channel's mean over the map, from the layer's raw output (independent of as_maps)."""
    info, found = engine.layer(layer), {}
    handle = engine.module(layer).register_forward_hook(lambda _m, _i, out: found.setdefault("out", out))
    try:
        with torch.no_grad():
            engine.model(engine.preprocess(image))
    finally:
        handle.remove()
    out = found["out"][0]
    if info.layout == "tokens":  # (P + h·w, D): the patch tokens only
        return float(out[info.prefix_tokens:, channel].mean())
    assert info.layout == "NHWC"
    return float(out[:, :, channel].mean())


def test_channel_objectives_read_the_map_through_the_layout(engine: Engine) -> None:
    layer = engine.default_cam_layer()
    assert engine.layer(layer).layout in ("tokens", "NHWC")
    result = engine.optimize(layer, [0, 3], steps=0)  # the starting image, scored on its own pixels
    for i, unit in enumerate(result.units):
        direct = _direct_channel_mean(engine, layer, result.images[i], unit)
        assert result.activations[i] == pytest.approx(direct, abs=1e-4)


def test_five_steps_raise_the_objective(engine: Engine) -> None:
    layer = engine.default_cam_layer()
    units = [0, 1, 2, 3]
    before = engine.optimize(layer, units, steps=0, **PLAIN).activations
    after = engine.optimize(layer, units, steps=5, lr=0.1, **PLAIN)
    assert after.steps_done == 5 and not after.cancelled
    assert np.all(after.activations > before), (before, after.activations)
    classes = engine.optimize(None, [0, 1], objective="class", steps=5, lr=0.1, **PLAIN).activations
    assert np.all(classes > engine.optimize(None, [0, 1], objective="class", steps=0, **PLAIN).activations)
    assert hook_count(engine.model) == 0


@pytest.mark.parametrize("preset", ["lucid", "keras", "multiscale"])
def test_every_recipe_runs_at_the_native_size_and_says_so(preset: str) -> None:
    engine = _tv_vit()  # asserts its 32 px input: lucid sends 44 px, keras 180 px, multiscale 56 px and more
    layer = engine.default_cam_layer()
    steps = {"multiscale": {"steps": 2, "upscale_steps": 2}}.get(preset, {"steps": 3})
    result = engine.optimize(layer, [0, 1], preset=preset, **steps)
    assert result.steps_done == result.steps_total and np.all(np.isfinite(result.activations))
    assert len(result.notes) == 1 and "native 32×32 input" in result.notes[0]
    if preset == "lucid":
        assert result.images[0].shape == (32, 32, 3)
        assert "(44 px) is centre-cropped back to it" in result.notes[0]
    if preset == "keras":
        assert "not the 180 px asked" in result.notes[0]
    if preset == "multiscale":
        assert "resized to it" in result.notes[0]
    again = engine.optimize(layer, [0, 1], preset=preset, **steps)  # from the cache: the note stays
    assert again.cached == 2 and again.notes == result.notes
    assert hook_count(engine.model) == 0


def test_a_model_that_takes_any_size_gets_no_note() -> None:
    result = _tv_swin().optimize("features.3", [0], steps=2)  # torchvision's Swin pads to its windows
    assert result.notes == () and result.images[0].shape == (32, 32, 3)


def test_native_sizes_come_from_the_structure() -> None:
    assert native_size(_tv_vit().model, (99, 99)) == (32, 32)
    assert native_size(_timm_vit().model, (99, 99)) == (64, 64)
    assert native_size(_timm_swin().model, (99, 99)) == (56, 56)
    assert native_size(_tv_swin().model, (32, 32)) is None
    x = torch.arange(2 * 3 * 40 * 40, dtype=torch.float32).reshape(2, 3, 40, 40)
    assert torch.equal(Fit((32, 32))(x), x[..., 4:36, 4:36])  # larger: the centre
    small = Fit((32, 32))(x[..., :20, :20])
    assert small.shape == (2, 3, 32, 32)  # smaller: resized


@pytest.fixture(scope="module")
def inception() -> Engine:
    torch.manual_seed(0)
    model = torchvision.models.inception_v3(weights=None, init_weights=False, aux_logits=False, num_classes=10)
    return Engine(model, input_size=(96, 96), device="cpu")


def test_below_the_minimum_input_a_cnn_runs_at_its_input_size(inception: Engine) -> None:
    # Inception v3 needs at least 75 px: 32 px would fail in a convolution deep inside
    result = inception.optimize(None, [0], objective="class", steps=1, size=32, **PLAIN)
    assert result.images[0].shape == (96, 96, 3)
    assert "cannot run on 32×32 images" in result.notes[0] and "96×96 input size" in result.notes[0]


def test_a_size_the_model_cannot_run_at_is_a_clear_error() -> None:
    torch.manual_seed(0)
    model = torchvision.models.inception_v3(weights=None, init_weights=False, aux_logits=False, num_classes=10)
    # its own input size is too small too (class names given: nothing runs before the optimisation)
    engine = Engine(model, input_size=(48, 48), device="cpu", categories=[f"c{i}" for i in range(10)])
    # at its own size: a size error; at another, the model is broken whatever the size
    for size, error, text in ((48, InputError, r"cannot run on 48×48 images"),
                              (32, ModelError, r"fails on its own input size, 48×48")):
        with pytest.raises(error, match=text):
            engine.optimize(None, [0], objective="class", steps=1, size=size, **PLAIN)
    assert hook_count(engine.model) == 0


def test_a_neuron_of_a_token_layer_is_one_patch_token(engine: Engine) -> None:
    layer = engine.default_cam_layer()
    info = engine.layer(layer)
    _c, h, w = info.map_shape
    result = engine.optimize(layer, [2], objective="neuron", position=(h - 1, 0), steps=0)
    found = {}
    handle = engine.module(layer).register_forward_hook(lambda _m, _i, out: found.setdefault("out", out))
    try:
        with torch.no_grad():
            engine.model(engine.preprocess(result.images[0]))
    finally:
        handle.remove()
    out = found["out"][0]
    direct = out[info.prefix_tokens + (h - 1) * w, 2] if info.layout == "tokens" else out[h - 1, 0, 2]
    assert result.activations[0] == pytest.approx(float(direct), abs=1e-4)
