"""The shape of the engine: a method declared once is everywhere, per-model state lives and dies with the
model, and every ranking of classes breaks ties the same way."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cnnvis_core.cam as cam
from cnnvis_core import Engine, InputError
from cnnvis_core.cam import CamMethod, register, unregister
from cnnvis_core.hooks import hook_count


class Small(nn.Module):
    def __init__(self, tie: bool = False) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, 4)
        if tie:
            with torch.no_grad():
                self.fc.weight[2] = self.fc.weight[1]
                self.fc.bias[2] = self.fc.bias[1] = 5.0  # classes 1 and 2 tie, far above the others

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.relu(self.bn(self.conv(x)))).flatten(1))


def _mean_channel_map(shared) -> torch.Tensor:
    """A toy method: the layer's channel mean, one copy per target."""
    return torch.relu(shared.A.mean(0)).expand(len(shared.run.targets), *shared.A.shape[1:])


@pytest.fixture
def toy_method():
    method = register(CamMethod("meancam", "Mean-CAM", "a test 2026", "shared", "mean_k A_k",
                                map=_mean_channel_map, gradients=False))
    yield method
    unregister("meancam")


def test_a_method_declared_in_one_place_is_known_everywhere(toy_method):
    engine = Engine(Small(), input_size=(12, 12), device="cpu")
    x = torch.randn(1, 3, 12, 12)
    assert "meancam" in cam.METHODS and cam.TITLES["meancam"] == "Mean-CAM (a test 2026)"
    assert "meancam" in cam.SHARED  # a shared-pass method: in cams() by default
    backward = engine.counters.backward
    result = engine.cam(x, "meancam", layer="relu", target=3)
    assert engine.counters.backward == backward  # declared without gradients: no backward pass
    activation = engine.feature_maps(x, "relu")["relu"].mean(0)
    expected = F.interpolate(activation[None, None], size=(12, 12), mode="bilinear", align_corners=False)[0, 0]
    expected = (expected - expected.min()) / (expected.max() - expected.min())
    np.testing.assert_allclose(result.map, expected.numpy(), atol=1e-5)
    assert result.method == "meancam" and result.target == 3
    assert set(engine.cams(x, layer="relu")) == {"cam", "gradcam", "gradcam++", "xgradcam", "layercam", "meancam"}
    per_class = engine.cam_targets(x, "meancam", targets=[0, 2], layer="relu")
    assert [r.target for r in per_class] == [0, 2]
    with pytest.raises(InputError, match="no_such_option"):
        engine.cam(x, "meancam", no_such_option=1)


def test_an_unregistered_method_is_gone_and_names_are_checked(toy_method):
    engine = Engine(Small(), input_size=(12, 12), device="cpu")
    unregister("meancam")
    assert "meancam" not in cam.METHODS
    with pytest.raises(InputError, match="gradcam"):
        engine.cam(torch.randn(1, 3, 12, 12), "meancam")
    with pytest.raises(ValueError, match="registered already"):
        register(cam.method("gradcam"))
    with pytest.raises(ValueError, match="needs weights or map"):
        CamMethod("broken", "Broken", "nobody", "shared")


def test_options_and_their_defaults_come_from_the_declarations():
    sscam = cam.method("sscam")
    assert sscam.defaults()["n_samples"] == 35 and sscam.defaults()["sigma"] == 2.0
    assert sscam.passes_per_channel({}) == 35 and sscam.passes_per_channel({"n_samples": 4}) == 4
    assert cam.method("scorecam").passes_per_channel() == 1 and cam.method("gradcam").passes_per_channel() == 0
    assert cam.OPTIONS["iscam"] == ("n_samples", "precision", "progress")


def test_per_model_state_dies_with_the_engine():
    """Folded copies, verified CAM heads, batch sizes and optimised images live in the engine's cache,
    not in module-level tables: once the engine goes, its model can be collected."""
    engine = Engine(Small(), input_size=(12, 12), device="cpu")
    x = torch.randn(1, 3, 12, 12)
    engine.cams(x)
    engine.cam(x, "scorecam")
    engine.optimize("relu", [0], steps=2, size=12)
    engine.reconstruct(x, "relu", 0)
    assert len(engine.cache._items) >= 4
    model = weakref.ref(engine.model)
    del engine
    gc.collect()
    assert model() is None


def test_predictions_and_every_default_target_break_ties_alike():
    engine = Engine(Small(tie=True), input_size=(12, 12), device="cpu")
    x = torch.randn(1, 3, 12, 12)
    logits = engine.logits(x)
    assert logits[1] == logits[2] and logits[1] == logits.max()
    top = [p.index for p in engine.predict(x, k=2)]
    assert top == [1, 2]  # equal logits: the lower class index first
    assert engine.cam(x, "gradcam").target == 1
    assert [r.target for r in engine.cam_targets(x, "gradcam", targets=2)] == top
    assert engine.saliency(x, "gradient").target == 1
    assert engine.faithfulness(x, np.ones((12, 12), np.float32), steps=2).target == 1
    assert engine.saliency(x, "gradient", target="class 3").target == 3  # names work wherever a target does
    assert hook_count(engine.model) == 0
