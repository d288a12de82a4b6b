"""Reductions of layer outputs in a job's forward pass: in the hook, or overlapped in a worker thread,
with the same numbers — also when the network changes a tapped output in place afterwards."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cnnvis_core import Engine
from cnnvis_core.jobs import reading
from cnnvis_core.jobs.api import stats_job
from cnnvis_core.jobs.stats import _moments


class _DoubleInPlace(nn.Module):
    """Changes its input in place (as ``x += identity`` in a residual block does)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul_(2.0)


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        np.array_equal(a[n][0], b[n][0]) and np.allclose(a[n][1], b[n][1]) and np.array_equal(a[n][2], b[n][2])
        and a[n][3] == b[n][3] for n in a)


@pytest.fixture
def one_thread(monkeypatch):
    """Cores left idle by torch (the bench's one-thread setting), so reductions overlap."""
    monkeypatch.setattr(reading, "_cores_idle", lambda device: True)


def test_overlapped_reductions_equal_those_in_the_hook(demo_engine: Engine, one_thread, monkeypatch):
    job = stats_job(demo_engine)
    x = torch.randn(8, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    overlapped = reading.reduced_outputs(demo_engine, x, job.layers, _moments(job.nonnegative), overlap=True)
    monkeypatch.setattr(reading, "_cores_idle", lambda device: False)
    in_hook = reading.reduced_outputs(demo_engine, x, job.layers, _moments(job.nonnegative), overlap=True)
    assert _same(overlapped, in_hook)
    assert not demo_engine.cache.get("reduced in the hook", set), "the demo changes no tapped map in place"


def test_a_map_changed_in_place_after_its_tap_is_read_before_the_change(one_thread):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), _DoubleInPlace(), nn.Conv2d(4, 2, 1),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten())
    engine = Engine(model, input_size=(16, 16), device="cpu", categories=["a", "b"])
    x = torch.randn(3, 3, 16, 16)
    expected = model[1](model[0](x)).detach()  # the ReLU's output before the in-place doubling
    engine.layers()  # the one-off probe forward of the layer catalogue, before counting
    before = engine.counters.snapshot()[0]
    found = reading.reduced_outputs(engine, x, ["1", "3"], _moments(frozenset({"1"})), overlap=True)
    peak = expected.amax((0, 2, 3)).numpy()
    np.testing.assert_allclose(found["1"][0], peak, rtol=1e-6)
    assert engine.cache.get("reduced in the hook", set) == {"1"}
    assert engine.counters.snapshot()[0] - before == 2, "the batch ran again with that layer in its hook"
    again = reading.reduced_outputs(engine, x, ["1", "3"], _moments(frozenset({"1"})), overlap=True)
    np.testing.assert_allclose(again["1"][0], peak, rtol=1e-6)
    assert engine.counters.snapshot()[0] - before == 3, "known from then on: one pass"
