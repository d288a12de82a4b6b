"""The torchvision classification zoo, and weights files to load into it.

:func:`list_architectures` names every classification model torchvision ships, and
:func:`build` makes one of them ready to visualise, as a :class:`ZooModel`: the model (in eval
mode, on the CPU), the preprocessing transform that fits it, its class names and input size.

Weights come from one of three places:

* ``weights="DEFAULT"`` (or a weights name such as ``"IMAGENET1K_V2"``): torchvision's
  pretrained ImageNet weights, downloaded once into torch.hub's cache. Offline, a
  :class:`~cnnvis_core.errors.WeightsUnavailableError` says where to put the file by hand.
* ``weights=None``: random weights, asked for explicitly (the transform and ImageNet class
  names are still those of the architecture).
* a weights file (path, bytes or binary file object): a state dict saved with
  ``torch.save(model.state_dict(), path)`` or with safetensors. Pickles holding anything but
  tensors are refused, never executed. Messages name the file: a path by its base name, a file
  object by its ``.name`` (so bytes wrapped as ``f = io.BytesIO(data); f.name = "resnet_full.pt"``
  are named too; plain bytes are "in-memory bytes").

:func:`pretrained_status` tells, before anything is built, whether pretrained weights can be had:
in torch.hub's cache, or downloadable (a bounded reachability probe, never a long hang).
"""

from __future__ import annotations

import difflib
import io
import os
import pickle
import socket
import threading
import time
import urllib.error
import urllib.parse
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

import safetensors.torch
import torch
import torchvision

from .errors import (
    ModelError,
    UnsafeWeightsError,
    WeightsError,
    WeightsMismatchError,
    WeightsUnavailableError,
)

WeightsSpec = str | None | os.PathLike | bytes | BinaryIO
"""What :func:`build` accepts as ``weights``."""

_DEFAULT_INPUT_SIZE = (224, 224)
_CONTAINER_KEYS = ("state_dict", "model_state_dict", "model")
_WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.")
_AUX_PREFIXES = ("aux1.", "aux2.", "AuxLogits.")
_MAX_EXAMPLES = 3
_SAVE_ADVICE = (
    "Re-save it as a plain state dict, torch.save(model.state_dict(), path), or as "
    "safetensors (safetensors.torch.save_file(model.state_dict(), path)), and load that."
)


@dataclass(frozen=True)
class ZooModel:
    """A built model with what is needed to feed it and to read its output."""

    model: torch.nn.Module
    transform: Callable | None
    categories: list[str] | None
    input_size: tuple[int, int]
    description: str


# --------------------------------------------------------------------------- architectures


def list_architectures() -> list[str]:
    """Return the sorted names of torchvision's classification models (``resnet50``, …)."""
    return sorted(torchvision.models.list_models(module=torchvision.models))


def _check_name(name: str) -> str:
    """Return the architecture name normalised, or raise ModelError with suggestions."""
    if not isinstance(name, str):
        raise ModelError(f"The architecture name must be a string, not {type(name).__name__}.")
    known = list_architectures()
    key = name.strip().lower()
    if key in known:
        return key
    close = difflib.get_close_matches(key, known, n=3)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ModelError(
        f"Unknown architecture {name!r}.{hint} "
        "Call list_architectures() for the names of all available models."
    )


