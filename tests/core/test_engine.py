"""The engine: layers, preprocessing, predictions, feature maps, hooks and threads."""

from __future__ import annotations

import contextlib
import threading

import numpy as np
import pytest
import torch
from torch import nn

from cnnvis_core import CnnvisError, Engine, InputError, LayerError, ModelError
from cnnvis_core.hooks import hook_count


def test_model_is_resident_in_eval_mode_and_frozen(demo_engine):
    assert demo_engine.device.type == "cpu"
    assert not demo_engine.model.training
    assert all(not p.requires_grad for p in demo_engine.model.parameters())


def test_layers_in_execution_order_with_shapes(demo_engine):
    layers = demo_engine.layers()
    names = [layer.name for layer in layers]
    assert names[:4] == ["features.conv1", "features.bn1", "features.relu1", "features.pool1"]
    assert names[-4:] == ["features", "gap", "flatten", "fc"]
    shapes = {layer.name: layer.output_shape for layer in layers}
    assert shapes["features.conv1"] == (16, 128, 128)
    assert shapes["features.pool3"] == (64, 16, 16)
    assert shapes["features.relu7"] == (128, 16, 16)
    assert shapes["fc"] == (8,)
    assert demo_engine.layer("features.conv2").kind == "Conv2d"
    assert [layer.index for layer in layers] == list(range(len(layers)))


def test_layer_order_puts_containers_after_children_and_shared_relu_last_use():
    from torchvision.models import resnet18
    engine = Engine(resnet18(), device="cpu")
    names = [layer.name for layer in engine.layers()]
    assert names.index("layer1.0.conv2") < names.index("layer1.0.relu") < names.index("layer1.0") \
        < names.index("layer1.1") < names.index("layer1")
    assert engine.layer("layer1.0.relu").calls == 2
    assert engine.layer("layer4").output_shape == (512, 7, 7)


def test_unknown_layer_suggests_close_names(demo_engine):
    before = demo_engine.counters.snapshot()
    with pytest.raises(LayerError, match=r"features\.conv3"):
        demo_engine.feature_maps(torch.zeros(1, 3, 128, 128), ["features.cnv3"])
    assert demo_engine.counters.snapshot() == before


def test_preprocess_accepts_pil_array_and_tensor(demo_engine, demo_images):
    image = demo_images[0]
    from_pil = demo_engine.preprocess(image)
    assert from_pil.shape == (1, 3, 128, 128)
    assert torch.equal(demo_engine.preprocess(np.asarray(image)), from_pil)
    assert torch.equal(demo_engine.preprocess(from_pil[0]), from_pil)
    assert torch.equal(demo_engine.preprocess(from_pil), from_pil)
    # A grayscale image is converted to RGB first.
    assert demo_engine.preprocess(image.convert("L")).shape == (1, 3, 128, 128)


@pytest.mark.parametrize("bad", [torch.zeros(2, 3, 8, 8), torch.zeros(1, 1, 8, 8),
                                 torch.zeros(1, 3, 8, 8, dtype=torch.uint8), "photo.jpg",
                                 np.zeros((4, 4), np.uint8)])
def test_preprocess_rejects_bad_inputs(demo_engine, bad):
    with pytest.raises(InputError):
        demo_engine.preprocess(bad)


def test_predict_matches_softmax_of_the_model(demo_engine, demo_images):
    image = demo_images[1]
    preds = demo_engine.predict(image, k=3)
    with torch.no_grad():
        probs = torch.softmax(demo_engine.model(demo_engine.preprocess(image)), 1)[0]
    expected = probs.topk(3)
    assert [p.index for p in preds] == expected.indices.tolist()
    assert np.allclose([p.probability for p in preds], expected.values.numpy(), atol=1e-6)
    assert preds[0].label == demo_engine.categories[preds[0].index]
    _, _, probability = preds[0]  # a plain tuple too
    assert probability >= preds[1].probability


def test_feature_maps_one_forward_for_many_layers(demo_engine, demo_images):
    names = [layer.name for layer in demo_engine.layers()]
    before = demo_engine.counters.forward
    maps = demo_engine.feature_maps(demo_images[2], names)
    assert demo_engine.counters.forward == before + 1
    assert set(maps) == set(names)
    assert all(t.device.type == "cpu" for t in maps.values())
    assert maps["features.conv1"].shape == (16, 128, 128)
    assert maps["fc"].shape == (8,)


