"""The engine: one resident, thread-safe wrapper around an image classifier.

An :class:`Engine` owns the model (eval mode, parameters frozen, on the GPU when there is
one), knows how to turn an image into the tensor the model sees, lists the model's layers
and runs every analysis. The dashboard keeps one engine per model and shares it between
all browser sessions, so every call that touches the model holds the engine's lock for its
duration and installs its hooks inside context managers that remove them on exit: callers
in different threads never see each other's activations, and no hook outlives a call.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Callable, NamedTuple

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision.transforms import v2

from .errors import InputError, ModelError
from .hooks import capture_outputs, eval_mode
from .layers import LayerInfo, find_layer, probe_layers

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ImageLike = Image.Image | torch.Tensor | np.ndarray


class Prediction(NamedTuple):
    """One of the top-k classes: its index, its name and its softmax probability."""

    index: int
    label: str
    probability: float


class Counters:
    """Thread-safe tally of the model's forward and backward passes (tests and the UI read it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.forward = 0
        self.backward = 0

    def add(self, forward: int = 0, backward: int = 0) -> None:
        with self._lock:
            self.forward += forward
            self.backward += backward

    def snapshot(self) -> tuple[int, int]:
        """``(forward, backward)`` as one consistent pair."""
        with self._lock:
            return self.forward, self.backward


