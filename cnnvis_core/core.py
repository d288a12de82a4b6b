"""The core every analysis takes: one resident, thread-safe model and what is known about it.

A :class:`ModelCore` owns the model (eval mode, parameters frozen, on the GPU when there is
one) and offers what every analysis needs and nothing more: the lock (:meth:`~ModelCore.session`),
the counted forward pass, the image → tensor step (:meth:`~ModelCore.preprocess`), the layer
catalogue and module lookup, the class names, :meth:`~ModelCore.tap` (a hook on a named layer),
and ONE per-model cache (:attr:`~ModelCore.cache`) for whatever an analysis computes once per
model (a folded copy, a verified head, tuned batch sizes, optimised images).

The analyses (:mod:`.cam`, :mod:`.backprop`, :mod:`.deconv`, :mod:`.pruning`, :mod:`.optimize`)
are functions of a core and call each other directly; :class:`~cnnvis_core.engine.Engine`, the
documented facade, is a core with one method per analysis. The dashboard shares one core per
model between all browser sessions, so every call that touches the model holds the lock for
its duration and installs its hooks inside :func:`~cnnvis_core.hooks.tapped` blocks.
"""

from __future__ import annotations

import copy
import itertools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision.transforms import v2

from . import priority
from .errors import InputError, ModelError
from .hooks import Action, Before, Tap, eval_mode
from .layers import LayerInfo, find_layer, probe_layers
from .normalization import IMAGENET_MEAN, IMAGENET_STD

ImageLike = Image.Image | torch.Tensor | np.ndarray
T = TypeVar("T")


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