def test_feature_maps_equal_an_independent_layer_by_layer_run(demo_engine, demo_images):
    x = demo_engine.preprocess(demo_images[3])
    maps = demo_engine.feature_maps(x, ["features.bn1", "features.relu1", "features.conv5", "fc"])
    with torch.no_grad():
        h = x
        outputs = {}
        for name, module in demo_engine.model.features.named_children():
            h = module(h.clone())  # clone: in-place ReLUs must not alter what we keep
            outputs[f"features.{name}"] = h.clone()
        logits = demo_engine.model.fc(torch.flatten(demo_engine.model.gap(h), 1))
    # BatchNorm's output has negative values: the in-place ReLU after it must not have eaten them.
    assert (maps["features.bn1"] < 0).any()
    for name in ["features.bn1", "features.relu1", "features.conv5"]:
        assert torch.allclose(maps[name], outputs[name][0], atol=1e-5), name
    assert torch.allclose(maps["fc"], logits[0], atol=1e-5)


class Exploding(nn.Module):
    """A conv net whose forward raises when asked to (to test cleanup after errors)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.relu = nn.ReLU(inplace=True)
        self.head = nn.Linear(4, 2)
        self.explode = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu(self.conv(x))
        if self.explode:
            raise RuntimeError("boom")
        return self.head(h.mean((2, 3)))


def test_no_hooks_left_after_calls_even_failing_ones():
    model = Exploding()
    engine = Engine(model, input_size=(16, 16), device="cpu")
    x = torch.randn(1, 3, 16, 16)
    engine.layers()
    engine.feature_maps(x, ["conv", "relu"])
    engine.predict(x)
    assert hook_count(model) == 0
    model.explode = True
    with pytest.raises(RuntimeError, match="boom"):
        engine.feature_maps(x, ["conv", "relu", "head"])
    assert hook_count(model) == 0
    assert all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
               for m in model.modules())


def test_train_mode_set_by_a_user_is_restored_but_not_used():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    engine = Engine(model, input_size=(8, 8), device="cpu")
    x = torch.randn(1, 3, 8, 8)
    expected = engine.logits(x)
    model.train()
    assert torch.equal(engine.logits(x), expected)  # BatchNorm used its running stats
    assert model.training and model[1].training


@pytest.mark.parametrize("inside", ["nothing", "switch one on", "raise"])
def test_eval_mode_restores_each_flag_as_it_was(inside):
    from cnnvis_core.hooks import eval_mode
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Dropout(), nn.Sequential(nn.BatchNorm2d(4), nn.ReLU()))
    model[1].train()  # only the dropout (a Monte-Carlo dropout set-up), the rest in eval mode
    model[2][0].train()
    before = [m.training for m in model.modules()]
    outside = pytest.raises(RuntimeError) if inside == "raise" else contextlib.nullcontext()
    with outside, eval_mode(model):
        assert not any(m.training for m in model.modules())
        if inside == "switch one on":
            model[0].train()
        if inside == "raise":
            raise RuntimeError("boom")
    assert [m.training for m in model.modules()] == before


def test_quick_passes_means_a_gpu_or_under_five_million_parameters(demo_engine):
    assert demo_engine.parameter_count == sum(p.numel() for p in demo_engine.model.parameters())
    assert demo_engine.quick_passes  # ~0.4 M parameters
    big = Engine(nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 26_100)), input_size=(8, 8), device="cpu")
    assert big.parameter_count == 192 * 26_100 + 26_100 > 5_000_000
    assert not big.quick_passes


def test_engine_refuses_what_is_not_a_module():
    with pytest.raises(ModelError, match=r"torch\.nn\.Module"):
        Engine(lambda x: x)


def test_concurrent_callers_never_mix_activations(demo_engine, demo_images):
    names = ["features.relu2", "features.relu7", "fc"]
    expected = [(demo_engine.feature_maps(im, names), demo_engine.predict(im)) for im in demo_images]
    failures: list[str] = []

    def worker(i: int) -> None:
        for _ in range(12):
            maps = demo_engine.feature_maps(demo_images[i], names)
            preds = demo_engine.predict(demo_images[i])
            if any(not torch.allclose(maps[n], expected[i][0][n], atol=1e-6) for n in names) \
                    or [p.index for p in preds] != [p.index for p in expected[i][1]]:
                failures.append(f"thread {i}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures
    assert len({tuple(e[0]["fc"].tolist()) for e in expected}) == 8  # the images really differ
    assert hook_count(demo_engine.model) == 0


def test_every_error_is_a_cnnvis_error():
    for cls in (InputError, LayerError, ModelError):
        assert issubclass(cls, CnnvisError)
