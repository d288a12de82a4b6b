"""Many independent inference passes of one model, batched: :func:`batched_logits`.

:mod:`.batched` runs them, :mod:`.batch_size` sizes the batches (memory, timing),
:mod:`.folding` gives the model's BatchNorm-folded copy they run through. Score-CAM's kin and
the deletion/insertion curves use it.
"""

from .batched import PRECISIONS, Progress, batched_logits

__all__ = ["PRECISIONS", "Progress", "batched_logits"]
