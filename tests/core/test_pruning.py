"""Dead channels over streamed images, and the masking check that they are removable."""

from __future__ import annotations

import copy
import csv
import gc
import io
import json
import weakref

import numpy as np
import pytest
import torch
from torch import nn

from cnnvis_core import Engine, InputError, LayerError
from cnnvis_core.hooks import hook_count

SIZE = 12


class KnownDead(nn.Module):
    """conv → ReLU → conv → ReLU → GAP → linear, with two channels of the first conv made dead:

    channel 1: weights 0 and bias −0.5, so the conv outputs −0.5 everywhere and the ReLU 0;
    channel 4: weights 0 and bias 0, so both the conv and the ReLU output 0.
    ``on_forward`` (if set) is called with each batch, to watch how images are streamed.
    """

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(6, 4, 3, padding=1)
        self.relu2 = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 5)
        with torch.no_grad():
            self.conv.bias.abs_()          # live channels: positive bias, so they fire
            self.conv.weight[1] = 0.0
            self.conv.bias[1] = -0.5
            self.conv.weight[4] = 0.0
            self.conv.bias[4] = 0.0
            self.conv2.bias.copy_(torch.tensor([0.3, 0.2, 0.4, 0.1]))
        self.on_forward = None
        self.explode_after = None
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.on_forward is not None:
            self.on_forward(x)
        if self.explode_after is not None and self.calls > self.explode_after:
            raise RuntimeError("boom")
        h = self.relu2(self.conv2(self.relu(self.conv(x))))
        return self.fc(self.pool(h).flatten(1))


def _images(n: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(3, SIZE, SIZE, generator=g) for _ in range(n)]


@pytest.fixture()
def engine() -> Engine:
    return Engine(KnownDead(), input_size=(SIZE, SIZE), device="cpu")


def _direct_peaks(model: nn.Module, images: list[torch.Tensor]) -> dict[str, np.ndarray]:
    """Independent reference: run the layers by hand on all images at once."""
    with torch.no_grad():
        x = torch.stack(images)
        c1 = model.conv(x)
        r1 = torch.relu(c1)
        c2 = model.conv2(r1)
        r2 = torch.relu(c2)
    return {name: t.abs().amax((0, 2, 3)).numpy() for name, t in
            {"conv": c1, "relu": r1, "conv2": c2, "relu2": r2}.items()}


def test_known_dead_channels_are_found(engine):
    images = _images(10)
    dead = engine.dead_channels(images, batch_size=4)
    assert [layer.name for layer in dead.layers] == ["conv", "relu", "conv2", "relu2"]  # conv and ReLU only
    assert dead["relu"].dead == (1, 4)
    assert dead["conv"].dead == (4,)                # −0.5 is not zero
    assert dead["relu"].fraction == pytest.approx(2 / 6)
    reference = _direct_peaks(engine.model, images)
    for layer in dead.layers:
        assert layer.dead == tuple(np.flatnonzero(reference[layer.name] <= 0.0)), layer.name
    assert dead.images == 10 and dead.total == 3
    assert hook_count(engine.model) == 0


def test_peaks_match_direct_computation_and_eps_thresholds_them(engine):
    images = _images(9, seed=1)
    peaks = engine.channel_peaks(images, batch_size=4)
    reference = _direct_peaks(engine.model, images)
    for name, peak in zip(peaks.names, peaks.peaks):
        assert np.allclose(peak, reference[name], rtol=1e-5, atol=1e-6), name
    assert peaks.peaks[0][1] == pytest.approx(0.5)
    assert 1 not in peaks.dead(0.49)["conv"].dead and 1 in peaks.dead(0.5)["conv"].dead
    eps = float(np.sort(reference["relu2"])[1])       # the two weakest relu2 channels
    assert len(peaks.dead(eps)["relu2"].dead) == 2
    assert engine.dead_channels(images, ["relu2"], eps=eps).as_dict()["relu2"] == peaks.dead(eps)["relu2"].dead
    with pytest.raises(InputError, match="Epsilon"):
        engine.dead_channels(images, eps=-1.0)


