"""A core's twin for background jobs (``ModelCore.replica``): the same tensors and answers, its own
modules, lock and cache; a job on it never makes the core's callers wait."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from torch import nn

from cnnvis_core import Engine, ModelError
from cnnvis_core.hooks import tapped
from cnnvis_core.optimize.cache import background_twin, results_cache
from cnnvis_core.optimize.run import cached_units


@pytest.fixture()
def engine() -> Engine:
    return Engine.demo(device="cpu")


def test_the_twin_shares_every_tensor_and_owns_its_modules(engine):
    twin = engine.replica()
    assert type(twin) is Engine and twin.name == engine.name and twin.spec == engine.spec
    pairs = list(zip(engine.model.state_dict().values(), twin.model.state_dict().values(), strict=True))
    assert pairs and all(a.data_ptr() == b.data_ptr() for a, b in pairs), "no tensor is copied"
    ours, theirs = dict(engine.model.named_modules()), dict(twin.model.named_modules())
    assert ours.keys() == theirs.keys()
    assert not {id(m) for m in ours.values()} & {id(m) for m in theirs.values()}
    assert twin.cache is not engine.cache and twin.counters is engine.counters
    assert [i.name for i in twin.layers()] == [i.name for i in engine.layers()]


def test_the_twin_gives_the_same_answers(engine, demo_images):
    twin = engine.replica()
    image = demo_images[0]
    assert torch.equal(twin.logits(image), engine.logits(image))
    np.testing.assert_allclose(twin.cam(image, "gradcam").map, engine.cam(image, "gradcam").map, atol=1e-6)
    before = engine.counters.snapshot()[0]
    twin.logits(image)
    assert engine.counters.snapshot()[0] == before + 1, "the twin's passes are the model's passes"


def test_a_hook_on_the_twin_does_not_fire_on_the_core(engine, demo_images):
    twin, seen = engine.replica(), []
    layer = engine.default_cam_layer()
    with tapped([twin.tap(layer, lambda module, inputs, output: seen.append(output.shape))]):
        engine.logits(demo_images[0])
        assert not seen
        with torch.no_grad(), twin.session():
            twin.forward(twin.preprocess(demo_images[0]))
    assert len(seen) == 1


def test_a_job_holding_the_twin_never_blocks_the_cores_callers(engine, demo_images):
    """The inversion it prevents: a background batch stalled inside its session (here: waiting on an
    event; in life: a thread on spare CPU under full load) while a page asks the core for a pass."""
    twin, inside, release = engine.replica(), threading.Event(), threading.Event()

    def stalled_batch() -> None:
        with twin.session(background=True):
            inside.set()
            release.wait(10)

    job = threading.Thread(target=stalled_batch)
    job.start()
    inside.wait(5)
    try:
        started = time.monotonic()
        engine.logits(demo_images[0])
        assert time.monotonic() - started < 2.0
        assert job.is_alive(), "the batch was still in its session"
    finally:
        release.set()
        job.join()


def test_an_optimisation_on_the_background_twin_lands_in_the_cores_cache(engine):
    twin = background_twin(engine)
    assert twin is not engine and results_cache(twin) is results_cache(engine)
    layer = engine.layers()[2].name
    result = twin.optimize(layer, [0, 1], steps=2, size=32)
    assert cached_units(engine, layer, [0, 1], "channel", steps=2, size=32) == (0, 1)
    again = engine.optimize(layer, [0, 1], steps=2, size=32)
    assert again.cached == 2 and all(np.array_equal(a, b) for a, b in zip(again.images, result.images))


class _Uncopyable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x).mean((2, 3)))

    def __deepcopy__(self, memo):
        raise TypeError("holds a handle that cannot be copied")


def test_a_model_that_cannot_be_copied_says_so_and_the_job_uses_the_core():
    core = Engine(_Uncopyable(), input_size=(16, 16), device="cpu")
    with pytest.raises(ModelError, match="cannot be copied"):
        core.replica()
    assert background_twin(core) is core
    assert not core._lock.held, "the lock is given back after the failed copy"
