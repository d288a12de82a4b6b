"""The deconvnet projection of a unit's top examples (Zeiler & Fergus 2014, fig. 2): for each top
image, the channel's strongest activation projected back to pixel space, cut to the example's
receptive field. Cost: one forward pass and one projection per example."""

from __future__ import annotations

import numpy as np

from ..core import ModelCore
from ..deconv import reconstruct
from ..jobs import DatasetExamples
from .crops import Images


def projections(core: ModelCore, result: DatasetExamples, layer: str, channel: int,
                images: Images | None = None) -> list[np.ndarray]:
    """One ``H×W×3`` uint8 picture per top example: the projection (zero mid-grey) over the box."""
    images = images or Images(result)
    out = []
    for example in result.top(layer, int(channel)):
        found = reconstruct(core, images(example.path), layer, int(channel), top_only=True)
        left, top, right, bottom = example.box
        out.append(np.ascontiguousarray(found.rgb()[top:bottom, left:right]))
    return out