def test_masking_dead_channels_changes_nothing_and_a_live_one_does(engine):
    images = _images(12, seed=2)
    dead = engine.dead_channels(images, batch_size=5)
    before = engine.counters.forward
    check = engine.verify_pruning(images, dead, batch_size=5)
    assert engine.counters.forward == before + 2 * 3            # plain + masked, per batch
    assert check.max_logit_change < 1e-6 and not check.top1_changed
    assert (check.masked_channels, check.masked_layers, check.images) == (3, 2, 12)

    live = engine.verify_pruning(images, {"relu": [0, 2]})
    # independent reference: remove the filters from a copy of the model
    pruned = copy.deepcopy(engine.model)
    with torch.no_grad():
        pruned.conv.weight[[0, 2]] = 0.0
        pruned.conv.bias[[0, 2]] = 0.0
        x = torch.stack(images)
        plain, cut = engine.model(x), pruned(x)
    assert live.max_logit_change > 1e-3
    assert live.max_logit_change == pytest.approx(float((cut - plain).abs().max()), rel=1e-5)
    assert live.changed_images == int((cut.argmax(1) != plain.argmax(1)).sum())
    assert live.max_abs_logit == pytest.approx(float(plain.abs().max()), rel=1e-6)
    assert hook_count(engine.model) == 0


def test_images_are_streamed_lazily_in_batches_and_released(engine):
    alive: list[weakref.ref] = []
    pulled = 0
    seen: list[tuple[int, int, int]] = []

    def stream(n: int):
        nonlocal pulled
        g = torch.Generator().manual_seed(3)
        for _ in range(n):
            pulled += 1
            image = torch.randn(3, SIZE, SIZE, generator=g)
            alive.append(weakref.ref(image))
            yield image

    def watch(x: torch.Tensor) -> None:
        gc.collect()
        seen.append((x.shape[0], pulled, sum(ref() is not None for ref in alive)))

    engine.layers()                      # the probe forward, before we watch
    engine.model.on_forward = watch
    dead = engine.dead_channels(stream(103), batch_size=8)
    assert dead.images == 103
    assert [s[0] for s in seen] == [8] * 12 + [7]
    for k, (_, pulled_then, alive_then) in enumerate(seen):
        assert pulled_then == min(8 * (k + 1), 103)      # never read ahead of the batch
        assert alive_then <= 8                           # earlier batches are gone
    assert dead["relu"].dead == (1, 4)


def test_shared_relu_is_judged_on_its_last_call():
    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(3, 5, 1)
            self.b = nn.Conv2d(5, 3, 1)
            self.act = nn.ReLU()
            self.fc = nn.Linear(3, 2)
            with torch.no_grad():
                self.a.bias.fill_(-100.0)   # first call: everything dead (5 channels)
                self.b.bias.copy_(torch.tensor([5.0, -100.0, 5.0]))

        def forward(self, x):
            return self.fc(self.act(self.b(self.act(self.a(x)))).mean((2, 3)))

    engine = Engine(Shared(), input_size=(4, 4), device="cpu")
    images = [torch.rand(3, 4, 4) for _ in range(3)]
    assert engine.layer("act").calls == 2
    dead = engine.dead_channels(images, ["act"])
    assert dead["act"].channels == 3 and dead["act"].dead == (1,)
    assert engine.verify_pruning(images, dead).max_logit_change == 0.0
    assert engine.verify_pruning(images, {"act": [0]}).max_logit_change > 0.0
    assert hook_count(engine.model) == 0