class ModelCache:
    """What analyses compute once per model, kept as long as the core (thread-safe).

    :meth:`get` returns the value under ``key``, building it with ``build()`` the first time.
    The build runs outside the cache's own lock (it may take the model's session), so two
    threads may both build; the first to finish wins and both get that value.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[object, object] = {}

    def get(self, key: object, build: Callable[[], T]) -> T:
        with self._lock:
            if key in self._items:
                return self._items[key]  # type: ignore[return-value]
        value = build()
        with self._lock:
            return self._items.setdefault(key, value)  # type: ignore[return-value]

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._items


class ModelLock:
    """The model's lock: re-entrant, and quick calls go ahead of background batches.

    A long job (Score-CAM's masked passes, a filter optimisation, a data set job) holds the lock
    one batch at a time with ``background=True``; a quick call (a prediction, one gradient CAM, a
    layer capture) waiting for the lock is let in before the next background batch starts, so it
    waits at most for the batch in progress, not for the whole job. The thread that holds the lock
    may take it again (nested calls), whatever its kind.
    """

    def __init__(self) -> None:
        self._state = threading.Condition(threading.Lock())
        self._owner: int | None = None
        self._depth = 0
        self._quick_waiting = 0

    @contextmanager
    def hold(self, background: bool = False) -> Iterator[None]:
        """Hold the lock for the block; ``background`` for one batch of a long job (implied in a
        thread that made itself a background thread, :func:`cnnvis_core.priority.lower_this_thread`,
        which also waits for the pages being drawn first, :func:`~cnnvis_core.priority.give_way`)."""
        me = threading.get_ident()
        background = background or priority.is_background()
        if background and self._owner != me:
            priority.give_way()
        with self._state:
            if self._owner == me:
                self._depth += 1
            else:
                self._wait_turn(background)
                self._owner, self._depth = me, 1
        try:
            yield
        finally:
            with self._state:
                self._depth -= 1
                if self._depth == 0:
                    self._owner = None
                    self._state.notify_all()

    @property
    def held(self) -> bool:
        """Whether some thread holds the lock now."""
        with self._state:
            return self._owner is not None

    def _wait_turn(self, background: bool) -> None:
        """Wait (holding the condition) until the lock is free and, for a background batch, no quick
        call is waiting."""
        if background:
            self._state.wait_for(lambda: self._owner is None and self._quick_waiting == 0)
            return
        self._quick_waiting += 1
        try:
            self._state.wait_for(lambda: self._owner is None)
        finally:
            self._quick_waiting -= 1


def default_device() -> torch.device:
    """``cuda`` when a GPU is available, else ``cpu``."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_transform(input_size: tuple[int, int]) -> v2.Compose:
    """Resize to ``input_size``, scale to [0, 1], normalise with ImageNet's mean and std."""
    return v2.Compose([
        v2.ToImage(), v2.Resize(list(input_size), antialias=True),
        v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


class ModelCore:
    """A classifier made ready for analysis (see the module docstring).

    ``ModelCore(model, transform=None, categories=None, input_size=(224, 224), device=None)``:
    ``transform`` maps an RGB PIL image to a normalised ``(3, H, W)`` tensor (default: resize
    to ``input_size`` and ImageNet normalisation); ``categories`` names the classes
    (default ``"class 0"``, ``"class 1"``…); ``device`` defaults to ``cuda`` when available.
    The model is put in eval mode and its parameters are frozen. Its structure is taken as
    fixed from here on: submodules are listed once, and the layer catalogue is cached.
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
        #: what analyses compute once per model (see :class:`ModelCache`)
        self.cache = ModelCache()
        self._lock = ModelLock()
        self._layers: list[LayerInfo] | None = None
        self._categories = list(categories) if categories is not None else None
        self._modules: dict[str, nn.Module] = dict(self.model.named_modules())
        self._module_list = tuple(self._modules.values())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, device={self.device.type}, input_size={self.input_size})"

    # ------------------------------------------------------------------ the model
    @contextmanager
    def session(self, background: bool = False) -> Iterator[nn.Module]:
        """Exclusive use of the model for one call: the lock held, every module in eval mode.

        ``background=True`` for one batch of a long job: a quick call waiting for the model goes
        first (see :class:`ModelLock`)."""
        with self._lock.hold(background), eval_mode(self.model, self._module_list):
            yield self.model

    def replica(self) -> ModelCore:
        """A twin of this core for one background job: the same parameters and buffers (the very
        tensors, no copy), class names, layer catalogue, transform and pass counters, but its own
        module objects, lock and per-model :attr:`cache`.

        A job on the twin never holds this core's lock, so no caller of this core waits for the
        job's batch in progress — which matters when the job's thread runs only on spare CPU
        (:func:`cnnvis_core.priority.lower_this_thread`): under a load that keeps every core busy
        that batch could stall for as long as the load lasts. Its hooks sit on its own modules.
        What the twin should share of the cache, the caller seeds:
        ``twin.cache.get(key, lambda: value_of_this_core)``. :class:`ModelError` when the model
        cannot be copied (a caller then uses the core itself)."""
        self.layers()  # probed once, for both
        tensors = {id(t): t for t in itertools.chain(self.model.parameters(), self.model.buffers())}
        with self.session():  # no other call's hooks are on the modules while they are copied
            try:
                model = copy.deepcopy(self.model, memo=tensors)
            except Exception as error:  # whatever a model's own __deepcopy__ raises
                raise ModelError(f"The model {self.name} cannot be copied for a background job "
                                 f"({type(error).__name__}: {error}).") from error
        twin = copy.copy(self)
        twin.model, twin.cache, twin._lock = model, ModelCache(), ModelLock()
        twin._modules = dict(model.named_modules())
        twin._module_list = tuple(twin._modules.values())
        return twin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One counted forward pass of the model (call inside :meth:`session`)."""
        self.counters.add(forward=1)
        return self.model(x)

    @torch.no_grad()
    def logits(self, image: ImageLike) -> torch.Tensor:
        """Pre-softmax scores of one image, a 1-D CPU tensor (one counted forward pass)."""
        x = self.preprocess(image)
        with self.session():
            return self.forward(x)[0].float().cpu()

    @property
    def quick_passes(self) -> bool:
        """Whether a few dozen extra passes take a moment: on a GPU, or a model under 5 M parameters
        (the dashboard then runs optional analyses without being asked)."""
        return self.device.type == "cuda" or self.parameter_count < 5_000_000

    # ------------------------------------------------------------------ modules and layers
    def module(self, name: str) -> nn.Module:
        """The submodule called ``name`` (as in ``model.named_modules()``); ``KeyError`` if none."""
        return self._modules[name]

    def modules_of_type(self, kind: type) -> list[nn.Module]:
        """The submodules that are instances of ``kind``, in registration order."""
        return [module for module in self._module_list if isinstance(module, kind)]

    def named_modules_of_type(self, kind: type | tuple[type, ...]) -> list[str]:
        """Names of the submodules that are instances of ``kind``, in registration order."""
        return [name for name, module in self._modules.items() if name and isinstance(module, kind)]

    def layers(self) -> list[LayerInfo]:
        """Every module that produces a tensor, in execution order (one probe forward, cached)."""
        if self._layers is None:
            with self.session():
                x = torch.zeros(1, 3, *self.input_size, device=self.device)
                self.counters.add(forward=1)
                self._layers = probe_layers(self._modules, lambda: self.model(x))
        return list(self._layers)

    def layer(self, name: str) -> LayerInfo:
        """The :class:`LayerInfo` of one layer; :class:`LayerError` with suggestions if unknown."""
        return find_layer(self.layers(), name)

    def tap(self, name: str, action: Action, *, every_call: bool = False, stop: bool = False,
            before: Before | None = None) -> Tap:
        """A :class:`~cnnvis_core.hooks.Tap` on layer ``name`` acting on its last call per forward
        pass (the output the engine shows), unless ``every_call``; install it with
        :func:`~cnnvis_core.hooks.tapped`. :class:`LayerError` if there is no such layer."""
        info = self.layer(name)
        return Tap(self._modules[name], action, info.calls, every_call, stop, before)

    # ------------------------------------------------------------------ classes and inputs
    @property
    def categories(self) -> list[str]:
        """Class names, one per output of the model."""
        if self._categories is None:
            with self.session(), torch.no_grad():
                x = torch.zeros(1, 3, *self.input_size, device=self.device)
                n = int(self.forward(x).shape[-1])
            self._categories = [f"class {i}" for i in range(n)]
        return self._categories

    def preprocess(self, image: ImageLike, on_device: bool = True) -> torch.Tensor:
        """The ``(1, 3, H, W)`` tensor the model sees, on the core's device (on the CPU with
        ``on_device=False``, for a batch that moves to the device at once).

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
        x = _as_batch_of_one(x)
        return x.to(self.device, torch.float32) if on_device else x.float()


def stack_batch(inputs: list[torch.Tensor]) -> torch.Tensor:
    """Preprocessed ``(1, 3, H, W)`` inputs as one ``(B, 3, H, W)`` batch; :class:`InputError` when
    their sizes differ (a transform that does not resize)."""
    shapes = {tuple(x.shape) for x in inputs}
    if len(shapes) > 1:
        raise InputError(f"The preprocessed images differ in size ({', '.join(map(str, sorted(shapes)))}); "
                         "pass images of one size or use a model whose transform resizes them.")
    return torch.cat(inputs)


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