def _new_model(name: str, **kwargs: Any) -> torch.nn.Module:
    """Build ``name`` with random weights (torchvision's init warnings silenced)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The default weight initialization")
        return torchvision.models.get_model(name, weights=None, **kwargs)


# --------------------------------------------------------------------------- build


def build(name: str, weights: WeightsSpec = "DEFAULT", *, progress: bool = False) -> ZooModel:
    """Build the torchvision classifier ``name`` with the given weights, in eval mode on the CPU.

    ``weights`` is ``"DEFAULT"`` or a weights name of the architecture (pretrained, downloaded
    into torch.hub's cache when needed), ``None`` (random weights) or a state dict file given
    as a path, bytes or a binary file object (``.pth``/``.pt`` or safetensors).
    """
    arch = _check_name(name)
    member = _weights_member(arch, weights) if isinstance(weights, str) else None
    if weights is None:
        zoo = _build_random(arch)
    elif member is not None:
        zoo = _build_pretrained(arch, member, progress)
    else:
        zoo = _build_from_file(arch, weights)
    zoo.model.eval()
    return zoo


def _weights_member(arch: str, text: str) -> Any | None:
    """Return the weights enum member of ``arch`` named ``text`` (``DEFAULT``, ``X_Weights.Y``)."""
    enum = torchvision.models.get_model_weights(arch)
    member = text.strip()
    if member.startswith(enum.__name__ + "."):
        member = member[len(enum.__name__) + 1 :]
    return enum.__members__.get(member)


def _default_weights(arch: str) -> Any:
    """Return the DEFAULT weights enum member of ``arch``."""
    return torchvision.models.get_model_weights(arch)["DEFAULT"]


def _input_size(transform: Any) -> tuple[int, int]:
    """Return (height, width) of the transform's centre crop, else 224×224."""
    crop = getattr(transform, "crop_size", None)
    if isinstance(crop, int):
        return (crop, crop)
    if isinstance(crop, (list, tuple)) and crop:
        return (int(crop[0]), int(crop[-1]))
    return _DEFAULT_INPUT_SIZE


def _zoo_model(model: torch.nn.Module, w: Any, description: str) -> ZooModel:
    """Wrap ``model`` with the transform, categories and input size of weights ``w``."""
    transform = w.transforms()
    categories = list(w.meta.get("categories") or []) or None
    return ZooModel(model, transform, categories, _input_size(transform), description)


def _build_random(arch: str) -> ZooModel:
    """Build ``arch`` with random weights, but the DEFAULT weights' transform and categories.

    A model built for another input size than the DEFAULT weights' (``vit_h_14``: DEFAULT is the
    518 px SWAG checkpoint, the random model is built for 224 px) takes the transform of the
    architecture's weights whose crop fits the model (``IMAGENET1K_SWAG_LINEAR_V1``)."""
    model = _new_model(arch)
    weights = _default_weights(arch)
    size = getattr(model, "image_size", None)
    if isinstance(size, int) and _input_size(weights.transforms()) != (size, size):
        fitting = [w for w in torchvision.models.get_model_weights(arch) if _input_size(w.transforms()) == (size, size)]
        if fitting:
            weights = fitting[0]
    return _zoo_model(model, weights, f"{arch}, random weights")


def _build_pretrained(arch: str, w: Any, progress: bool) -> ZooModel:
    """Build ``arch`` with torchvision's pretrained weights ``w`` (cache, else download)."""
    try:
        model = torchvision.models.get_model(arch, weights=w, progress=progress)
    except (urllib.error.URLError, OSError, RuntimeError) as exc:  # HTTPError is a URLError
        raise WeightsUnavailableError(_unavailable_message(arch, w, exc)) from exc
    kind = "ImageNet weights" if "IMAGENET" in w.name else "pretrained weights"
    return _zoo_model(model, w, f"{arch}, {kind} {w}")


def _unavailable_message(arch: str, w: Any, exc: BaseException) -> str:
    """Explain why pretrained weights could not be had, and what to do instead."""
    cache = _cache_path(w)
    if os.path.exists(cache):
        what = (
            f"The pretrained weights {w} for {arch} are in the cache at {cache}, but could "
            f"not be read ({exc}); the file is probably damaged or incomplete. Delete it to "
            f"download it again, or replace it with a good copy of {w.url}."
        )
    else:
        what = (
            f"The pretrained weights {w} for {arch} could not be downloaded (probably no "
            f"internet connection here: {exc}). Download {w.url} elsewhere and put the file "
            f"at {cache} (exactly that path); it is then used without a download."
        )
    return f"{what} {unavailable_advice(arch)}"


def unavailable_advice(arch: str) -> str:
    """The last sentence of a :class:`WeightsUnavailableError`'s message: the library's ways out
    (an application replaces it with its own words for the same choices)."""
    return (
        "Alternatively, pass weights=<path to a weights file> to load a state dict "
        f"from a file, or weights=None to build {arch} with random (untrained) weights."
    )


# --------------------------------------------------------------------------- availability


def _cache_path(w: Any) -> str:
    """Where torch.hub keeps (or would keep) the file of weights ``w``."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(w.url))


@dataclass(frozen=True)
class PretrainedStatus:
    """Whether pretrained weights can be had without building anything.

    ``cached``: the file is in torch.hub's cache (``path``); ``reachable``: the download server
    answered a quick probe (None when the cache made the probe unnecessary). ``available`` is
    either of the two.
    """

    arch: str
    weights: str
    path: str
    url: str
    cached: bool
    reachable: bool | None

    @property
    def available(self) -> bool:
        return self.cached or bool(self.reachable)


#: how long a probe of the download server may take, and how long its answer is remembered
PROBE_TIMEOUT_S = 1.0
PROBE_MEMORY_S = 300.0
_probes: dict[str, tuple[float, bool]] = {}
_probes_lock = threading.Lock()


def download_reachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether the host of ``url`` accepts a TCP connection within ``timeout`` seconds.

    The probe runs in a daemon thread that is waited for at most ``timeout`` + 0.5 s, so a slow
    name lookup cannot hang the caller either; the answer is remembered per host for
    :data:`PROBE_MEMORY_S` seconds. Offline it answers False at once (the lookup fails)."""
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    now = time.monotonic()
    with _probes_lock:
        known = _probes.get(host)
    if known is not None and now - known[0] < PROBE_MEMORY_S:
        return known[1]
    answer: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                answer.append(True)
        except OSError:
            answer.append(False)

    worker = threading.Thread(target=probe, name="cnnvis-weights-probe", daemon=True)
    worker.start()
    worker.join(timeout + 0.5)
    reachable = bool(answer and answer[0])
    with _probes_lock:
        _probes[host] = (now, reachable)
    return reachable


def pretrained_status(name: str, weights: str = "DEFAULT") -> PretrainedStatus:
    """Can torchvision's pretrained ``weights`` of ``name`` be had here? The cache is looked at
    first; only when the file is not there is the download server probed (bounded, see
    :func:`download_reachable`). Raises :class:`ModelError` for an unknown architecture or
    weights name."""
    arch = _check_name(name)
    member = _weights_member(arch, weights)
    if member is None:
        raise ModelError(f"{weights!r} is no weights name of {arch}.")
    path = _cache_path(member)
    cached = os.path.isfile(path)
    reachable = None if cached else download_reachable(member.url)
    return PretrainedStatus(arch, str(member), path, member.url, cached, reachable)


# --------------------------------------------------------------------------- weights files


def _build_from_file(arch: str, weights: WeightsSpec) -> ZooModel:
    """Build ``arch`` and load the state dict read from a path, bytes or file object."""
    label, state = _read_weights(arch, weights)
    model, num_classes = _fitted_model(arch, state)
    _load(arch, model, state)
    zoo = _zoo_model(model, _default_weights(arch), f"{arch}, weights from {label}")
    if zoo.categories is None or len(zoo.categories) != num_classes:
        zoo = ZooModel(
            model,
            zoo.transform,
            [f"class {i}" for i in range(num_classes)],
            zoo.input_size,
            f"{zoo.description} ({num_classes} classes)",
        )
    return zoo


def _read_weights(arch: str, weights: WeightsSpec) -> tuple[str, dict[str, torch.Tensor]]:
    """Return (a label naming the source, its state dict) for a path, bytes or file object."""
    if isinstance(weights, (bytes, bytearray, memoryview)):
        label, obj = "in-memory bytes", _load_bytes(bytes(weights), "in-memory bytes", False)
    elif hasattr(weights, "read"):
        label = os.path.basename(str(getattr(weights, "name", ""))) or "in-memory file"
        data = weights.read()
        if not isinstance(data, (bytes, bytearray)):
            raise WeightsError(f"The weights file object {label} must be opened in binary mode.")
        obj = _load_bytes(bytes(data), label, label.lower().endswith(".safetensors"))
    elif isinstance(weights, (str, os.PathLike)):
        path = os.fspath(weights)
        label = os.path.basename(path) or path
        if not os.path.isfile(path):
            raise WeightsError(_no_file_message(arch, path))
        obj = _load_path(path, label)
    else:
        raise WeightsError(
            f"Unusable weights {type(weights).__name__}: give 'DEFAULT', a weights name, "
            "None, a file path, bytes or a binary file object."
        )
    return label, _unwrap(obj, label)


def _no_file_message(arch: str, path: str) -> str:
    """Explain a weights string that is neither a file nor a weights name of ``arch``."""
    names = ", ".join(torchvision.models.get_model_weights(arch).__members__)
    return (
        f"No weights file {path!r} (and it is no weights name of {arch} either: "
        f"{names}). Give the path to a state dict file, 'DEFAULT', or None for random weights."
    )


def _looks_like_safetensors(head: bytes, size: int) -> bool:
    """Tell whether a file starting with ``head`` of ``size`` bytes is in safetensors format."""
    if len(head) < 9 or head[8:9] != b"{":
        return False
    return int.from_bytes(head[:8], "little") <= size - 8


def _load_path(path: str, label: str) -> Any:
    """Read the weights file at ``path`` (safetensors or torch.save)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(9)
        size = os.path.getsize(path)
    except OSError as exc:
        raise WeightsError(f"Cannot read the weights file {label}: {exc}") from exc
    if path.lower().endswith(".safetensors") or _looks_like_safetensors(head, size):
        return _safetensors(lambda: safetensors.torch.load_file(path, device="cpu"), label)
    return _torch_load(path, label)


def _load_bytes(data: bytes, label: str, safetensors_name: bool) -> Any:
    """Read weights held in memory (safetensors or torch.save)."""
    if safetensors_name or _looks_like_safetensors(data[:9], len(data)):
        return _safetensors(lambda: safetensors.torch.load(data), label)
    return _torch_load(io.BytesIO(data), label)


def _safetensors(read: Callable[[], Any], label: str) -> Any:
    """Run a safetensors reader, turning its failures into WeightsError."""
    try:
        return read()
    except Exception as exc:  # safetensors raises its own SafetensorError, among others
        message = f"The weights file {label} is not a readable safetensors file: {exc}"
        raise WeightsError(message) from exc


def _torch_load(source: str | BinaryIO, label: str) -> Any:
    """``torch.load`` with ``weights_only=True``; refuse pickles holding Python objects."""
    try:
        return torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "global" in str(exc).lower():  # a class or function to import and call: refused
            raise UnsafeWeightsError(_unsafe_message(label)) from exc
        raise WeightsError(
            f"The weights file {label} is neither a torch.save file nor safetensors "
            "(it was not executed)."
        ) from exc
    except Exception as exc:  # truncated zip (RuntimeError), empty (EOFError), text (KeyError)…
        raise WeightsError(
            f"The weights file {label} cannot be read as a torch.save file or safetensors "
            f"(damaged, truncated or another format?): {type(exc).__name__}: {exc}"
        ) from exc


def _unsafe_message(label: str) -> str:
    """Explain why a pickle with Python objects was refused."""
    return (
        f"The weights file {label} contains Python objects other than tensors (for example a "
        "whole pickled model, or code to run), so it was refused and NOT executed. "
        + _SAVE_ADVICE
    )


def _unwrap(obj: Any, label: str) -> dict[str, torch.Tensor]:
    """Return the state dict inside ``obj``: unwrap checkpoints, strip ``module.`` prefixes."""
    if isinstance(obj, torch.nn.Module):  # only reachable if torch ever allows it
        raise UnsafeWeightsError(_unsafe_message(label))
    if isinstance(obj, Mapping) and not _is_state_dict(obj):
        for key in _CONTAINER_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise WeightsError(f"The weights file {label} holds no state dict (found {_kind(obj)}).")
    bad = [k for k, v in obj.items() if not (isinstance(k, str) and isinstance(v, torch.Tensor))]
    if bad:
        raise WeightsError(
            f"The weights file {label} is not a state dict: {len(bad)} entries are not tensors "
            f"(e.g. {', '.join(repr(k) for k in bad[:_MAX_EXAMPLES])}). " + _SAVE_ADVICE
        )
    return _strip_prefixes(obj)


def _is_state_dict(obj: Mapping) -> bool:
    """Tell whether every value of ``obj`` is a tensor."""
    return all(isinstance(v, torch.Tensor) for v in obj.values())


def _kind(obj: Any) -> str:
    """Describe ``obj`` briefly for an error message."""
    return "an empty dict" if isinstance(obj, Mapping) else f"a {type(obj).__name__}"


def _strip_prefixes(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove wrapper prefixes (DataParallel's ``module.``…) shared by all keys."""
    metadata = getattr(state, "_metadata", None)
    prefix = next((p for p in _WRAPPER_PREFIXES if all(k.startswith(p) for k in state)), None)
    while prefix is not None:
        state = OrderedDict((k[len(prefix) :], v) for k, v in state.items())
        metadata = _strip_metadata(metadata, prefix)
        prefix = next((p for p in _WRAPPER_PREFIXES if all(k.startswith(p) for k in state)), None)
    result = OrderedDict(state)
    if metadata is not None:
        result._metadata = metadata  # type: ignore[attr-defined]  # module versions
    return result


def _strip_metadata(metadata: Mapping | None, prefix: str) -> OrderedDict | None:
    """Apply a prefix removal to the per-module version metadata of a state dict."""
    if metadata is None:
        return None
    root = prefix.rstrip(".")
    stripped = OrderedDict()
    for key, value in metadata.items():
        if key == root:
            stripped[""] = value
        elif key.startswith(prefix):
            stripped[key[len(prefix) :]] = value
    return stripped


# --------------------------------------------------------------------------- fitting


def _classifier_key(expected: Mapping[str, torch.Tensor]) -> str | None:
    """Return the key of the model's last weight with 2+ dimensions (the class output)."""
    for key in reversed(list(expected)):
        if key.endswith("weight") and expected[key].ndim >= 2:
            return key
    return None


def _fitted_model(arch: str, state: Mapping[str, torch.Tensor]) -> tuple[torch.nn.Module, int]:
    """Build ``arch`` shaped like ``state``: its number of classes, without aux heads if so."""
    kwargs: dict[str, Any] = {}
    model = _new_model(arch)
    expected = model.state_dict()
    key = _classifier_key(expected)
    num_classes = int(expected[key].shape[0]) if key else 1000
    found = state.get(key) if key else None
    if found is not None and found.ndim == expected[key].ndim and found.shape[0] != num_classes:
        num_classes = int(found.shape[0])
        kwargs["num_classes"] = num_classes
        model = _new_model(arch, **kwargs)
    missing, _, _ = _differences(model.state_dict(), state)
    if missing and all(k.startswith(_AUX_PREFIXES) for k in missing):
        model = _new_model(arch, aux_logits=False, **kwargs)  # googlenet / inception_v3
    return model, num_classes


def _differences(
    expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]
) -> tuple[list[str], list[str], list[str]]:
    """Return (missing keys, unexpected keys, shape mismatches as readable strings)."""
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    return missing, unexpected, shapes


