"""cnnvis_core: see inside convolutional neural networks.

The engine of the cnnvis dashboard, usable on its own (notebooks, scripts, tests)::

    from cnnvis_core import Engine, load_image
    engine = Engine.demo()                       # or Engine.from_torchvision("resnet50")
    image = load_image("photo.jpg")
    engine.predict(image, k=5)                   # [(index, label, probability), …]
    maps = engine.feature_maps(image, ["features.conv3", "features.relu7"])

Importing this package imports no Streamlit and reads no configuration.
"""

from .engine import Engine, Prediction, default_device
from .errors import (
    CnnvisError,
    InputError,
    LayerError,
    ModelError,
    UnsafeWeightsError,
    WeightsError,
    WeightsMismatchError,
    WeightsUnavailableError,
)
from .images import load_image, load_image_with_notes
from .layers import LayerInfo

__all__ = [
    "CnnvisError", "Engine", "InputError", "LayerError", "LayerInfo", "ModelError", "Prediction",
    "UnsafeWeightsError", "WeightsError", "WeightsMismatchError", "WeightsUnavailableError",
    "default_device", "load_image", "load_image_with_notes",
]
