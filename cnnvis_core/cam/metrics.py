"""How good is a map? Deletion and insertion curves (RISE) and the pointing game.

Deletion and insertion (Petsiuk, Das & Saenko, "RISE: Randomized Input Sampling for
Explanation of Black-box Models", BMVC 2018, arXiv:1806.07421): order the pixels by the map,
most salient first. *Deletion* replaces the first ``n`` of them with a constant (zero in the
model's input space, i.e. the normalisation mean) and follows the class's softmax
probability as ``n`` grows: a faithful map makes it fall fast (low AUC is good). *Insertion*
starts from a blurred copy of the image (Gaussian, σ = 5 px, 11×11 kernel as in the paper)
and puts the original pixels back in the same order: the probability should rise fast (high
AUC is good). AUC is the trapezoid area under probability against the fraction of pixels,
on ``steps + 1`` evenly spaced fractions from 0 to 1.

Pointing game (Zhang et al., "Top-down Neural Attention by Excitation Backprop", ECCV 2016,
arXiv:1608.00507): a hit when the map's maximum lies on the object (within ``tolerance``
pixels of its mask; the paper allows 15 px, our tests ask for 0). :func:`silhouette` gives the
region an object occupies (its mask with enclosed holes filled), the mask the tests point at.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torchvision.transforms.v2 import functional as TF

from ..core import ImageLike, ModelCore
from ..errors import InputError
from ..passes import batched_logits
from ..targets import Target, class_index, top_classes


@dataclass(frozen=True, eq=False)
class Faithfulness:
    """Deletion and insertion curves of one map for one class.

    ``fractions``: the fraction of pixels deleted / inserted at each step (0 … 1);
    ``deletion``, ``insertion``: the class's softmax probability there; ``*_auc``: the areas.
    """

    fractions: np.ndarray
    deletion: np.ndarray
    insertion: np.ndarray
    deletion_auc: float
    insertion_auc: float
    target: int


def auc(fractions: np.ndarray, values: np.ndarray) -> float:
    """Trapezoid area under ``values`` over ``fractions``."""
    fractions, values = np.asarray(fractions, np.float64), np.asarray(values, np.float64)
    return float(np.sum((fractions[1:] - fractions[:-1]) * (values[1:] + values[:-1]) / 2))


def pixel_order(saliency: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Flat pixel indices, most salient first (ties in reading order)."""
    values = torch.as_tensor(np.asarray(saliency, np.float32)).flatten()
    return torch.argsort(-values, stable=True)


def faithfulness(core: ModelCore, image: ImageLike, saliency: np.ndarray | torch.Tensor,
                 target: Target | None = None, steps: int = 32) -> Faithfulness:
    """Deletion and insertion curves of ``saliency`` for class ``target`` (top-1 when None).

    ``saliency`` is any map of the image (``H×W``); it is resized bilinearly to the input
    tensor's resolution when its size differs. Cost: one forward for the class, then
    ``2 (steps + 1)`` forwards in memory-sized batches.
    """
    steps = int(steps)
    if steps < 1:
        raise InputError(f"Deletion and insertion need at least one step, got steps={steps}.")
    x = core.preprocess(image)
    size = tuple(x.shape[-2:])
    heat = torch.as_tensor(np.asarray(saliency, np.float32))
    if heat.dim() != 2:
        raise InputError(f"A saliency map must be 2-D (H×W), got shape {tuple(heat.shape)}.")
    if tuple(heat.shape) != size:
        heat = F.interpolate(heat[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
    logits = core.logits(x)
    cls = top_classes(logits, 1)[0] if target is None else class_index(target, core.categories, logits.numel())
    rank = torch.empty(heat.numel(), dtype=torch.long)
    rank[pixel_order(heat)] = torch.arange(heat.numel())
    rank = rank.view(1, *size).to(x.device)
    counts = torch.round(torch.linspace(0, heat.numel(), steps + 1)).long().to(x.device)
    blurred = TF.gaussian_blur(x, kernel_size=[11, 11], sigma=[5.0, 5.0])

    def curve(start_image: torch.Tensor, end_image: torch.Tensor) -> np.ndarray:
        # Item s shows end_image on its first counts[s] pixels and start_image elsewhere.
        difference = end_image - start_image

        def inputs_of(items: torch.Tensor) -> torch.Tensor:
            shown = (rank < counts[items].view(-1, 1, 1)).to(x.dtype).unsqueeze(1)
            return start_image + shown * difference

        logits = batched_logits(core, inputs_of, steps + 1, range(n_classes), tuple(x.shape[1:]), ("masked",))
        return torch.softmax(logits, dim=1)[:, cls].numpy()

    n_classes = int(logits.numel())
    deletion = curve(x, torch.zeros_like(x))
    insertion = curve(blurred, x)
    fractions = (counts.float() / heat.numel()).cpu().numpy()
    return Faithfulness(fractions, deletion, insertion, auc(fractions, deletion), auc(fractions, insertion), cls)


def silhouette(mask: np.ndarray) -> np.ndarray:
    """``mask`` with its enclosed holes filled: the region the object occupies (a ring's disc).

    The pointing game asks whether a map points *at the object*; a ring's hole lies inside the
    ring, as it lies inside the box of the VOC protocol (Zhang et al. 2016). Computed by flood
    filling the background from the image border: what the fill cannot reach is the silhouette.
    """
    mask = np.asarray(mask, bool)
    padded = np.pad(mask, 1).astype(np.uint8) * 255
    image = Image.fromarray(padded).copy()  # a copy: an image made from an array is read-only
    ImageDraw.floodfill(image, (0, 0), 128)
    return np.asarray(image)[1:-1, 1:-1] != 128


def pointing_game(saliency: np.ndarray | torch.Tensor, mask: np.ndarray, tolerance: float = 0.0) -> bool:
    """True when the maximum of ``saliency`` lies within ``tolerance`` pixels of ``mask``.

    ``saliency`` and ``mask`` are ``H×W`` of the same size (the first maximum in reading order
    counts).
    """
    heat = np.asarray(saliency, np.float32)
    mask = np.asarray(mask, bool)
    if heat.shape != mask.shape:
        raise InputError(f"The map ({heat.shape}) and the mask ({mask.shape}) must have the same size.")
    row, col = np.unravel_index(int(np.argmax(heat)), heat.shape)
    if tolerance <= 0:
        return bool(mask[row, col])
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return False
    return bool(np.min((rows - row) ** 2 + (cols - col) ** 2) <= tolerance ** 2)
