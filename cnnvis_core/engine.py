"""The engine: the documented facade over the core and every analysis.

An :class:`Engine` is a :class:`~cnnvis_core.core.ModelCore` (the model, its lock, the counted
forward, preprocessing, layers, one per-model cache) with one method per analysis. Each method
only hands the call on to the analysis module that does the work: :mod:`.features` (feature
maps), :mod:`.cam` (class activation maps and their faithfulness), :mod:`.backprop` (saliency),
:mod:`.deconv` (deconvnet), :mod:`.kernels`, :mod:`.pruning` (dead channels) and
:mod:`.optimize` (filter optimisation). Those take the core and call each other directly,
never through this facade, so a notebook can use them without it too.

The dashboard keeps one engine per model and shares it between all browser sessions: every call
that touches the model holds the lock for its duration and installs its hooks inside
:func:`~cnnvis_core.hooks.tapped` blocks, so callers in different threads never see each
other's activations and no hook outlives a call.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence

import torch
from PIL import Image

from . import backprop, deconv, features, kernels, loaders, pruning, zoo
from . import cam as cams
from . import demo as demo_model
from .core import ImageLike, ModelCore, default_device
from .layers import LayerInfo
from .normalization import IMAGENET_MEAN, IMAGENET_STD, find_normalization
from .optimize import run as optimization
from .optimize.loop import OnStep
from .optimize.objectives import Objective
from .optimize.run import OptimizationResult, Units
from .optimize.settings import Settings
from .spec import ModelSpec
from .targets import Prediction, Target, top_k
from .view import tensor_to_image

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "Engine", "ImageLike", "Prediction", "default_device"]


class Engine(ModelCore):
    """A classifier made ready for visualisation.

    ``Engine(model, transform=None, categories=None, input_size=(224, 224), device=None)``:
    ``transform`` maps an RGB PIL image to a normalised ``(3, H, W)`` tensor (default: resize
    to ``input_size`` and ImageNet normalisation); ``categories`` names the classes
    (default ``"class 0"``, ``"class 1"``…); ``device`` defaults to ``cuda`` when available.
    The model is put in eval mode and its parameters are frozen.
    """

    #: how to build this engine again in another process (a cluster worker): set by :meth:`demo`
    #: and :meth:`from_torchvision`; None for an engine around a model object
    spec: ModelSpec | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def demo(cls, device: str | torch.device | None = None) -> Engine:
        """The bundled demo model (DemoNet trained on the procedural shapes), works offline."""
        engine = cls(demo_model.load_model(), transform=demo_model.transform(), categories=demo_model.class_names(),
                     input_size=demo_model.INPUT_SIZE, device=device, name="demo")
        engine.spec = ModelSpec("demo")
        return engine

    @classmethod
    def from_torchvision(cls, name: str, weights: object = "DEFAULT",
                         device: str | torch.device | None = None) -> Engine:
        """A torchvision classification model by name.

        ``weights``: ``"DEFAULT"`` (pretrained, downloaded into ``TORCH_HOME`` when online),
        ``None`` (random weights, on purpose) or a state-dict file (path, bytes or binary
        file object; ``.pth``/``.pt`` loaded with ``weights_only=True``, or ``.safetensors``).
        """
        built = zoo.build(name, weights)
        engine = cls(built.model, transform=built.transform, categories=built.categories,
                     input_size=built.input_size, device=device, name=built.description)
        engine.spec = ModelSpec.torchvision(name, weights)
        return engine

    @classmethod
    def from_timm(cls, name: str, weights: object = "DEFAULT", device: str | torch.device | None = None,
                  **kwargs: object) -> Engine:
        """A timm model by name with timm's data config (input size, mean/std, interpolation,
        crop) and, for a 1000-class head, ImageNet's class names. ``weights``: ``"DEFAULT"``
        (timm's pretrained weights; offline a :class:`WeightsUnavailableError`), ``None``
        (random) or a state-dict file. ``kwargs`` go to ``timm.create_model``."""
        built = loaders.timm_model(name, weights, **kwargs)
        return cls(built.model, transform=built.transform, categories=built.categories,
                   input_size=built.input_size, device=device, name=built.description)

    @classmethod
    def from_file(cls, source: object, input_size: tuple[int, int] | None = None, mean: Sequence[float] | None = None,
                  std: Sequence[float] | None = None, categories: Sequence[str] | None = None,
                  device: str | torch.device | None = None) -> Engine:
        """A ``.pt2`` (``torch.export.save``) or ``.onnx`` model from a path, bytes or file object,
        recognised by content (see :mod:`cnnvis_core.loaders`); nothing in the file is executed."""
        built = loaders.file_model(source, input_size, mean, std, categories)
        return cls(built.model, transform=built.transform, categories=built.categories,
                   input_size=built.input_size, device=device, name=built.description)

    @classmethod
    def from_factory(cls, target: str, device: str | torch.device | None = None) -> Engine:
        """``"package.module:function"``: the function (server-side code) returns an ``nn.Module``
        (wrapped with the defaults) or an :class:`Engine` (taken as it is)."""
        built = loaders.factory_model(target)
        if isinstance(built, Engine):
            return built
        if not isinstance(built, zoo.ZooModel):
            raise loaders.ModelError(f"The model factory {target!r} returned {type(built).__name__}, not an Engine.")
        return cls(built.model, transform=built.transform, categories=built.categories,
                   input_size=built.input_size, device=device, name=built.description)

    # ------------------------------------------------------------------ predictions and feature maps
    def predict(self, image: ImageLike, k: int = 5) -> list[Prediction]:
        """The top-``k`` classes as ``(index, label, probability)``, most likely first."""
        return top_k(self.logits(image), self.categories, k)

    def feature_maps(self, image: ImageLike, layers: str | Iterable[str]) -> dict[str, torch.Tensor]:
        """``{name: output}`` of the named layers from ONE forward pass, on the CPU (see
        :func:`cnnvis_core.features.capture`)."""
        return features.capture(self, image, layers)

    def model_view(self, image: ImageLike) -> Image.Image:
        """The RGB PIL image of the tensor the model sees (after resize/crop), for overlays."""
        return tensor_to_image(self.preprocess(image), find_normalization(self.transform))

    # ------------------------------------------------------------------ kernels and dead channels
    def conv_layers(self) -> list[str]:
        """Names of the model's 2-D convolutions (the layers :meth:`kernels` accepts)."""
        return kernels.conv_names(self)

    def kernels(self, layer: str) -> torch.Tensor:
        """The weight ``(out, in / groups, kh, kw)`` of conv ``layer``, a float32 copy on the CPU;
        :class:`LayerError` naming the convolutions when ``layer`` is not one."""
        with self.session():
            return kernels.conv_weight(self, layer)

    def preprocess_batches(self, images: Iterable, batch_size: int = 16) -> Iterator[torch.Tensor]:
        """Any iterable of images → lazily preprocessed ``(B, 3, H, W)`` batches (B ≤ batch_size)."""
        return pruning.preprocessed_batches(self, images, batch_size)

    def channel_peaks(self, images: Iterable, layers: str | Iterable[str] | None = None,
                      batch_size: int = 16) -> pruning.ChannelPeaks:
        """Per layer, each channel's ``max |activation|`` over streamed ``images`` (``.dead(eps)``
        thresholds it)."""
        return pruning.channel_peaks(self, images, layers, batch_size)

    def dead_channels(self, images: Iterable, layers: str | Iterable[str] | None = None, eps: float = 0.0,
                      batch_size: int = 16) -> pruning.DeadChannels:
        """Per layer, the channels with ``|activation| ≤ eps`` on every image (streamed in
        batches). ``layers=None``: every conv and ReLU with ``(C, H, W)`` maps."""
        return pruning.dead_channels(self, images, layers, eps, batch_size)

    def verify_pruning(self, images: Iterable, dead: pruning.DeadChannels | Mapping[str, Sequence[int]],
                       batch_size: int = 16) -> pruning.PruningCheck:
        """Largest logit change and top-1 changes when the ``dead`` channels are zeroed by a forward hook."""
        return pruning.verify_pruning(self, images, dead, batch_size)

    # ------------------------------------------------------------------ saliency and deconvnet
    def saliency(self, image: ImageLike, method: str = "gradient", target: Target | None = None
                 ) -> backprop.Saliency:
        """Input-gradient saliency: ``gradient``, ``deconvnet``, ``guided`` or ``guided_gradcam``
        (see :mod:`cnnvis_core.backprop`); ``target`` an index or a class name, top-1 when None."""
        return backprop.saliency(self, image, method, target)

    def reconstruct(self, image: ImageLike, layer: str, channel: int, top_only: bool = False
                    ) -> deconv.Reconstruction:
        """Deconvnet projection of one channel of ``layer`` to pixel space (Zeiler & Fergus;
        see :mod:`cnnvis_core.deconv`)."""
        return deconv.reconstruct(self, image, layer, channel, top_only)

    # ------------------------------------------------------------------ filter optimisation
    def optimize(self, layer: str | None, units: Units, objective: str = "channel", steps: int | None = None,
                 param: str | None = None, size: int | None = None, seed: int = 0,
                 on_step: OnStep | None = None, preset: str | Settings = "lucid",
                 position: tuple[int, int] | None = None, **settings: object) -> OptimizationResult:
        """Activation maximisation, one image per unit, all units as one batch (see
        :mod:`cnnvis_core.optimize`). ``objective``: ``channel`` | ``neuron`` (at ``position``,
        default centre) | ``class`` (``units`` are classes, ``layer`` ignored) | ``deepdream``;
        ``units``: an index, a list or ``"all"``; ``preset`` (``lucid``, ``multiscale``, ``keras``)
        with ``steps``, ``param``, ``size`` and any :class:`~cnnvis_core.optimize.Settings` field
        overriding it. ``on_step(step, total, preview)`` returning False cancels. Takes the session
        per step; cached per unit."""
        return optimization.optimize_units(self, layer, units, objective, seed=seed, on_step=on_step, preset=preset,
                                           position=position, steps=steps, param=param, size=size, **settings)

    def optimize_objectives(self, objectives: Sequence[Objective], keys: Sequence[int] | None = None, seed: int = 0,
                            on_step: OnStep | None = None, preset: str | Settings = "lucid",
                            **settings: object) -> OptimizationResult:
        """One image per composed objective (``channel(...) + 0.5 * neuron(...)``…), one batch, not cached."""
        return optimization.optimize_objectives(self, objectives, keys, seed=seed, on_step=on_step, preset=preset,
                                                **settings)

    # ------------------------------------------------------------------ class activation maps
    def cam(self, image: ImageLike, method: str = "gradcam", layer: str | None = None,
            target: Target | None = None, **options: object) -> cams.CamResult:
        """One class activation map (see :mod:`cnnvis_core.cam`): ``.map`` is H×W in [0, 1] at the
        resolution of :meth:`preprocess`'s tensor (overlay it on :meth:`model_view`).
        ``layer=None``: the last spatial layer; ``target=None``: the top-1 class by logit."""
        targets = None if target is None else [target]
        return cams.compute(self, image, [method], layer, targets, **options)[method][0]

    def cams(self, image: ImageLike, methods: Sequence[str] | None = None, layer: str | None = None,
             target: Target | None = None, **options: object) -> dict[str, cams.CamResult]:
        """``{method: CamResult}`` for several methods; the shared-pass ones (``cam``, ``gradcam``,
        ``gradcam++``, ``xgradcam``, ``layercam``) all come from ONE forward and ONE backward pass
        (all of them when ``methods=None``, CAM only where the model allows it)."""
        targets = None if target is None else [target]
        return {name: found[0] for name, found in cams.compute(self, image, methods, layer, targets,
                                                               **options).items()}

    def cam_targets(self, image: ImageLike, method: str = "gradcam", targets: int | Sequence[Target] = 5,
                    layer: str | None = None, **options: object) -> list[cams.CamResult]:
        """One CamResult per class: ``targets`` an int ``k`` (the top-``k`` classes) or a list
        of classes; gradient methods share ONE forward and ONE batched backward, Score-CAM's
        kin one set of masked passes."""
        top, chosen = (int(targets), None) if isinstance(targets, int) else (1, list(targets))
        return cams.compute(self, image, [method], layer, chosen, top, **options)[method]

    def cam_layers(self) -> list[LayerInfo]:
        """The layers a CAM can use (spatial outputs), in execution order."""
        return cams.cam_layers(self.layers())

    def default_cam_layer(self) -> str:
        """The layer ``layer=None`` means: the last spatial layer before global pooling."""
        return cams.default_layer(self).name

    def faithfulness(self, image: ImageLike, saliency: object, target: Target | None = None,
                     steps: int = 32) -> cams.Faithfulness:
        """Deletion and insertion curves with their AUCs (Petsiuk et al., RISE) of any H×W map."""
        return cams.faithfulness(self, image, saliency, target, steps)