def _examples(items: list[str]) -> str:
    """Join the first few items, with an ellipsis when there are more."""
    shown = ", ".join(items[:_MAX_EXAMPLES])
    return shown + (", …" if len(items) > _MAX_EXAMPLES else "")


def _mismatch_message(
    arch: str, missing: list[str], unexpected: list[str], shapes: list[str]
) -> str:
    """Describe why a state dict does not fit ``arch``."""
    parts = []
    if missing:
        keys = "key" if len(missing) == 1 else "keys"
        parts.append(f"{len(missing)} {keys} missing (e.g. {_examples(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {_examples(unexpected)})")
    if shapes:
        parts.append(f"{len(shapes)} with a different shape (e.g. {_examples(shapes)})")
    return (
        f"The weights do not fit {arch}: {', '.join(parts)}. Check that the file was saved from "
        f"a {arch} model (model.state_dict()), or pick the architecture it was saved from."
    )


def _load(arch: str, model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load ``state`` into ``model`` strictly, or raise WeightsMismatchError explaining why."""
    expected = model.state_dict()
    missing, unexpected, shapes = _differences(expected, state)
    if missing or unexpected or shapes:
        raise WeightsMismatchError(_mismatch_message(arch, missing, unexpected, shapes))
    for key in expected:  # BatchNorm counters are often left out of saved files
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = expected[key].clone()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightsMismatchError(f"The weights do not fit {arch}: {exc}") from exc
