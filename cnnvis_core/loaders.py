"""Models from elsewhere: timm by name, a ``torch.export`` program or an ONNX file, a Python factory.

Each loader returns a :class:`~cnnvis_core.zoo.ZooModel` (the model in eval mode on the CPU,
its transform, class names, input size and a description) that
:class:`~cnnvis_core.engine.Engine` wraps (``Engine.from_timm``, ``Engine.from_file``,
``Engine.from_factory``).

- :func:`timm_model`: ``timm.create_model(name)`` with timm's own data config (input size,
  mean/std, interpolation, crop) as the transform; ImageNet class names (torchvision's list)
  when the head has 1000 classes. ``weights="DEFAULT"`` loads timm's pretrained weights
  (Hugging Face hub or its cache) and, offline, raises
  :class:`~cnnvis_core.errors.WeightsUnavailableError`; ``None`` random weights; a file a
  state dict (read as :mod:`.zoo` reads one: no pickle runs).
- :func:`file_model`: a ``.pt2`` archive written by ``torch.export.save`` or an ``.onnx``
  file, recognised by content (a zip with the export archive's layout, or an ONNX protobuf),
  not by name. A ``.pt2`` is checked before it is loaded: every weight and constant must be
  stored as raw tensor bytes and the sample inputs must load with ``weights_only=True``
  (``torch.export.load`` would otherwise unpickle them, which can run code); it is then
  unflattened (``torch.export.unflatten``) so the module hierarchy, hence the layers and
  hooks, survives. An ONNX file is converted with ``onnx2torch`` (optional: pip install
  onnx onnx2torch), which covers the standard ``ai.onnx`` operators of opsets 9 to 17 or so
  (convolutions, pooling, normalisation, activations, Gemm/MatMul, Resize…; custom domains
  are refused by the converter). Input size and normalisation: the arguments, else what
  the file carries (a ``.pt2``'s ``cnnvis.json`` extra file with ``input_size``, ``mean``,
  ``std``, ``categories``; a static input shape), else 224×224 and ImageNet's mean and std.
- :func:`factory_model`: ``"package.module:function"`` imported and called with no
  arguments; it returns an ``nn.Module`` (wrapped with the defaults) or an engine. Code the
  person running the server names, never code from an upload.
"""

from __future__ import annotations

import difflib
import importlib
import io
import json
import os
import zipfile
from collections.abc import Sequence
from typing import Any, BinaryIO

import torch
from torch import nn

from .core import default_transform
from .errors import CnnvisError, InputError, ModelError, UnsafeWeightsError, WeightsUnavailableError
from .normalization import IMAGENET_MEAN, IMAGENET_STD
from .zoo import ZooModel, _load, _read_weights

#: the largest model file :func:`file_model` reads
MAX_FILE_BYTES = 2 * 1024 ** 3
#: the extra file of a ``.pt2`` archive that may carry input size, mean, std and class names
EXTRA_FILE = "cnnvis.json"

Source = str | os.PathLike | bytes | BinaryIO


# --------------------------------------------------------------------------- ImageNet names
def imagenet_categories() -> list[str]:
    """The 1000 ImageNet class names, from torchvision's weights metadata (offline)."""
    import torchvision
    return list(torchvision.models.ResNet50_Weights.IMAGENET1K_V2.meta["categories"])


def _categories(model: nn.Module, given: Sequence[str] | None = None) -> list[str] | None:
    if given is not None:
        return list(given)
    classes = getattr(model, "num_classes", None)
    return imagenet_categories() if classes == 1000 else None


# --------------------------------------------------------------------------- timm
def _timm():
    try:
        import timm
    except ImportError as exc:  # pragma: no cover - timm is a requirement
        raise CnnvisError("timm is not installed: pip install timm.") from exc
    return timm


def list_timm_models() -> list[str]:
    """Every model name timm knows (``timm.list_models()``)."""
    return list(_timm().list_models())