def test_no_hooks_left_after_errors(engine):
    images = _images(10, seed=4)
    engine.model.explode_after = engine.model.calls + 1    # the second batch fails
    with pytest.raises(RuntimeError, match="boom"):
        engine.dead_channels(images, batch_size=4)
    assert hook_count(engine.model) == 0
    engine.model.explode_after = engine.model.calls + 1    # the masked forward fails
    with pytest.raises(RuntimeError, match="boom"):
        engine.verify_pruning(images, {"relu": [1]}, batch_size=4)
    assert hook_count(engine.model) == 0
    engine.model.explode_after = None

    def bad_stream():
        yield from images[:5]
        yield "not an image"
    with pytest.raises(InputError):
        engine.dead_channels(bad_stream(), batch_size=4)
    assert hook_count(engine.model) == 0
    assert all(not m._forward_hooks for m in engine.model.modules())


def test_errors_say_what_to_do(engine):
    images = _images(2)
    with pytest.raises(InputError, match="at least one image"):
        engine.dead_channels([])
    with pytest.raises(InputError, match="wrap a single image"):
        engine.dead_channels(np.zeros((SIZE, SIZE, 3), np.uint8))
    with pytest.raises(LayerError, match="relu2"):
        engine.dead_channels(images, ["relu3"])
    with pytest.raises(InputError, match="6 channels"):
        engine.verify_pruning(images, {"relu": [6]})
    with pytest.raises(InputError, match="batch size"):
        engine.dead_channels(images, batch_size=0)
    with pytest.raises(InputError, match="differ in size"):
        engine.dead_channels([torch.zeros(3, SIZE, SIZE), torch.zeros(3, SIZE + 2, SIZE)])


def test_csv_and_json_list_every_dead_channel(engine):
    dead = engine.dead_channels(_images(4))
    rows = list(csv.DictReader(io.StringIO(dead.to_csv())))
    assert [(r["layer"], int(r["channel"])) for r in rows] == [("conv", 4), ("relu", 1), ("relu", 4)]
    data = json.loads(dead.to_json())
    assert data["images"] == 4 and data["eps"] == 0.0
    assert {d["name"]: d["dead"] for d in data["layers"]} == {"conv": [4], "relu": [1, 4], "conv2": [], "relu2": []}


def test_demo_model_dead_channels_agree_with_feature_maps(demo_engine, demo_images):
    names = ["features.relu5", "features.relu7", "features.conv7"]
    peaks = demo_engine.channel_peaks(iter(demo_images[:6]), names, batch_size=4)
    maps = [demo_engine.feature_maps(image, names) for image in demo_images[:6]]
    for name, peak in zip(peaks.names, peaks.peaks):
        reference = torch.stack([m[name] for m in maps]).abs().amax((0, 2, 3)).numpy()
        assert np.allclose(peak, reference, rtol=1e-4, atol=1e-5), name
    dead = peaks.dead(0.0)
    check = demo_engine.verify_pruning(demo_images[:6], dead)
    assert check.max_logit_change < 1e-4 and not check.top1_changed
    assert hook_count(demo_engine.model) == 0
    default = [layer.name for layer in demo_engine.dead_channels(demo_images[:2]).layers]
    assert default == [f"features.{kind}{i}" for i in range(1, 8) for kind in ("conv", "relu")]


def test_masking_never_leaks_into_a_concurrent_caller(engine):
    import threading
    images = _images(60, seed=5)
    probe = _images(1, seed=6)[0]
    expected = engine.logits(probe)
    mismatches: list[float] = []
    runs = []
    done = threading.Event()

    def other_session() -> None:
        while not done.is_set():
            got = engine.logits(probe)
            runs.append(1)
            if not torch.equal(got, expected):
                mismatches.append(float((got - expected).abs().max()))

    thread = threading.Thread(target=other_session)
    thread.start()
    try:
        check = engine.verify_pruning(iter(images), {"relu": [0, 2, 3]}, batch_size=2)
    finally:
        done.set()
        thread.join()
    assert check.max_logit_change > 1e-3       # the mask was really on during our batches
    assert not mismatches, mismatches[:3]
    assert len(runs) >= 5                      # the other caller really ran in between
    assert hook_count(engine.model) == 0
