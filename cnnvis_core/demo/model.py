"""DemoNet: the small CNN bundled with cnnvis, trained on :mod:`cnnvis_core.demo.shapes`.

A VGG-like stack of conv–BN–ReLU blocks with max-pooling, then global average pooling and
one linear layer, so every method of the dashboard applies: CAM (GAP + linear), deconvnet
(max-pool switches), guided backpropagation (ReLUs, in place like torchvision's).

    input 3×128×128
    conv1 16 → pool1 (64²) → conv2 32 → pool2 (32²) → conv3 64, conv4 64 → pool3 (16²)
    → conv5 128, conv6 128, conv7 128 (16²) → gap → fc (8 classes)

About 0.42 M parameters; the last conv maps are 16×16, a fine grid for class activation maps.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from .shapes import CLASSES, SIZE

#: normalisation: round values near the training images' per-channel mean 0.485 and std 0.223
#: (measured on 2,000 training samples)
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)

_PLAN: tuple[tuple[str, int], ...] = (
    ("1", 16), ("pool1", 0), ("2", 32), ("pool2", 0), ("3", 64), ("4", 64), ("pool3", 0),
    ("5", 128), ("6", 128), ("7", 128),
)


def _features() -> nn.Sequential:
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    channels = 3
    for name, width in _PLAN:
        if width == 0:
            layers[name] = nn.MaxPool2d(2)
            continue
        layers[f"conv{name}"] = nn.Conv2d(channels, width, 3, padding=1, bias=False)
        layers[f"bn{name}"] = nn.BatchNorm2d(width)
        layers[f"relu{name}"] = nn.ReLU(inplace=True)
        channels = width
    return nn.Sequential(layers)


class DemoNet(nn.Module):
    """Conv–BN–ReLU blocks with max-pooling, global average pooling, one linear classifier."""

    def __init__(self, num_classes: int = len(CLASSES)) -> None:
        super().__init__()
        self.features = _features()
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(_PLAN[-1][1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.gap(self.features(x))))


INPUT_SIZE = (SIZE, SIZE)
