"""A unit's top dataset examples as pictures: each receptive-field crop with the channel's
activation map over it.

The result stores where each example peaks, not the maps, so the maps of the examples' images
are computed again: ONE forward pass per batch of distinct images, stopped at the layer, keeping
only the ``(h, w)`` maps of the channels asked for (:func:`unit_maps`). A map is brought to the
model's input size (bilinear), cut to the example's box and divided by the channel's peak over
the data set, so the crops of one channel compare: 1 is the channel's best response anywhere.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..core import ModelCore, stack_batch
from ..data import Dataset, View
from ..jobs import DatasetExamples, Example
from ..jobs.reading import reduced_outputs
from ..render import overlay

#: ``{(channel, image id): (h, w) float32 map}``
Maps = dict[tuple[int, int], np.ndarray]


@dataclass(frozen=True)
class UnitExample:
    """One top example: the stored :class:`Example`, its crop cut from the file, and the channel's
    map over the crop in ``[0, 1]`` (``heat``, at the input's resolution; None without the maps)."""

    example: Example
    crop: Image.Image
    heat: np.ndarray | None

    def overlay(self, alpha: float = 0.5, cmap: str = "jet") -> Image.Image:
        """The crop with the map over it at opacity ``alpha`` (the crop itself without a map)."""
        if self.heat is None:
            return self.crop
        return overlay(self.crop, self.heat, alpha, cmap)


class Images:
    """The result's images by path, opened once each (the last ``size`` kept): a channel's top
    images recur across channels, and opening one can cost more than cropping it."""

    def __init__(self, result: DatasetExamples, dataset: Dataset | None = None, size: int = 512) -> None:
        self.result, self.dataset, self.size = result, dataset, size
        self._kept: dict[str, Image.Image] = {}
        self._lock = threading.Lock()  # the dashboard shares one between sessions

    def __call__(self, path: str) -> Image.Image:
        with self._lock:
            image = self._kept.pop(path, None)
        if image is None:
            image = self.result._dataset(self.dataset).open(path)
        with self._lock:
            self._kept[path] = image  # most recent last
            while len(self._kept) > self.size:
                self._kept.pop(next(iter(self._kept)))
        return image

    def crop(self, example: Example) -> Image.Image:
        """The example's receptive-field crop, as :meth:`DatasetExamples.crop` cuts it."""
        image = self(example.path)
        view = View.from_dict(self.result.manifest["model"]["view"])
        return image.crop(view.to_original(example.box, image.size))


def unit_maps(core: ModelCore, result: DatasetExamples, layer: str, channels: Iterable[int],
              dataset: Dataset | None = None, batch_size: int = 16, images: Images | None = None) -> Maps:
    """The maps of ``channels`` of ``layer`` on each of their top images: one forward pass per
    ``batch_size`` distinct images (counted by the core's counters)."""
    wanted: dict[int, set[int]] = {}
    paths: dict[int, str] = {}
    for channel in channels:
        for example in result.top(layer, int(channel)):
            wanted.setdefault(example.id, set()).add(int(channel))
            paths[example.id] = example.path
    ids = sorted(wanted)
    images = images or Images(result, dataset)
    maps: Maps = {}
    for start in range(0, len(ids), batch_size):
        chunk = ids[start:start + batch_size]
        x = stack_batch([core.preprocess(images(paths[i]), on_device=False) for i in chunk])
        found = reduced_outputs(core, x.to(core.device), [layer], lambda _n, m: m.float().cpu())[layer]
        for row, image_id in enumerate(chunk):
            for channel in wanted[image_id]:
                maps[(channel, image_id)] = found[row, channel].numpy().copy()
    return maps


def heat_over_box(plane: np.ndarray, box: tuple[int, int, int, int], input_size: tuple[int, int],
                  peak: float) -> np.ndarray:
    """The map ``plane`` (``(h, w)``) at the input's size ``(H, W)``, cut to ``box`` (left, top,
    right, bottom) and scaled by ``peak`` into ``[0, 1]`` (negative values 0)."""
    full = F.interpolate(torch.from_numpy(np.asarray(plane, np.float32))[None, None], size=tuple(input_size),
                         mode="bilinear", align_corners=False)[0, 0].numpy()
    left, top, right, bottom = box
    cut = full[top:bottom, left:right]
    if not peak > 0:
        return np.zeros_like(cut)
    return np.clip(cut / peak, 0.0, 1.0)


def unit_examples(result: DatasetExamples, layer: str, channel: int, maps: Maps | None = None,
                  dataset: Dataset | None = None, images: Images | None = None) -> list[UnitExample]:
    """The channel's top examples as :class:`UnitExample` (crops from the files; heat from ``maps``
    when given, else None). No model is needed."""
    peak = float(result.peak(layer)[int(channel)])
    size = tuple(result.manifest["model"]["input_size"])
    images = images or Images(result, dataset)
    out = []
    for example in result.top(layer, int(channel)):
        crop = images.crop(example)
        plane = None if maps is None else maps.get((int(channel), example.id))
        heat = None if plane is None else heat_over_box(plane, example.box, size, peak)  # type: ignore[arg-type]
        out.append(UnitExample(example, crop, heat))
    return out


def mosaic(crops: list[Image.Image], tile: int = 48, limit: int = 9) -> Image.Image:
    """Up to ``limit`` crops as one mosaic of ``tile``-pixel tiles (1 px gaps): ``⌈√n⌉`` columns
    and as many rows as it takes (9 crops 3 × 3, 6 crops 3 × 2, 4 crops 2 × 2)."""
    n = max(1, min(len(crops), limit))
    columns = math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    sheet = Image.new("RGB", (columns * tile + columns - 1, rows * tile + rows - 1), (235, 235, 235))
    for i, crop in enumerate(crops[:n]):
        row, col = divmod(i, columns)
        sheet.paste(crop.convert("RGB").resize((tile, tile), Image.Resampling.BILINEAR),
                    (col * (tile + 1), row * (tile + 1)))
    return sheet
