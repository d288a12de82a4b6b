"""Tensors of the demo data set: normalisation, the model's transform, held-out evaluation."""

from __future__ import annotations

import numpy as np
import torch
from torchvision.transforms import v2

from .model import MEAN, STD
from .shapes import HELD_OUT_SEED_START, SIZE, sample


def transform() -> v2.Compose:
    """PIL image → normalised float tensor (3, 128, 128), the demo model's preprocessing."""
    return v2.Compose([
        v2.ToImage(),
        v2.Resize((SIZE, SIZE), antialias=True),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(MEAN, STD),
    ])


def to_batch(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (N, H, W, 3) → normalised float batch (N, 3, H, W)."""
    x = images.permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x - mean) / std


def held_out_batch(n: int, start: int = HELD_OUT_SEED_START, n_objects: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` samples of seeds never used in training: normalised batch and first-object labels."""
    pairs = [sample(seed, n_objects) for seed in range(start, start + n)]
    images = torch.from_numpy(np.stack([np.asarray(p[0], np.uint8) for p in pairs]))
    labels = torch.tensor([p[1][0] for p in pairs])
    return to_batch(images), labels


@torch.no_grad()
def held_out_accuracy(model: torch.nn.Module, n: int = 1000, start: int = HELD_OUT_SEED_START,
                      batch: int = 250) -> float:
    """Top-1 accuracy of ``model`` on ``n`` single-object held-out samples from seed ``start`` on."""
    correct = 0
    for offset in range(0, n, batch):
        x, y = held_out_batch(min(batch, n - offset), start + offset)
        param = next(model.parameters())
        correct += int((model(x.to(param.device)).argmax(1).cpu() == y).sum())
    return correct / n
