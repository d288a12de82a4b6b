"""Data sets: many images, named once and streamed through a model.

::

    from cnnvis_core.data import Dataset
    ds = Dataset.from_path("val/")          # a folder, an ImageFolder tree, a .zip/.tar (path, bytes,
                                            # file object) or a list of paths
    ds = Dataset.demo(500)                  # the demo generator's samples, with object masks
    len(ds), ds.fingerprint, ds.classes
    for batch in ds.batches(engine, batch_size=32):   # Batch(ids, x, skipped, targets, masks)
        ...
    ds.skipped                              # [Skip(id, path, reason), …]

Modules: :mod:`.sources` (folders, lists, archives, the demo generator), :mod:`.dataset`
(:class:`Dataset`), :mod:`.geometry` (where the model's input lies in the original image).
"""

from .dataset import Batch, Dataset, Sample, Skip
from .geometry import View, view_of
from .sources import IMAGE_EXTENSIONS

__all__ = ["IMAGE_EXTENSIONS", "Batch", "Dataset", "Sample", "Skip", "View", "view_of"]
