"""Tests of cnnvis_core.zoo: the torchvision zoo and weights files (never touches the network)."""

from __future__ import annotations

import io
import os
import pathlib
import urllib.error

import pytest
import safetensors.torch
import torch
import torchvision
import torchvision.models._api as tv_api

from cnnvis_core import zoo
from cnnvis_core.errors import (
    CnnvisError,
    ModelError,
    UnsafeWeightsError,
    WeightsError,
    WeightsMismatchError,
    WeightsUnavailableError,
)


def _offline(*args, **kwargs):
    raise urllib.error.URLError("offline")


@pytest.fixture(autouse=True)
def no_network(monkeypatch, tmp_path):
    """Make every weights download fail as it does offline, with the cache in tmp_path."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    # WeightsEnum.get_state_dict calls the name imported into torchvision.models._api.
    monkeypatch.setattr(tv_api, "load_state_dict_from_url", _offline)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _offline)


@pytest.fixture(scope="module")
def resnet18() -> torch.nn.Module:
    """A resnet18 with perturbed weights and BatchNorm statistics (not torchvision's init)."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(torch.rand_like(tensor) * 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.rand(2, 3, 64, 64)


def _same_outputs(built: zoo.ZooModel, original: torch.nn.Module, image: torch.Tensor) -> bool:
    with torch.no_grad():
        return torch.allclose(built.model(image), original(image), atol=1e-5)


def _pth_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


# --------------------------------------------------------------------------- architectures


def test_list_architectures_is_classification_only():
    names = zoo.list_architectures()
    assert names == sorted(names)
    assert {"resnet50", "mobilenet_v3_small", "resnet18"} <= set(names)
    assert "fasterrcnn_resnet50_fpn" not in names
    assert "fcn_resnet50" not in names


def test_unknown_name_suggests_close_matches():
    with pytest.raises(ModelError) as info:
        zoo.build("resnet81", weights=None)
    message = str(info.value)
    assert "resnet18" in message
    assert "list_architectures()" in message


# --------------------------------------------------------------------------- torchvision weights


def test_random_weights_keep_transform_and_categories():
    built = zoo.build("mobilenet_v3_small", weights=None)
    assert len(built.categories) == 1000
    assert built.transform is not None
    assert built.input_size == (224, 224)
    assert "random" in built.description
    assert not built.model.training
    assert next(built.model.parameters()).device.type == "cpu"
    photo = torch.randint(0, 255, (3, 300, 280), dtype=torch.uint8)
    out = built.model(built.transform(photo)[None])
    assert out.shape == (1, 1000)


def test_offline_default_weights_say_where_to_put_the_file(tmp_path):
    with pytest.raises(WeightsUnavailableError) as info:
        zoo.build("resnet18")
    message = str(info.value)
    weights = torchvision.models.ResNet18_Weights.DEFAULT
    cache = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(weights.url))
    assert cache.startswith(str(tmp_path))
    assert cache in message
    assert weights.url in message
    assert "weights=None" in message
    assert "downloaded" in message


def test_pretrained_weights_by_name(monkeypatch, resnet18, image):
    monkeypatch.setattr(tv_api, "load_state_dict_from_url", lambda *a, **k: resnet18.state_dict())
    built = zoo.build("resnet18", weights="IMAGENET1K_V1")
    assert "ResNet18_Weights.IMAGENET1K_V1" in built.description
    assert len(built.categories) == 1000 and built.categories[0] == "tench"
    assert _same_outputs(built, resnet18, image)


def test_unknown_weights_name_is_an_error():
    with pytest.raises(WeightsError, match="IMAGENET1K_V1"):
        zoo.build("resnet18", weights="IMAGENET9K")


# --------------------------------------------------------------------------- weights files


def test_pth_state_dict_reproduces_outputs(tmp_path, resnet18, image):
    path = tmp_path / "mine.pth"
    torch.save(resnet18.state_dict(), path)
    built = zoo.build("resnet18", weights=path)
    assert _same_outputs(built, resnet18, image)
    assert built.description == "resnet18, weights from mine.pth"
    assert len(built.categories) == 1000
    assert not built.model.training


def test_safetensors_path(tmp_path, resnet18, image):
    path = tmp_path / "mine.safetensors"
    safetensors.torch.save_file(resnet18.state_dict(), str(path))
    assert _same_outputs(zoo.build("resnet18", weights=str(path)), resnet18, image)


def test_safetensors_detected_without_extension(tmp_path, resnet18, image):
    path = tmp_path / "mine.bin"
    safetensors.torch.save_file(resnet18.state_dict(), str(path))
    assert _same_outputs(zoo.build("resnet18", weights=path), resnet18, image)