def _check_timm_name(name: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ModelError("Give a timm model name, e.g. 'resnet18' or 'vit_small_patch16_224'.")
    key = name.strip()
    known = list_timm_models()
    base = key.split(".")[0]  # 'vit_small_patch16_224.augreg_in21k' names a pretrained tag
    if base in known:
        return key
    close = difflib.get_close_matches(base, known, n=3)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ModelError(f"timm has no model {name!r}.{hint} timm.list_models() lists them all.")


def timm_pretrained_available(name: str) -> bool:
    """Whether timm's pretrained weights for ``name`` are in the Hugging Face cache, or the hub
    (or the weights' URL) answers a bounded probe (offline: False at once, no retries)."""
    from .zoo import download_reachable
    timm = _timm()
    try:
        config = timm.models.get_pretrained_cfg(name.split(".")[0]) if "." not in name else None
        config = config or timm.models.get_pretrained_cfg(name)
    except Exception:  # noqa: BLE001 - an unknown name or tag: no pretrained config to look at
        config = None
    hub_id = getattr(config, "hf_hub_id", None) if config is not None else None
    if hub_id:
        try:
            from huggingface_hub import try_to_load_from_cache
            for filename in ("model.safetensors", "open_clip_pytorch_model.bin", "pytorch_model.bin"):
                if isinstance(try_to_load_from_cache(hub_id, filename), str):
                    return True
        except ImportError:
            pass
        if download_reachable("https://huggingface.co"):
            return True
    url = getattr(config, "url", None) if config is not None else None
    return bool(url) and download_reachable(url)


def timm_transform(model: nn.Module) -> tuple[Any, tuple[int, int], dict]:
    """``(transform, (H, W), data config)`` from timm's data config of ``model``."""
    timm = _timm()
    config = timm.data.resolve_data_config({}, model=model)
    transform = timm.data.create_transform(**config, is_training=False)
    size = tuple(int(s) for s in config["input_size"][-2:])
    return transform, size, config


def timm_model(name: str, weights: object = "DEFAULT", **kwargs: Any) -> ZooModel:
    """A timm model by name (see the module docstring); ``kwargs`` go to ``timm.create_model``
    (``img_size=64`` for a small ViT, ``num_classes=10``…)."""
    timm = _timm()
    key = _check_timm_name(name)
    if isinstance(weights, str) and weights.upper() == "DEFAULT":
        if not timm_pretrained_available(key):
            raise WeightsUnavailableError(
                f"timm's pretrained weights for {key!r} are not in the Hugging Face cache (HF_HOME) and the hub "
                f"cannot be reached from here. Online, they are downloaded on first use; offline, save a state dict "
                f"of the model elsewhere and pass it as weights=path, or use weights=None for random weights.")
        try:
            model = timm.create_model(key, pretrained=True, **kwargs)
        except CnnvisError:
            raise
        except Exception as exc:  # offline: huggingface_hub / urllib / OSError, or no pretrained tag
            raise WeightsUnavailableError(
                f"timm's pretrained weights for {key!r} cannot be had here ({type(exc).__name__}: "
                f"{str(exc)[:200]}). Online, they are downloaded into the Hugging Face cache "
                f"(HF_HOME); offline, save a state dict of the model and pass it as weights=path, "
                f"or use weights=None for random weights.") from exc
        description = f"timm {key}, pretrained weights"
    elif weights is None:
        model = timm.create_model(key, pretrained=False, **kwargs)
        description = f"timm {key}, random weights"
    else:
        label, state = _read_weights(key, weights)
        model = timm.create_model(key, pretrained=False, **kwargs)
        _load(key, model, state)
        description = f"timm {key}, weights from {label}"
    model.eval()
    transform, size, _config = timm_transform(model)
    return ZooModel(model, transform, _categories(model), size, description)


# --------------------------------------------------------------------------- files
def _read_source(source: Source) -> tuple[str, bytes]:
    """``(label, bytes)`` of a path, bytes or binary file object."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        label, data = "in-memory bytes", bytes(source)
    elif hasattr(source, "read"):
        label = os.path.basename(str(getattr(source, "name", ""))) or "in-memory file"
        data = source.read(MAX_FILE_BYTES + 1)
        if not isinstance(data, (bytes, bytearray)):
            raise InputError(f"The model file {label} must be opened in binary mode.")
    elif isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        label = os.path.basename(path) or path
        if not os.path.isfile(path):
            raise InputError(f"No model file {path!r}.")
        if os.path.getsize(path) > MAX_FILE_BYTES:
            raise InputError(f"The model file {label} is over {MAX_FILE_BYTES // 1024 ** 3} GB.")
        with open(path, "rb") as handle:
            data = handle.read()
    else:
        raise InputError(f"Give a model file as a path, bytes or a binary file object, not {type(source).__name__}.")
    if len(data) > MAX_FILE_BYTES:
        raise InputError(f"The model file {label} is over {MAX_FILE_BYTES // 1024 ** 3} GB.")
    if not data:
        raise InputError(f"The model file {label} is empty.")
    return label, bytes(data)


def file_format(data: bytes) -> str:
    """``"pt2"`` (a zip holding a torch.export archive), ``"onnx"`` (an ONNX protobuf),
    ``"zip"`` (another zip), ``"pickle"`` or ``"unknown"``, from the content."""
    if data[:4] == b"PK\x03\x04":
        try:
            names = zipfile.ZipFile(io.BytesIO(data)).namelist()
        except zipfile.BadZipFile:
            return "damaged zip"
        if any(n.endswith("/archive_format") or n == "archive_format" for n in names) and \
                any("/models/" in n and n.endswith(".json") for n in names):
            return "pt2"
        return "zip"
    if data[:1] == b"\x80" and data[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "pickle"
    # An ONNX ModelProto starts with field 1 (ir_version, varint: 0x08) and has a graph (field 7).
    if data[:1] == b"\x08" and b"\x3a" in data[:4096]:
        return "onnx"
    return "unknown"


def file_model(source: Source, input_size: Sequence[int] | None = None, mean: Sequence[float] | None = None,
               std: Sequence[float] | None = None, categories: Sequence[str] | None = None) -> ZooModel:
    """A ``.pt2`` (torch.export) or ``.onnx`` model from a path, bytes or a file object (see
    the module docstring). Wrong or truncated files raise :class:`InputError` or
    :class:`UnsafeWeightsError`, with what the file seems to be; nothing in it is executed."""
    label, data = _read_source(source)
    kind = file_format(data)
    if kind == "pt2":
        model, extra, shape = _load_pt2(data, label)
    elif kind == "onnx":
        model, shape = _load_onnx(data, label)
        extra = {}
    elif kind == "pickle":
        raise UnsafeWeightsError(f"{label} is a Python pickle (torch.save of a model?): it was refused and NOT "
                                 "executed. Export the model with torch.export.save(torch.export.export(model, "
                                 "(x,)), 'model.pt2') or torch.onnx.export, and load that.")
    elif kind == "damaged zip":
        raise InputError(f"{label} is a damaged or truncated zip file (a .pt2 cut short in the upload or the "
                         "copy?); save or copy it again.")
    elif kind == "zip":
        raise InputError(f"{label} is a zip file but not a torch.export archive (a torch.save checkpoint? a damaged "
                         "file?). Save the model with torch.export.save, or give a state dict to a known "
                         "architecture instead.")
    else:
        raise InputError(f"{label} is neither a torch.export program (.pt2) nor an ONNX model (.onnx); it may be "
                         "another format, or damaged.")
    size = _size(input_size, extra.get("input_size"), shape, label)
    mean = _triple(mean if mean is not None else extra.get("mean"), IMAGENET_MEAN, "mean")
    std = _triple(std if std is not None else extra.get("std"), IMAGENET_STD, "std")
    names = list(categories) if categories is not None else extra.get("categories")
    transform = _transform(size, mean, std)
    what = "torch.export program" if kind == "pt2" else "ONNX model"
    return ZooModel(model.eval(), transform, list(names) if names else None, size, f"{label} ({what})")


def _transform(size: tuple[int, int], mean: tuple[float, ...], std: tuple[float, ...]):
    from torchvision.transforms import v2
    if mean == tuple(IMAGENET_MEAN) and std == tuple(IMAGENET_STD):
        return default_transform(size)
    return v2.Compose([v2.ToImage(), v2.Resize(list(size), antialias=True), v2.ToDtype(torch.float32, scale=True),
                       v2.Normalize(list(mean), list(std))])


def _triple(value: object, default: Sequence[float], what: str) -> tuple[float, ...]:
    if value is None:
        return tuple(float(v) for v in default)
    try:
        values = tuple(float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError) as exc:
        raise InputError(f"The {what} must be three numbers (R, G, B), got {value!r}.") from exc
    if len(values) != 3 or (what == "std" and any(v <= 0 for v in values)):
        raise InputError(f"The {what} must be three numbers (R, G, B){' above 0' if what == 'std' else ''}, "
                         f"got {value!r}.")
    return values


def _size(given: object, carried: object, shape: Sequence[object] | None, label: str) -> tuple[int, int]:
    for value in (given, carried):
        if value is None:
            continue
        try:
            h, w = (int(value), int(value)) if isinstance(value, int) else (int(value[0]), int(value[-1]))
        except (TypeError, ValueError, IndexError) as exc:
            raise InputError(f"input_size must be (height, width), got {value!r}.") from exc
        if h < 1 or w < 1:
            raise InputError(f"input_size must be positive, got {value!r}.")
        return (h, w)
    if shape is not None and len(shape) == 4 and all(isinstance(s, int) and s > 0 for s in shape[-2:]):
        return (int(shape[-2]), int(shape[-1]))
    return (224, 224)


def _check_pt2(data: bytes, label: str) -> dict:
    """Refuse a torch.export archive whose loading would unpickle anything; return its extra JSON."""
    archive = zipfile.ZipFile(io.BytesIO(data))
    bad = archive.testzip()
    if bad is not None:
        raise InputError(f"{label} is damaged (the entry {bad!r} fails its checksum).")
    names = archive.namelist()
    unsafe = f"{label} stores Python objects that loading would unpickle (which can run code): it was refused and " \
             "NOT executed. Export models whose weights and constants are plain tensors."
    for name in names:
        folder, base = os.path.split(name)
        if folder.endswith(("data/weights", "data/constants")) and base.endswith(".pt"):
            raise UnsafeWeightsError(unsafe)  # the legacy, pickled weights format
        if base.endswith(("_config.json",)) and folder.endswith(("data/weights", "data/constants")):
            try:
                config = json.loads(archive.read(name))
            except ValueError as exc:
                raise InputError(f"{label} is damaged ({name} is not JSON).") from exc
            for entry in (config.get("config") or {}).values():
                path = str(entry.get("path_name", ""))
                if entry.get("use_pickle") or (folder.endswith("constants") and not path.startswith("tensor")):
                    raise UnsafeWeightsError(unsafe)
        if "/sample_inputs/" in name and name.endswith(".pt"):
            try:
                torch.load(io.BytesIO(archive.read(name)), weights_only=True)
            except Exception as exc:
                raise UnsafeWeightsError(unsafe) from exc
    extra: dict = {}
    for name in names:
        if name.endswith(f"/extra/{EXTRA_FILE}"):
            try:
                extra = json.loads(archive.read(name))
            except ValueError as exc:
                raise InputError(f"{label}: its {EXTRA_FILE} is not JSON.") from exc
    return extra if isinstance(extra, dict) else {}


def _load_pt2(data: bytes, label: str) -> tuple[nn.Module, dict, Sequence[object] | None]:
    try:
        extra = _check_pt2(data, label)
        program = torch.export.load(io.BytesIO(data))
        module = torch.export.unflatten(program)
    except CnnvisError:
        raise
    except Exception as exc:  # truncated zip, unknown ops, a version mismatch…
        raise InputError(f"{label} cannot be loaded as a torch.export program (damaged, truncated, or saved by "
                         f"another torch version?): {type(exc).__name__}: {str(exc)[:300]}") from exc
    shape = None
    placeholders = [node for node in program.graph.nodes if node.op == "placeholder"]
    user = set(program.graph_signature.user_inputs)
    for node in placeholders:
        if node.name in user and hasattr(node.meta.get("val"), "shape"):
            shape = [int(s) if isinstance(s, int) else None for s in node.meta["val"].shape]
            break
    return module, extra, shape


def _load_onnx(data: bytes, label: str) -> tuple[nn.Module, Sequence[object] | None]:
    try:
        import onnx
        import onnx2torch
    except ImportError as exc:
        raise CnnvisError("Loading ONNX models needs the optional packages onnx and onnx2torch: "
                          "pip install onnx onnx2torch.") from exc
    try:
        proto = onnx.load_model_from_string(data)
        onnx.checker.check_model(proto)
    except Exception as exc:
        raise InputError(f"{label} is not a readable ONNX model (damaged, truncated or another format): "
                         f"{type(exc).__name__}: {str(exc)[:300]}") from exc
    opsets = {op.domain or "ai.onnx": op.version for op in proto.opset_import}
    try:
        module = onnx2torch.convert(proto)
    except Exception as exc:
        raise ModelError(f"{label} uses ONNX operators onnx2torch cannot convert (opsets {opsets}): "
                         f"{type(exc).__name__}: {str(exc)[:300]}. Standard ai.onnx operators of opsets 9-17 "
                         "convert; re-export with one of those.") from exc
    shape = None
    if proto.graph.input:
        dims = proto.graph.input[0].type.tensor_type.shape.dim
        shape = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    return module, shape


# --------------------------------------------------------------------------- factories
def factory_result(target: str) -> object:
    """Import ``"package.module:function"`` and call the function with no arguments."""
    if not isinstance(target, str) or target.count(":") != 1:
        raise InputError(f"A model factory is 'package.module:function', got {target!r}.")
    module_name, function_name = (part.strip() for part in target.split(":"))
    if not module_name or not function_name:
        raise InputError(f"A model factory is 'package.module:function', got {target!r}.")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelError(f"Cannot import {module_name!r} for the model factory {target!r}: {exc}") from exc
    function = getattr(module, function_name, None)
    if not callable(function):
        raise ModelError(f"{module_name!r} has no function {function_name!r} (model factory {target!r}).")
    return function()


def factory_model(target: str) -> ZooModel | object:
    """A :class:`ZooModel` for a factory returning an ``nn.Module``, or what it returned when
    that is an engine (any object with ``model`` and ``preprocess``)."""
    result = factory_result(target)
    if isinstance(result, nn.Module):
        size = (224, 224)
        return ZooModel(result.eval(), None, _categories(result), size, f"{target}()")
    if hasattr(result, "model") and hasattr(result, "preprocess"):
        return result
    raise ModelError(f"The model factory {target!r} returned {type(result).__name__}, not a torch.nn.Module or an "
                     "Engine.")


__all__ = ["EXTRA_FILE", "MAX_FILE_BYTES", "factory_model", "factory_result", "file_format", "file_model",
           "imagenet_categories", "list_timm_models", "timm_model", "timm_transform"]
