"""Model factories for the dashboard's *Server model* tests (``CNNVIS_MODEL=tests.dashboard.factory_models:…``)."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import VisionTransformer

from cnnvis_core import Engine


def tiny_vit() -> Engine:
    """A torchvision VisionTransformer at 32 px (4×4 patches), as an Engine with its own input size
    and class names (a factory may return an Engine as it is)."""
    torch.manual_seed(0)
    model = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32,
                              num_classes=4)
    nn.init.normal_(model.heads.head.weight, std=0.5)  # torchvision zero-initialises it
    return Engine(model, input_size=(32, 32), categories=["north", "east", "south", "west"], name="tiny vit")


def tiny_cnn() -> nn.Module:
    """A bare module: the engine wraps it with the defaults (224×224, ImageNet normalisation)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 3))
