"""A data set of images, streamed: :class:`Dataset`.

``Dataset.from_path(...)`` names the images of a folder (recursive), an ImageFolder tree (the
sub-folder is the label), a ``.zip`` or ``.tar`` archive (a path, bytes or a file object: a browser
upload) or a list of paths; ``Dataset.demo(n)`` the demo generator's samples with their masks.
Listing reads names, sizes and times only; images are read, decoded and preprocessed a batch at a
time (:meth:`Dataset.batches`), so memory does not grow with the data set.

Every image has an *id*: its place among the source's images. Selections (:meth:`~Dataset.limit`,
:meth:`~Dataset.sample`, :meth:`~Dataset.shard`, :meth:`~Dataset.subset`) keep the ids, so results
of parts of one data set name the same images and merge. Files that are no images by their name
(``notes.txt``) are left out when listing; files that do not decode are skipped when read, by
:func:`~cnnvis_core.images.load_image`'s rules (the same as uploads), and both are reported with
their reason (:attr:`Dataset.skipped`).

The *fingerprint* names the data set in results: the source's fingerprint (paths, sizes and
modification times of a folder's files; the bytes of an archive), and the selection when it is
not the whole.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image

from ..core import ModelCore, stack_batch
from ..demo import HELD_OUT_SEED_START
from ..errors import CnnvisError, InputError
from ..images import load_image
from .sources import DemoSource, Entry, Loaded, Source, digest, is_image_name, open_source


class Skip(NamedTuple):
    """A file left out: its data-set ``id`` (-1 when it was never an image by name), where it is,
    and why."""

    id: int
    path: str
    reason: str


class Batch(NamedTuple):
    """Images read together: their ``ids``, the preprocessed ``(B, 3, H, W)`` tensor ``x`` on the
    core's device (None when every file of the batch was skipped), the files ``skipped`` on the way,
    and per image the class index (``targets``) and object mask (``masks``) where the data set has them."""

    ids: np.ndarray
    x: torch.Tensor | None
    skipped: tuple[Skip, ...]
    targets: tuple[int | None, ...]
    masks: tuple[np.ndarray | None, ...]


@dataclass(frozen=True)
class Sample:
    """One image of the data set, decoded: the RGB image, its label (a class name or index) and mask."""

    id: int
    path: str
    image: Image.Image
    label: str | int | None
    mask: np.ndarray | None


class Dataset:
    """Images to stream through a model (see the module docstring)."""

    def __init__(self, source: Source, ids: Sequence[int] | np.ndarray | None = None,
                 selection: str = "") -> None:
        self.source = source
        listed = source.entries()
        self._images: list[Entry] = [e for e in listed if is_image_name(e.key)]
        self._ignored = tuple(Skip(-1, source.path(e), _not_an_image(e.key))
                              for e in listed if not is_image_name(e.key))
        everything = np.arange(len(self._images), dtype=np.int64)
        self.ids = everything if ids is None else np.asarray(ids, dtype=np.int64)
        self._selection = selection
        self._failed: dict[int, Skip] = {}
        self._by_path: dict[str, int] | None = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.update(_lock=None, _by_path=None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_path(cls, source: object, limit: int | None = None) -> Dataset:
        """A folder (recursive; an ImageFolder tree gets labels), a ``.zip``/``.tar`` archive (path,
        bytes or binary file object) or a list of image paths; ``limit``: the first ``limit`` images."""
        ds = cls(open_source(source))
        if not len(ds):
            what = f" ({len(ds._ignored)} other files)" if ds._ignored else ""
            raise InputError(f"No image files found in {ds.description()}{what}; images are "
                             "JPEG, PNG, WebP, BMP, GIF or TIFF files.")
        return ds if limit is None else ds.limit(limit)

    @classmethod
    def demo(cls, n: int = 200, seed_start: int = HELD_OUT_SEED_START, n_objects: int = 1) -> Dataset:
        """``n`` samples of the demo generator from ``seed_start`` on (default: seeds never used in
        training), each with the class and mask of its (first) object."""
        return cls(DemoSource(n, seed_start, n_objects))

    # ------------------------------------------------------------------ selections
    def _select(self, ids: np.ndarray, how: str) -> Dataset:
        return Dataset(self.source, ids, f"{self._selection}|{how}" if self._selection else how)

    def limit(self, n: int) -> Dataset:
        """The first ``n`` images."""
        return self._select(self.ids[:max(0, int(n))], f"limit {int(n)}")

    def sample(self, n: int, seed: int = 0) -> Dataset:
        """``n`` images drawn at random without replacement (seeded), kept in data-set order."""
        n = min(int(n), len(self))
        chosen = np.sort(np.random.default_rng(int(seed)).choice(len(self), size=n, replace=False))
        return self._select(self.ids[chosen], f"sample {n} seed {int(seed)}")

    def shard(self, index: int, count: int) -> Dataset:
        """Part ``index`` of ``count`` contiguous parts (as equal as can be)."""
        if not 0 <= int(index) < int(count):
            raise InputError(f"Shard {index} of {count} does not exist (0 ≤ index < count).")
        bounds = np.linspace(0, len(self), int(count) + 1).round().astype(int)
        return self._select(self.ids[bounds[index]:bounds[index + 1]], f"shard {index}/{count}")

    def subset(self, ids: Iterable[int]) -> Dataset:
        """The images of the given ids (ids of the whole source), in id order."""
        ids = np.unique(np.fromiter(ids, dtype=np.int64))
        if ids.size and (ids[0] < 0 or ids[-1] >= len(self._images)):
            raise InputError(f"Image ids run from 0 to {len(self._images) - 1}.")
        return self._select(ids, "subset")

    # ------------------------------------------------------------------ what it is
    def __len__(self) -> int:
        return int(self.ids.size)

    def __repr__(self) -> str:
        return f"Dataset({self.description()!r}, images={len(self)}, fingerprint={self.fingerprint!r})"

    @property
    def root_fingerprint(self) -> str:
        """The fingerprint of all the source's images (the selection left out)."""
        return self.source.fingerprint()

    @property
    def fingerprint(self) -> str:
        """16 hex digits naming these images: the source's fingerprint, and the ids when they are
        not all of them."""
        return fingerprint_of(self.root_fingerprint, self.ids, len(self._images))

    @property
    def size(self) -> int:
        """Number of images in the whole source (ids run from 0 to ``size - 1``)."""
        return len(self._images)

    def description(self) -> str:
        """A line for a person: what the source is and the selection."""
        desc = self.source.describe()
        where = {"folder": lambda: desc["path"], "archive": lambda: desc["path"] or desc["name"],
                 "list": lambda: f"a list of {len(desc['paths'])} paths",
                 "demo": lambda: f"{desc['n']} demo samples from seed {desc['seed_start']}"}[desc["kind"]]()
        return f"{desc['kind']} {where}" + (f" ({self._selection})" if self._selection else "")

    def describe(self) -> dict:
        """JSON-ready: the source (to open it again), the selection and fingerprints."""
        return {"source": self.source.describe(), "selection": self._selection, "images": len(self),
                "source_images": len(self._images), "fingerprint": self.fingerprint,
                "root_fingerprint": self.root_fingerprint}

    @property
    def classes(self) -> list[str]:
        """Class names: the ImageFolder labels (sorted), the demo's classes, or ``[]``."""
        if isinstance(self.source, DemoSource):
            return self.source.classes
        return sorted({e.label for e in self._images if e.label is not None})

    @property
    def has_masks(self) -> bool:
        """Whether images come with object masks (the demo generator's do)."""
        return isinstance(self.source, DemoSource)

    def path(self, id: int) -> str:
        """Where image ``id`` is: a path, ``archive::member`` or ``demo:seed=N.png``."""
        return self.source.path(self._images[int(id)])

    def label(self, id: int) -> str | None:
        """The ImageFolder label of image ``id`` (None in a flat folder or list)."""
        return self._images[int(id)].label

    @property
    def ignored(self) -> tuple[Skip, ...]:
        """The source's files that are no images by their name (left out when listing)."""
        return self._ignored

    @property
    def skipped(self) -> tuple[Skip, ...]:
        """Files left out so far: those no image by name (known from the listing) and those that
        could not be read (known once read), in order."""
        with self._lock:
            failed = [self._failed[k] for k in sorted(self._failed)]
        return self._ignored + tuple(failed)

    # ------------------------------------------------------------------ reading
    def _read(self, id: int) -> tuple[Image.Image, Loaded]:
        entry = self._images[int(id)]
        loaded = self.source.read(entry)
        image = loaded.data if isinstance(loaded.data, Image.Image) else load_image(loaded.data)
        return image.convert("RGB"), loaded

    def read(self, id: int) -> Sample:
        """Image ``id`` decoded (:class:`InputError` when it cannot be)."""
        image, loaded = self._read(id)
        label = loaded.target if loaded.target is not None else self.label(id)
        return Sample(int(id), self.path(id), image, label, loaded.mask)

    def open(self, path: str) -> Image.Image:
        """The image at ``path`` as :meth:`path` names it (for crops of results)."""
        if self._by_path is None:
            self._by_path = {self.source.path(entry): i for i, entry in enumerate(self._images)}
        if path not in self._by_path:
            raise InputError(f"{path} is not an image of {self.description()}.")
        return self._read(self._by_path[path])[0]

    def load(self, core: ModelCore, ids: Sequence[int]) -> Batch:
        """Read, decode and preprocess the images ``ids`` for ``core``; unreadable ones are skipped."""
        tensors, kept, skipped, targets, masks = [], [], [], [], []
        for i in ids:
            try:
                image, loaded = self._read(i)
                tensors.append(core.preprocess(image, on_device=False))
            except CnnvisError as error:
                skip = Skip(int(i), self.path(i), str(error))
                skipped.append(skip)
                with self._lock:
                    self._failed[int(i)] = skip
                continue
            kept.append(int(i))
            targets.append(loaded.target)
            masks.append(loaded.mask)
        x = stack_batch(tensors).to(core.device, non_blocking=True) if tensors else None
        return Batch(np.asarray(kept, dtype=np.int64), x, tuple(skipped), tuple(targets), tuple(masks))

    def batches(self, core: ModelCore, batch_size: int = 32, ids: Sequence[int] | None = None,
                prefetch: bool = False) -> Iterator[Batch]:
        """:class:`Batch` after batch of (at most) ``batch_size`` images, in id order (``ids``: a part
        of this data set's ids). ``prefetch``: read the next batch in a background thread while the
        caller works on this one."""
        if int(batch_size) < 1:
            raise InputError(f"The batch size must be at least 1, got {batch_size}.")
        ids = self.ids if ids is None else np.asarray(ids, dtype=np.int64)
        chunks = (ids[start:start + batch_size] for start in range(0, len(ids), int(batch_size)))
        if not prefetch:
            return (self.load(core, chunk) for chunk in chunks)
        return _prefetched(lambda chunk: self.load(core, chunk), chunks)


