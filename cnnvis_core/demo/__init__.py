"""The bundled demo: a procedural shapes data set and DemoNet, the small CNN trained on it.

Public API: :func:`sample` (``(image, labels, masks)`` of one seed), :data:`CLASSES`,
:func:`load_model` (DemoNet with the committed weights), :func:`transform`.
Retrain with ``python -m cnnvis_core.demo.train``.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import load_file

from ..errors import WeightsError
from .data import transform
from .model import INPUT_SIZE, DemoNet
from .shapes import CLASSES, HELD_OUT_SEED_START, class_names, sample

WEIGHTS_PATH = Path(__file__).with_name("weights") / "demonet.safetensors"

__all__ = ["CLASSES", "HELD_OUT_SEED_START", "INPUT_SIZE", "WEIGHTS_PATH", "DemoNet", "class_names",
           "load_model", "sample", "training_summary", "transform"]


def load_model(path: str | Path = WEIGHTS_PATH) -> DemoNet:
    """DemoNet with the trained weights from ``path`` (the committed file by default), in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"The demo model's weights are missing at {path}. "
                           "Restore the file from the repository or run `python -m cnnvis_core.demo.train`.")
    model = DemoNet()
    model.load_state_dict(load_file(str(path)))
    return model.eval()


def training_summary(path: str | Path = WEIGHTS_PATH) -> dict:
    """What the training run stored in the weights file: held-out accuracy, epochs, seed…"""
    with safe_open(str(path), framework="pt") as f:
        return json.loads((f.metadata() or {}).get("cnnvis", "{}"))
