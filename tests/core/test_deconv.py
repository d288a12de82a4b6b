"""Deconvnet reconstruction: the projection against a numpy reference, against the deconvnet
gradient rule, on VGG-like and residual nets, and on the demo model's objects."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from cnnvis_core import Engine, InputError, LayerError
from cnnvis_core.deconv import reconstruct
from cnnvis_core.hooks import hook_count
from cnnvis_core.layers import LayerInfo
from tests.conftest import REPORT, TEST_SEED_START


def tiny_chain() -> nn.Sequential:
    """conv 3×3 pad 1 (3→2) → BN → ReLU → max-pool 2 → conv 2×2 (2→3) → ReLU, on 6×6 inputs."""
    gen = torch.Generator().manual_seed(5)
    model = nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(3, 2, 3, padding=1), bn1=nn.BatchNorm2d(2), relu1=nn.ReLU(inplace=True),
        pool1=nn.MaxPool2d(2), conv2=nn.Conv2d(2, 3, 2), relu2=nn.ReLU(inplace=True)))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
        model.bn1.running_mean.copy_(torch.randn(2, generator=gen))
        model.bn1.running_var.copy_(torch.rand(2, generator=gen) + 0.5)
        model.conv2.bias.fill_(2.0)  # keep relu2 mostly active
    return model


def numpy_projection(model: nn.Sequential, x: np.ndarray, channel: int) -> np.ndarray:
    """Zeiler & Fergus by hand: forward recording the switches, then unpool, rectify, transposed
    filtering (BN: times γ/√(σ²+ε)) down to the input."""
    p = {k: v.detach().double().numpy() for k, v in model.state_dict().items()}
    w1, w2 = p["conv1.weight"], p["conv2.weight"]
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1)))
    z1 = np.array([[[p["conv1.bias"][o] + np.sum(w1[o] * xp[:, i:i + 3, j:j + 3]) for j in range(6)]
                    for i in range(6)] for o in range(2)])
    scale = p["bn1.weight"] / np.sqrt(p["bn1.running_var"] + model.bn1.eps)
    h1 = np.maximum((z1 - p["bn1.running_mean"][:, None, None]) * scale[:, None, None]
                    + p["bn1.bias"][:, None, None], 0)
    pooled, switch = np.zeros((2, 3, 3)), {}
    for c in range(2):
        for i in range(3):
            for j in range(3):
                window = h1[c, 2 * i:2 * i + 2, 2 * j:2 * j + 2]
                a, b = np.unravel_index(np.argmax(window), (2, 2))
                pooled[c, i, j], switch[c, i, j] = window[a, b], (2 * i + a, 2 * j + b)
    z2 = np.array([[[p["conv2.bias"][o] + np.sum(w2[o] * pooled[:, i:i + 2, j:j + 2]) for j in range(2)]
                    for i in range(2)] for o in range(3)])
    r = np.zeros((3, 2, 2))
    r[channel] = np.maximum(z2[channel], 0)  # the chosen channel of relu2, others zero
    r = np.maximum(r, 0)  # rectify (relu2)
    down = np.zeros((2, 3, 3))  # conv2 transposed
    for o in range(3):
        for i in range(2):
            for j in range(2):
                down[:, i:i + 2, j:j + 2] += w2[o] * r[o, i, j]
    up = np.zeros((2, 6, 6))  # unpool with the switches
    for (c, i, j), (a, b) in switch.items():
        up[c, a, b] += down[c, i, j]
    up = np.maximum(up, 0) * scale[:, None, None]  # rectify (relu1), BN scale
    out = np.zeros((3, 8, 8))  # conv1 transposed, padding cropped
    for o in range(2):
        for i in range(6):
            for j in range(6):
                out[:, i:i + 3, j:j + 3] += w1[o] * up[o, i, j]
    return out[:, 1:-1, 1:-1]


def test_projection_matches_the_numpy_reference():
    engine = Engine(tiny_chain(), input_size=(6, 6), device="cpu")
    checked = 0
    for seed in range(4):
        x = torch.randn(1, 3, 6, 6, generator=torch.Generator().manual_seed(seed))
        for channel in range(3):
            result = engine.reconstruct(x, "relu2", channel)
            expected = numpy_projection(engine.model, x[0].double().numpy(), channel)
            assert result.mechanism == "switches"
            assert np.allclose(result.image, expected, atol=1e-5)
            checked += bool(np.abs(expected).max() > 0)
    assert checked >= 6  # most cases project something non-zero


@pytest.mark.parametrize("layer", ["features.relu7", "features.bn6", "features.pool2", "features.conv3",
                                   "features.relu1"])
@pytest.mark.parametrize("top_only", [False, True])
def test_projection_equals_the_deconvnet_gradient_rule_on_the_demo(demo_engine, demo_images, layer, top_only):
    x = demo_engine.preprocess(demo_images[4])
    channels = demo_engine.layer(layer).channels
    for channel in (1, channels // 2):
        switches = reconstruct(demo_engine, x, layer, channel, top_only, mechanism="switches")
        rule = reconstruct(demo_engine, x, layer, channel, top_only, mechanism="gradient")
        assert (switches.mechanism, rule.mechanism) == ("switches", "gradient")
        assert switches.position == rule.position
        scale = max(float(np.abs(rule.image).max()), 1e-12)
        assert np.allclose(switches.image, rule.image, atol=1e-5 * scale)
    assert hook_count(demo_engine.model) == 0


def test_alexnet_with_overlapping_pools_uses_the_switches():
    from torchvision.models import alexnet
    torch.manual_seed(0)
    engine = Engine(alexnet(), input_size=(127, 127), device="cpu")
    x = torch.randn(1, 3, 127, 127)
    for layer in ("features.2", "features.9"):  # after pool1 (k3 s2), after conv4's ReLU
        switches = reconstruct(engine, x, layer, 5, mechanism="switches")
        rule = reconstruct(engine, x, layer, 5, mechanism="gradient")
        scale = float(np.abs(rule.image).max())
        assert scale > 0
        assert np.allclose(switches.image, rule.image, atol=1e-5 * scale)
    assert engine.reconstruct(x, "features.9", 5).mechanism == "switches"


def test_residual_net_falls_back_to_the_gradient_rule_with_a_note():
    from torchvision.models import resnet18
    torch.manual_seed(0)
    engine = Engine(resnet18(), input_size=(64, 64), device="cpu")
    x = torch.randn(1, 3, 64, 64)
    result = engine.reconstruct(x, "layer2.1.relu", 7, top_only=True)
    assert result.mechanism == "gradient"
    assert "not a plain" in result.notes[0]
    assert np.abs(result.image).max() > 0
    # the stem is a plain chain: there the switches apply
    assert engine.reconstruct(x, "maxpool", 7).mechanism == "switches"
    with pytest.raises(LayerError, match="VGG or AlexNet"):
        reconstruct(engine, x, "layer2.1.relu", 7, mechanism="switches")
    assert hook_count(engine.model) == 0


def test_bad_layer_and_channel_are_readable_errors(demo_engine, demo_images):
    demo_engine.layers()  # the catalogue's probe forward, once per engine
    before = demo_engine.counters.snapshot()
    with pytest.raises(LayerError, match=r"feature maps.*features"):
        demo_engine.reconstruct(demo_images[0], "fc", 0)
    with pytest.raises(InputError, match="from 0 to 127"):
        demo_engine.reconstruct(demo_images[0], "features.relu7", 128)
    with pytest.raises(LayerError, match=r"features\.relu7"):
        demo_engine.reconstruct(demo_images[0], "features.relu77", 1)
    assert demo_engine.counters.snapshot() == before
    assert hook_count(demo_engine.model) == 0


def test_hooks_gone_after_a_forward_that_raised():
    class Exploding(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                                          nn.Conv2d(4, 4, 3), nn.ReLU(inplace=True))
            self.head = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.features[1](self.features[0](x))
            raise RuntimeError("boom")

    engine = Engine(Exploding(), input_size=(12, 12), device="cpu")
    engine._layers = [LayerInfo("features.4", "ReLU", (4, 3, 3), 0)]  # the catalogue's probe would raise too
    for mechanism in ("switches", "gradient"):
        with pytest.raises((RuntimeError, LayerError)):
            reconstruct(engine, torch.randn(1, 3, 12, 12), "features.4", 0, mechanism=mechanism)
        assert hook_count(engine.model) == 0


def test_one_forward_and_one_backward(demo_engine, demo_images):
    for mechanism in ("switches", "gradient"):
        before = demo_engine.counters.snapshot()
        reconstruct(demo_engine, demo_images[0], "features.relu4", 3, mechanism=mechanism)
        after = demo_engine.counters.snapshot()
        assert (after[0] - before[0], after[1] - before[1]) == (1, 1)


def test_reconstruction_lands_on_the_object(demo_engine):
    """On demo samples: the projection of the strongest deep channel's top activation keeps most of
    its energy near that activation's receptive field centre, and the projection of the most
    class-relevant channel of relu7 puts most of its energy on the object."""
    from cnnvis_core.demo import sample
    near, on_object, area = [], [], []
    for seed in range(TEST_SEED_START + 100, TEST_SEED_START + 112):
        image, labels, masks = sample(seed)
        x = demo_engine.preprocess(image)
        acts = demo_engine.feature_maps(x, ["features.relu7"])["features.relu7"]
        channel = int(acts.amax((1, 2)).argmax())
        top = demo_engine.reconstruct(x, "features.relu7", channel, top_only=True)
        row, col = top.position
        cy, cx = (row + 0.5) * 8, (col + 0.5) * 8  # relu7 is on a stride-8 grid
        energy = (top.image ** 2).sum(0)
        yy, xx = np.mgrid[:128, :128]
        box = (np.abs(yy - cy) <= 24) & (np.abs(xx - cx) <= 24)
        near.append(energy[box].sum() / energy.sum())
        weights = demo_engine.model.fc.weight[labels[0]]
        relevant = int((weights * acts.mean((1, 2))).argmax())
        full = demo_engine.reconstruct(x, "features.relu7", relevant)
        energy = (full.image ** 2).sum(0)
        mask = torch.nn.functional.max_pool2d(torch.as_tensor(masks[0], dtype=torch.float32)[None, None],
                                              9, 1, 4)[0, 0].numpy() > 0  # the mask grown by 4 px
        on_object.append(energy[mask].sum() / energy.sum())
        area.append(mask.mean())
    REPORT["deconvnet energy near the top activation (49 px box), median"] = f"{np.median(near):.2f}"
    REPORT["deconvnet energy on the object (class channel), median"] = \
        f"{np.median(on_object):.2f} (object area {np.median(area):.2f})"
    assert np.median(near) >= 0.8
    assert np.median(on_object) >= 0.5
    assert np.median(np.array(on_object) / np.array(area)) >= 2.0