def fingerprint_of(root: str, ids: np.ndarray, total: int) -> str:
    """The fingerprint of the images ``ids`` of a source with fingerprint ``root`` and ``total`` images."""
    ids = np.asarray(ids, dtype=np.int64)
    if ids.size == total and np.array_equal(ids, np.arange(total)):
        return root
    return digest(root, np.ascontiguousarray(ids).tobytes().hex())


def _not_an_image(key: str) -> str:
    ending = os.path.splitext(key)[1] or "no extension"
    return f"not an image file by its name ({ending}); images are JPEG, PNG, WebP, BMP, GIF or TIFF files"


def _prefetched(load, chunks: Iterator[np.ndarray]) -> Iterator[Batch]:
    """``load(chunk)`` for every chunk, one chunk ahead in a daemon thread; an error there is raised here."""
    done = object()
    slots: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()

    def work() -> None:
        try:
            for chunk in chunks:
                if stop.is_set():
                    return
                slots.put(load(chunk))
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, raised there
            slots.put(error)
        slots.put(done)

    thread = threading.Thread(target=work, daemon=True, name="cnnvis-prefetch")
    thread.start()
    try:
        while (item := slots.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # let a blocked put finish
            try:
                slots.get_nowait()
            except queue.Empty:
                thread.join(0.01)
