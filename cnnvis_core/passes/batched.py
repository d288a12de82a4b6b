"""Many independent inference passes, as fast as the machine allows.

Score-CAM and its kin score one masked input per channel (and sample); the deletion and
insertion curves score one input per step. Both are "the logits of ``count`` inputs that a
function makes from their indices", which :func:`batched_logits` computes: in batches sized
from the free memory and tuned by timing (:mod:`.batch_size`), each batch in its own session
(other callers interleave), channels-last, under bfloat16 autocast on request, through the
model's BatchNorm-folded copy where it has one (:mod:`.folding`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..core import ModelCore
from ..errors import InputError
from .batch_size import memory_cap, run_batched
from .folding import inference_copy

#: the precisions :func:`batched_logits` runs in
PRECISIONS = ("float32", "bfloat16")

#: ``progress(done, total)``, called after each batch; an exception raised there cancels the job
Progress = Callable[[int, int], object]


def batched_logits(core: ModelCore, inputs_of: Callable[[torch.Tensor], torch.Tensor], count: int,
                   classes: Sequence[int], input_shape: tuple[int, ...], tag: tuple,
                   precision: str = "float32", progress: Progress | None = None) -> torch.Tensor:
    """The logits of ``classes`` for the ``count`` inputs ``inputs_of(items)``: ``(count, T)`` on the CPU.

    ``inputs_of`` maps a 1-D tensor of item indices to their ``(B, *input_shape)`` inputs;
    ``tag`` names the kind of job, for the batch sizes remembered per model and shape.
    Under ``precision="bfloat16"`` logits carry about 3 significant digits. ``progress(done,
    count)`` is called after every batch, outside the session.
    """
    if precision not in PRECISIONS:
        raise InputError(f"Unknown precision {precision!r}; use {' or '.join(PRECISIONS)}.")
    low = precision == "bfloat16"
    out = torch.empty((count, len(classes)), dtype=torch.float32)
    cap = memory_cap(core.device, core.layers(), input_shape)
    index = torch.tensor(list(classes), device=core.device)
    with core.session():
        net = inference_copy(core, inputs_of(torch.arange(1, device=core.device)))

    def work(start: int, stop: int) -> None:
        batch = inputs_of(torch.arange(start, stop, device=core.device))
        batch = batch.contiguous(memory_format=torch.channels_last)
        with core.session(background=True), torch.inference_mode(), \
                torch.autocast(core.device.type, dtype=torch.bfloat16, enabled=low):
            core.counters.add(forward=1)
            logits = net(batch)
        out[start:stop] = logits.index_select(1, index).float().cpu()

    remembered = core.cache.get("batch sizes", dict)
    run_batched(count, work, cap, remembered, (*tag, precision, input_shape, str(core.device)), after=progress)
    return out
