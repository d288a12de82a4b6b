"""Models in (issue 17): timm by name, .pt2 (torch.export) and .onnx files by content, factories.

Every file is made in the test from a tiny CNN (offline); bad files must be refused with a
clear CnnvisError and nothing in them run.
"""

from __future__ import annotations

import io
import pickle
import sys
import types
import warnings

import pytest
import torch
from torch import nn

from cnnvis_core import CnnvisError, Engine
from cnnvis_core.errors import InputError, ModelError, UnsafeWeightsError, WeightsUnavailableError
from cnnvis_core.hooks import hook_count
from cnnvis_core.loaders import file_format


def tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5)).eval()


@pytest.fixture(scope="module")
def pt2_bytes() -> bytes:
    model = tiny_cnn()
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.export.export(model, (torch.randn(2, 3, 24, 24),), dynamic_shapes=({0: batch},))
    buffer = io.BytesIO()
    torch.export.save(program, buffer, extra_files={"cnnvis.json": '{"categories": ["a", "b", "c", "d", "e"]}'})
    return buffer.getvalue()


@pytest.fixture(scope="module")
def onnx_bytes() -> bytes:
    pytest.importorskip("onnx2torch")
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(tiny_cnn(), (torch.randn(1, 3, 24, 24),), buffer, dynamo=False, input_names=["x"],
                          dynamic_axes={"x": {0: "batch"}})
    return buffer.getvalue()


def test_pt2_is_recognised_by_content_and_keeps_its_layers(pt2_bytes: bytes) -> None:
    assert file_format(pt2_bytes) == "pt2"
    engine = Engine.from_file(pt2_bytes, device="cpu")
    assert engine.input_size == (24, 24)                     # the program's static height and width
    assert engine.categories == ["a", "b", "c", "d", "e"]    # carried by the file's cnnvis.json
    names = [info.name for info in engine.layers()]
    assert names[:4] == ["0", "1", "2", "3"]                 # unflattened: the module hierarchy survives
    x = torch.randn(1, 3, 24, 24)
    expected = tiny_cnn()(x)
    assert torch.allclose(engine.logits(x), expected[0], atol=1e-5)
    result = engine.cam(x, "gradcam")
    assert result.layer == "3" and result.map.shape == (24, 24)
    assert hook_count(engine.model) == 0


def test_pt2_arguments_win_over_the_file(pt2_bytes: bytes) -> None:
    engine = Engine.from_file(io.BytesIO(pt2_bytes), input_size=(32, 32), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
                              categories=list("vwxyz"), device="cpu")
    assert engine.input_size == (32, 32) and engine.categories == list("vwxyz")
    assert engine.preprocess(torch.zeros(3, 32, 32).numpy().astype("uint8").transpose(1, 2, 0)).min() == -2.0


def test_onnx_is_converted(onnx_bytes: bytes) -> None:
    assert file_format(onnx_bytes) == "onnx"
    engine = Engine.from_file(onnx_bytes, device="cpu")
    assert engine.input_size == (24, 24)
    x = torch.randn(1, 3, 24, 24)
    assert torch.allclose(engine.logits(x), tiny_cnn()(x)[0], atol=1e-4)
    assert [info.kind for info in engine.layers()][:2] == ["Conv2d", "ReLU"]
    assert engine.cam(x, "gradcam").map.shape == (24, 24)