@pytest.mark.parametrize("kind", ["pth", "safetensors"])
@pytest.mark.parametrize("wrap", [bytes, io.BytesIO])
def test_bytes_and_file_objects(kind, wrap, resnet18, image):
    state = resnet18.state_dict()
    data = safetensors.torch.save(state) if kind == "safetensors" else _pth_bytes(state)
    assert _same_outputs(zoo.build("resnet18", weights=wrap(data)), resnet18, image)


def test_checkpoint_wrappers_and_module_prefix(tmp_path, resnet18, image):
    state = resnet18.state_dict()
    wrapped = {"state_dict": state, "epoch": 3}
    assert _same_outputs(zoo.build("resnet18", weights=_pth_bytes(wrapped)), resnet18, image)
    prefixed = {f"module.{k}": v for k, v in state.items()}
    assert _same_outputs(zoo.build("resnet18", weights=_pth_bytes(prefixed)), resnet18, image)
    both = {"model": prefixed}
    assert _same_outputs(zoo.build("resnet18", weights=_pth_bytes(both)), resnet18, image)


def test_other_number_of_classes(image):
    small = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    built = zoo.build("resnet18", weights=_pth_bytes(small.state_dict()))
    assert built.categories == [f"class {i}" for i in range(10)]
    assert _same_outputs(built, small, image)


def test_conv_classifier_with_other_number_of_classes(image):
    small = torchvision.models.squeezenet1_0(weights=None, num_classes=7).eval()
    built = zoo.build("squeezenet1_0", weights=safetensors.torch.save(small.state_dict()))
    assert len(built.categories) == 7
    assert _same_outputs(built, small, image)


def test_wrong_architecture_is_a_mismatch():
    alexnet = torchvision.models.alexnet(weights=None)
    with pytest.raises(WeightsMismatchError) as info:
        zoo.build("resnet18", weights=_pth_bytes(alexnet.state_dict()))
    message = str(info.value)
    expected = torchvision.models.resnet18(weights=None).state_dict()
    missing = [k for k in expected if not k.endswith("num_batches_tracked")]
    assert message.startswith("The weights do not fit resnet18:")
    assert f"{len(missing)} keys missing (e.g. conv1.weight" in message
    assert f"{len(alexnet.state_dict())} unexpected (e.g. features.0.weight" in message


def test_shape_mismatch_is_described(resnet18):
    state = dict(resnet18.state_dict())
    state["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    with pytest.raises(WeightsMismatchError) as info:
        zoo.build("resnet18", weights=_pth_bytes(state))
    expected = "conv1.weight: file (64, 3, 3, 3) vs model (64, 3, 7, 7)"
    assert f"1 with a different shape (e.g. {expected})" in str(info.value)


class _Exploit:
    """Pickles into a call that creates a marker file when unpickled."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return (self.marker.touch, ())


def test_malicious_pickle_is_refused_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save(_Exploit(marker), path)
    assert not marker.exists()
    with pytest.raises(UnsafeWeightsError) as info:
        zoo.build("resnet18", weights=path)
    assert not marker.exists()
    message = str(info.value)
    assert "NOT executed" in message and "state_dict()" in message


def test_pickled_module_is_refused(tmp_path):
    with pytest.raises(UnsafeWeightsError, match="plain state dict"):
        zoo.build("mobilenet_v3_small", weights=_pth_bytes(torchvision.models.mobilenet_v3_small()))


@pytest.mark.parametrize(
    "data",
    [os.urandom(4096), b"", b"just some text", _pth_bytes({"a": torch.zeros(3)})[:300]],
    ids=["random", "empty", "text", "truncated"],
)
def test_unreadable_files(tmp_path, data):
    path = tmp_path / "broken.pth"
    path.write_bytes(data)
    with pytest.raises(WeightsError, match=r"broken\.pth") as info:
        zoo.build("resnet18", weights=path)
    assert not isinstance(info.value, UnsafeWeightsError)


def test_missing_file_and_non_state_dicts(tmp_path):
    with pytest.raises(WeightsError, match="No weights file"):
        zoo.build("resnet18", weights=tmp_path / "nowhere.pth")
    with pytest.raises(WeightsError, match="not a state dict"):
        zoo.build("resnet18", weights=_pth_bytes({"weight": torch.zeros(2), "epoch": 3}))
    with pytest.raises(WeightsError, match="no state dict"):
        zoo.build("resnet18", weights=_pth_bytes([torch.zeros(2)]))


def test_all_errors_are_cnnvis_errors():
    errors = (ModelError, WeightsError, WeightsUnavailableError, WeightsMismatchError)
    for error in errors + (UnsafeWeightsError,):
        assert issubclass(error, CnnvisError)