def default_device() -> torch.device:
    """``cuda`` when a GPU is available, else ``cpu``."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_transform(input_size: tuple[int, int]) -> v2.Compose:
    """Resize to ``input_size``, scale to [0, 1], normalise with ImageNet's mean and std."""
    return v2.Compose([
        v2.ToImage(), v2.Resize(list(input_size), antialias=True),
        v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


class Engine:
    """A classifier made ready for visualisation.

    ``Engine(model, transform=None, categories=None, input_size=(224, 224), device=None)``:
    ``transform`` maps an RGB PIL image to a normalised ``(3, H, W)`` tensor (default: resize
    to ``input_size`` and ImageNet normalisation); ``categories`` names the classes
    (default ``"class 0"``, ``"class 1"``…); ``device`` defaults to ``cuda`` when available.
    The model is put in eval mode and its parameters are frozen.
    """

    def __init__(self, model: nn.Module, transform: Callable | None = None,
                 categories: list[str] | None = None, input_size: tuple[int, int] = (224, 224),
                 device: str | torch.device | None = None, name: str | None = None) -> None:
        if not isinstance(model, nn.Module):
            raise ModelError(f"Engine needs a torch.nn.Module, got {type(model).__name__}.")
        self.device = torch.device(device) if device is not None else default_device()
        self.model = model.eval().to(self.device)
        for param in self.model.parameters():
            param.requires_grad_(False)
        #: number of parameters of the model
        self.parameter_count = sum(param.numel() for param in self.model.parameters())
        self.input_size = tuple(int(s) for s in input_size)
        self.transform = transform or default_transform(self.input_size)
        self.name = name or type(model).__name__
        self.counters = Counters()
        self._lock = threading.RLock()
        self._layers: list[LayerInfo] | None = None
        self._categories = list(categories) if categories is not None else None
        # The model's structure is taken as fixed from here on (layers() is cached too): its
        # submodules are listed once, not walked again around every call.
        self._modules: dict[str, nn.Module] = dict(self.model.named_modules())
        self._module_list = tuple(self._modules.values())
        self._default_cam_layer: str | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def demo(cls, device: str | torch.device | None = None) -> "Engine":
        """The bundled demo model (DemoNet trained on the procedural shapes), works offline."""
        from . import demo
        return cls(demo.load_model(), transform=demo.transform(), categories=demo.class_names(),
                   input_size=demo.INPUT_SIZE, device=device, name="demo")

    @classmethod
    def from_torchvision(cls, name: str, weights: object = "DEFAULT",
                         device: str | torch.device | None = None) -> "Engine":
        """A torchvision classification model by name.

        ``weights``: ``"DEFAULT"`` (pretrained, downloaded into ``TORCH_HOME`` when online),
        ``None`` (random weights, on purpose) or a state-dict file (path, bytes or binary
        file object; ``.pth``/``.pt`` loaded with ``weights_only=True``, or ``.safetensors``).
        """
        from . import zoo
        built = zoo.build(name, weights)
        return cls(built.model, transform=built.transform, categories=built.categories,
                   input_size=built.input_size, device=device, name=built.description)

    # ------------------------------------------------------------------ plumbing
    @contextmanager
    def session(self) -> Iterator[nn.Module]:
        """Exclusive use of the model for one call: the lock held, every module in eval mode."""
        with self._lock, eval_mode(self.model, self._module_list):
            yield self.model

    def module(self, name: str) -> nn.Module:
        """The submodule called ``name`` (as in ``model.named_modules()``); ``KeyError`` if none."""
        return self._modules[name]

    def modules_of_type(self, kind: type) -> list[nn.Module]:
        """The submodules that are instances of ``kind``, in registration order."""
        return [module for module in self._module_list if isinstance(module, kind)]

    @property
    def quick_passes(self) -> bool:
        """Whether a few dozen extra passes take a moment: on a GPU, or a model under 5 M parameters
        (the dashboard then runs optional analyses without being asked)."""
        return self.device.type == "cuda" or self.parameter_count < 5_000_000

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One counted forward pass of the model (call inside :meth:`session`)."""
        self.counters.add(forward=1)
        return self.model(x)

    @property
    def categories(self) -> list[str]:
        """Class names, one per output of the model."""
        if self._categories is None:
            n = self._output_size()
            self._categories = [f"class {i}" for i in range(n)]
        return self._categories

    def _output_size(self) -> int:
        with self.session(), torch.no_grad():
            x = torch.zeros(1, 3, *self.input_size, device=self.device)
            return int(self.forward(x).shape[-1])

    def __repr__(self) -> str:
        return f"Engine({self.name!r}, device={self.device.type}, input_size={self.input_size})"

    # ------------------------------------------------------------------ inputs
    def preprocess(self, image: ImageLike) -> torch.Tensor:
        """The ``(1, 3, H, W)`` tensor the model sees, on the engine's device.

        A PIL image (any mode; converted to RGB) or an ``H×W×3`` uint8 array goes through the
        model's transform; a tensor ``(1, 3, H, W)`` or ``(3, H, W)`` is taken as already
        preprocessed.
        """
        if isinstance(image, np.ndarray):
            image = _array_to_pil(image)
        if isinstance(image, Image.Image):
            x = self.transform(image.convert("RGB"))
        elif isinstance(image, torch.Tensor):
            x = image
        else:
            raise InputError(f"Expected a PIL image, an H×W×3 array or a tensor, got {type(image).__name__}.")
        return _as_batch_of_one(x).to(self.device, torch.float32)

    # ------------------------------------------------------------------ layers
    def layers(self) -> list[LayerInfo]:
        """Every module that produces a tensor, in execution order (one probe forward, cached)."""
        if self._layers is None:
            with self.session():
                x = torch.zeros(1, 3, *self.input_size, device=self.device)
                self.counters.add(forward=1)
                self._layers = probe_layers(self.model, x)
        return list(self._layers)

    def layer(self, name: str) -> LayerInfo:
        """The :class:`LayerInfo` of one layer; :class:`LayerError` with suggestions if unknown."""
        return find_layer(self.layers(), name)

    # ------------------------------------------------------------------ analyses
    @torch.no_grad()
    def logits(self, image: ImageLike) -> torch.Tensor:
        """Pre-softmax scores, a 1-D CPU tensor."""
        x = self.preprocess(image)
        with self.session():
            return self.forward(x)[0].float().cpu()

    def predict(self, image: ImageLike, k: int = 5) -> list[Prediction]:
        """The top-``k`` classes as ``(index, label, probability)``, most likely first."""
        return top_k(self.logits(image), self.categories, k)

    @torch.no_grad()
    def feature_maps(self, image: ImageLike, layers: str | Iterable[str]) -> dict[str, torch.Tensor]:
        """``{name: output}`` of the named layers from ONE forward pass, on the CPU.

        A conv layer gives a ``(C, H, W)`` tensor, a linear layer a ``(F,)`` vector (the batch
        dimension is dropped). Unknown names raise :class:`LayerError` before anything runs.
        """
        names = [layers] if isinstance(layers, str) else list(dict.fromkeys(layers))
        for name in names:
            self.layer(name)
        x = self.preprocess(image)
        with self.session() as model, capture_outputs(model, names) as outputs:
            self.forward(x)
        return {name: outputs[name][0].float().cpu() for name in names}

    # ------------------------------------------------------------------ saliency & deconvnet (issue 4, backprop)
    def saliency(self, image: ImageLike, method: str = "gradient", target: int | None = None):
        """Input-gradient saliency: ``gradient``, ``deconvnet``, ``guided`` or ``guided_gradcam``
        (see :mod:`cnnvis_core.backprop`); a :class:`~cnnvis_core.backprop.Saliency`."""
        from .backprop import saliency
        return saliency(self, image, method, target)

    def reconstruct(self, image: ImageLike, layer: str, channel: int, top_only: bool = False):
        """Deconvnet projection of one channel of ``layer`` to pixel space (Zeiler & Fergus;
        see :mod:`cnnvis_core.deconv`); a :class:`~cnnvis_core.deconv.Reconstruction`."""
        from .deconv import reconstruct
        return reconstruct(self, image, layer, channel, top_only)

    # ------------------------------------------------------------------ layers, kernels, dead channels (issue 3)
    def conv_layers(self) -> list[str]:
        """Names of the model's 2-D convolutions (the layers :meth:`kernels` accepts)."""
        from .kernels import conv_names
        return conv_names(self.model)

    def kernels(self, layer: str) -> torch.Tensor:
        """The weight ``(out, in / groups, kh, kw)`` of conv ``layer``, a float32 copy on the CPU;
        :class:`LayerError` naming the convolutions when ``layer`` is not one."""
        from .kernels import conv_weight
        with self.session() as model:
            return conv_weight(model, layer)

    def preprocess_batches(self, images: Iterable, batch_size: int = 16) -> Iterator[torch.Tensor]:
        """Any iterable of images → lazily preprocessed ``(B, 3, H, W)`` batches (B ≤ batch_size)."""
        from .pruning import preprocessed_batches
        return preprocessed_batches(self, images, batch_size)

    def channel_peaks(self, images: Iterable, layers: str | Iterable[str] | None = None, batch_size: int = 16):
        """Per layer, each channel's ``max |activation|`` over streamed ``images`` (a
        :class:`~cnnvis_core.pruning.ChannelPeaks`; ``.dead(eps)`` thresholds it)."""
        from .pruning import channel_peaks
        return channel_peaks(self, images, layers, batch_size)

    def dead_channels(self, images: Iterable, layers: str | Iterable[str] | None = None, eps: float = 0.0,
                      batch_size: int = 16):
        """Per layer, the channels with ``|activation| ≤ eps`` on every image (streamed in
        batches); a :class:`~cnnvis_core.pruning.DeadChannels`. ``layers=None``: every conv and
        ReLU with ``(C, H, W)`` maps."""
        from .pruning import dead_channels
        return dead_channels(self, images, layers, eps, batch_size)

    def verify_pruning(self, images: Iterable, dead, batch_size: int = 16):
        """Largest logit change and top-1 changes when the ``dead`` channels are zeroed by a
        forward hook; a :class:`~cnnvis_core.pruning.PruningCheck`."""
        from .pruning import verify_pruning
        return verify_pruning(self, images, dead, batch_size)

    # ------------------------------------------------------------------ filter optimisation (issue 5)
    def optimize(self, layer: str | None, units, objective: str = "channel", steps: int | None = None,
                 param: str | None = None, size: int | None = None, seed: int = 0, on_step=None,
                 preset: str = "lucid", position: tuple[int, int] | None = None, **settings):
        """Activation maximisation, one image per unit, all units as one batch (see
        :mod:`cnnvis_core.optimize`). ``objective``: ``channel`` | ``neuron`` (at ``position``,
        default centre) | ``class`` (``units`` are classes, ``layer`` ignored) | ``deepdream``;
        ``units``: an index, a list or ``"all"``; ``preset`` (``lucid``, ``multiscale``, ``keras``)
        with ``steps``, ``param``, ``size`` and any :class:`~cnnvis_core.optimize.Settings` field
        overriding it. ``on_step(step, total, preview)`` returning False cancels. Takes the session
        per step; cached per unit. An :class:`~cnnvis_core.optimize.OptimizationResult`."""
        from .optimize.run import optimize_units
        return optimize_units(self, layer, units, objective, seed=seed, on_step=on_step, preset=preset,
                              position=position, steps=steps, param=param, size=size, **settings)

    def optimize_objectives(self, objectives, keys=None, seed: int = 0, on_step=None, preset: str = "lucid",
                            **settings):
        """One image per composed objective (``channel(...) + 0.5 * neuron(...)``…), one batch, not cached."""
        from .optimize.run import optimize_objectives
        return optimize_objectives(self, objectives, keys, seed=seed, on_step=on_step, preset=preset, **settings)

    # ------------------------------------------------------------------ class activation maps (issue 4, CAM)
    def cam(self, image: ImageLike, method: str = "gradcam", layer: str | None = None,
            target: int | str | None = None, **options):
        """One class activation map (see :mod:`cnnvis_core.cam`): a
        :class:`~cnnvis_core.cam.CamResult` whose ``.map`` is H×W in [0, 1] at the resolution of
        :meth:`preprocess`'s tensor (overlay it on :meth:`model_view`). ``layer=None``: the last
        spatial layer; ``target=None``: the top-1 class by logit."""
        from .cam import compute
        targets = None if target is None else [target]
        return compute(self, image, [method], layer, targets, **options)[method][0]

    def cams(self, image: ImageLike, methods=None, layer: str | None = None, target: int | str | None = None,
             **options) -> dict:
        """``{method: CamResult}`` for several methods; ``cam``, ``gradcam``, ``gradcam++``,
        ``xgradcam`` and ``layercam`` all come from ONE forward and ONE backward pass (all of
        them when ``methods=None``, CAM only where the model allows it)."""
        from .cam import compute
        targets = None if target is None else [target]
        return {name: found[0] for name, found in compute(self, image, methods, layer, targets, **options).items()}

    def cam_targets(self, image: ImageLike, method: str = "gradcam", targets=5, layer: str | None = None,
                    **options) -> list:
        """One CamResult per class: ``targets`` an int ``k`` (the top-``k`` classes) or a list
        of classes; gradient methods share ONE forward and ONE batched backward, Score-CAM's
        kin one set of masked passes."""
        from .cam import compute
        top, chosen = (int(targets), None) if isinstance(targets, int) else (1, list(targets))
        return compute(self, image, [method], layer, chosen, top, **options)[method]

    def cam_layers(self) -> list[LayerInfo]:
        """The layers a CAM can use (spatial outputs), in execution order."""
        from .cam import cam_layers
        return cam_layers(self.layers())

    def default_cam_layer(self) -> str:
        """The layer ``layer=None`` means: the last spatial layer before global pooling."""
        if self._default_cam_layer is None:
            from .cam import default_layer
            self._default_cam_layer = default_layer(self.layers(), self.model).name
        return self._default_cam_layer

    def model_view(self, image: ImageLike):
        """The RGB PIL image of the tensor the model sees (after resize/crop), for overlays."""
        from .view import find_normalization, tensor_to_image
        return tensor_to_image(self.preprocess(image), find_normalization(self.transform))

    def faithfulness(self, image: ImageLike, saliency, target: int | str | None = None, steps: int = 32):
        """Deletion and insertion curves with their AUCs (Petsiuk et al., RISE) of any H×W map;
        a :class:`~cnnvis_core.cam.Faithfulness`."""
        from .cam import faithfulness
        return faithfulness(self, image, saliency, target, steps)


def top_k(logits: torch.Tensor, categories: list[str], k: int) -> list[Prediction]:
    """Softmax over ``logits`` and the ``k`` most probable classes."""
    probs = torch.softmax(logits.float(), dim=-1)
    values, indices = probs.topk(max(1, min(int(k), probs.numel())))
    return [Prediction(int(i), categories[int(i)] if int(i) < len(categories) else f"class {int(i)}",
                       float(p)) for p, i in zip(values, indices)]


def _array_to_pil(array: np.ndarray) -> Image.Image:
    if array.ndim == 3 and array.shape[2] == 3 and array.dtype == np.uint8:
        return Image.fromarray(array)
    raise InputError(f"An image array must be H×W×3 uint8, got shape {array.shape} and dtype {array.dtype}.")


def _as_batch_of_one(x: torch.Tensor) -> torch.Tensor:
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4 or x.shape[0] != 1 or x.shape[1] != 3:
        raise InputError(f"A preprocessed image must be a (1, 3, H, W) tensor, got {tuple(x.shape)}.")
    if not x.is_floating_point():
        raise InputError(f"A preprocessed image must be a float tensor, got {x.dtype}.")
    return x