def test_truncated_and_wrong_files_are_refused(pt2_bytes: bytes, onnx_bytes: bytes, tmp_path) -> None:
    with pytest.raises(InputError, match="truncated"):
        Engine.from_file(pt2_bytes[: len(pt2_bytes) // 2])
    with pytest.raises(InputError, match="not a readable ONNX model"):
        Engine.from_file(onnx_bytes[:80])
    text = tmp_path / "model.onnx"
    text.write_text("this is a text file, not a model\n")
    with pytest.raises(InputError, match=r"neither a torch\.export program"):
        Engine.from_file(text)
    with pytest.raises(InputError, match="empty"):
        Engine.from_file(b"")


class _Boom:
    def __reduce__(self):
        return (sys.exit, ("executed!",))


def test_a_pickle_is_refused_never_run(tmp_path) -> None:
    evil = tmp_path / "model.pt2"
    evil.write_bytes(pickle.dumps(_Boom(), protocol=4))
    with pytest.raises(UnsafeWeightsError, match="NOT executed"):
        Engine.from_file(evil)


def test_a_pt2_with_pickled_weights_is_refused(pt2_bytes: bytes) -> None:
    import json
    import zipfile
    source = zipfile.ZipFile(io.BytesIO(pt2_bytes))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for name in source.namelist():
            data = source.read(name)
            if name.endswith("data/weights/model_weights_config.json"):
                config = json.loads(data)
                next(iter(config["config"].values()))["use_pickle"] = True
                data = json.dumps(config).encode()
            target.writestr(name, data)
    with pytest.raises(UnsafeWeightsError, match="NOT executed"):
        Engine.from_file(out.getvalue())


def test_timm_random_weights_with_its_data_config() -> None:
    engine = Engine.from_timm("resnet18", weights=None, device="cpu")
    assert engine.input_size == (224, 224)
    assert len(engine.categories) == 1000 and engine.categories[0] == "tench"
    assert "Normalize" in repr(engine.transform) and "CenterCrop" in repr(engine.transform)
    with pytest.raises(ModelError, match="Did you mean"):
        Engine.from_timm("resnet181", weights=None)


def test_timm_state_dict_file(tmp_path) -> None:
    import timm
    model = timm.create_model("resnet10t", num_classes=3)
    path = tmp_path / "r10.pth"
    torch.save(model.state_dict(), path)
    engine = Engine.from_timm("resnet10t", weights=str(path), device="cpu", num_classes=3)
    assert engine.categories == ["class 0", "class 1", "class 2"]
    assert torch.equal(engine.model.fc.weight, model.fc.weight)


def test_timm_pretrained_offline_is_a_clear_error(monkeypatch) -> None:
    from cnnvis_core import loaders
    monkeypatch.setattr(loaders, "timm_pretrained_available", lambda name: False)
    with pytest.raises(WeightsUnavailableError, match="weights=None"):
        Engine.from_timm("resnet18")


def test_factory_returns_a_module_or_an_engine(monkeypatch) -> None:
    module = types.ModuleType("cnnvis_test_factory")
    module.build = tiny_cnn
    module.engine = lambda: Engine(tiny_cnn(), input_size=(16, 16), device="cpu")
    module.nothing = lambda: 42
    monkeypatch.setitem(sys.modules, "cnnvis_test_factory", module)
    assert Engine.from_factory("cnnvis_test_factory:build", device="cpu").input_size == (224, 224)
    assert Engine.from_factory("cnnvis_test_factory:engine").input_size == (16, 16)
    with pytest.raises(ModelError, match=r"not a torch\.nn\.Module"):
        Engine.from_factory("cnnvis_test_factory:nothing")
    with pytest.raises(ModelError, match="has no function"):
        Engine.from_factory("cnnvis_test_factory:missing")
    with pytest.raises(CnnvisError, match=r"package\.module:function"):
        Engine.from_factory("no colon here")


def test_vit_h_14_random_takes_the_transform_of_its_224_px_model(monkeypatch) -> None:
    """DEFAULT vit_h_14 weights are 518 px, the random model 224 px: the transform must fit the model."""
    from torchvision.models import VisionTransformer

    from cnnvis_core import zoo
    monkeypatch.setattr(zoo, "_new_model", lambda name: VisionTransformer(
        image_size=224, patch_size=14, num_layers=1, num_heads=1, hidden_dim=8, mlp_dim=8))
    built = zoo.build("vit_h_14", None)
    assert built.input_size == (224, 224)
    assert tuple(built.transform(torch.zeros(3, 300, 300)).shape[-2:]) == (224, 224)
