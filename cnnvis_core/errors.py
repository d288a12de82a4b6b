"""Exception types of cnnvis.

Every error the library raises on purpose derives from :class:`CnnvisError`, so a caller
(the dashboard, a notebook) can catch one type and show ``str(error)`` to a person: the
messages are written to be read by the user, and say what to do instead.
"""

from __future__ import annotations


class CnnvisError(Exception):
    """Base class of every error raised by cnnvis on purpose."""


class InputError(CnnvisError, ValueError):
    """An image (or other user input) that cannot be used: not an image, truncated, too large…"""


class LayerError(CnnvisError, KeyError):
    """A layer name that does not exist in the model, or a layer unfit for the request."""

    def __str__(self) -> str:  # KeyError would quote the message; keep it readable.
        return str(self.args[0]) if self.args else ""


class ModelError(CnnvisError, ValueError):
    """A model that cannot be built: unknown architecture, unusable model object…"""


class WeightsError(CnnvisError):
    """Weights that cannot be loaded: unreadable, unsafe, or not fitting the architecture."""


class WeightsUnavailableError(WeightsError):
    """Pretrained weights that cannot be had here (offline, not in the cache)."""


class WeightsMismatchError(WeightsError):
    """A state dict whose keys or shapes do not fit the architecture."""


class UnsafeWeightsError(WeightsError):
    """A weights file that holds executable Python objects; it is refused, never run."""
