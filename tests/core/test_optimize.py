"""Filter optimisation on the demo model: it works, it is batched, deterministic, stops early, cleans up."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from torch import nn

from cnnvis_core import Engine, InputError, LayerError, ModelError
from cnnvis_core.demo.data import to_batch
from cnnvis_core.hooks import hook_count
from cnnvis_core.optimize import capture, channel, neuron
from cnnvis_core.optimize.cache import results_cache
from tests.conftest import REPORT

SIZE = 64  # small images keep the file fast; DemoNet takes any size


def _fresh(engine: Engine) -> None:
    results_cache(engine).clear()


def _input(image: np.ndarray) -> torch.Tensor:
    """The demo model's input for an image at its own size (the data set's normalisation, no resize)."""
    return to_batch(torch.tensor(image[None]))


def _channel_means(engine: Engine, image: np.ndarray, layer: str) -> torch.Tensor:
    """Every channel's mean activation for one image, computed independently (engine.feature_maps)."""
    maps = engine.feature_maps(_input(image), [layer])[layer]
    return maps.flatten(1).mean(1) if maps.dim() == 3 else maps


#: the channel test's settings: 128 steps of Adam at lr 0.3 on a 64-px Fourier image, padded by 4 px (Lucid's
#: lr 0.05 is meant for 512 steps). Lucid's jitter 8 / pad 12 / jitter 4 were tuned for 224-px images: on 64 px
#: they would move a third of the picture, trading activation for robustness (the transforms themselves are
#: tested in test_optimize_parts.py)
SHARP = dict(steps=128, lr=0.3, size=SIZE, pad=4, jitter=0, jitter_after=0, degrees=0.0, scale=(1.0, 1.0))


def _quiet_channels(engine: Engine, layer: str, n: int, seed: int, **settings) -> list[int]:
    """``n`` channels spread over the layer, among the quarter it drives least on the starting image.

    A ratio to the starting activation only measures something for a channel that the start does
    not already drive: on the nearly flat gray start some channels fire as much as on their best
    training images, and no picture makes them 10× that. Which channels are quiet is read from the
    start alone, before any optimisation.
    """
    start = engine.optimize(layer, "all", seed=seed, **{**settings, "steps": 0}).activations
    quiet = np.flatnonzero(start <= np.quantile(start, 0.25))
    return [int(quiet[i]) for i in np.linspace(0, len(quiet) - 1, n).round().astype(int)]


@pytest.mark.parametrize("layer", ["features.relu3", "features.relu5", "features.relu7"])
def test_optimised_channels_excite_their_unit_far_more_than_noise(demo_engine, layer):
    _fresh(demo_engine)
    units = _quiet_channels(demo_engine, layer, 4, seed=1, **SHARP)
    noise = demo_engine.optimize(layer, units, seed=1, **{**SHARP, "steps": 0})
    best = demo_engine.optimize(layer, units, seed=1, **SHARP)
    assert noise.cached == len(units) and best.cached == 0  # the starts come from the probe of all channels
    ratios, margins = [], []
    for i, unit in enumerate(units):
        start = _channel_means(demo_engine, noise.images[i], layer)[unit].item()
        means = _channel_means(demo_engine, best.images[i], layer)
        assert best.images[i].shape == (SIZE, SIZE, 3) and best.images[i].dtype == np.uint8
        assert means[unit].item() == pytest.approx(float(best.activations[i]), rel=1e-3, abs=1e-4)
        assert means[unit].item() >= 10 * max(start, 1e-3), (unit, start, means[unit].item())
        others = torch.cat([means[:unit], means[unit + 1:]]).mean().item()
        assert means[unit].item() > others
        ratios.append(means[unit].item() / max(start, 1e-3))
        margins.append(means[unit].item() / max(others, 1e-6))
    REPORT[f"filter optimisation {layer}: activation ÷ noise's (min over channels {units})"] = f"{min(ratios):.0f}×"
    REPORT[f"filter optimisation {layer}: own ÷ mean other channel (min)"] = f"{min(margins):.1f}×"


def test_a_channel_dark_at_the_start_still_lights_up(monkeypatch):
    """A ReLU channel that is 0 everywhere on the start has no gradient; the leaky surrogate still moves it."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 2, 3, padding=1)
    with torch.no_grad():
        conv.weight.uniform_(-0.3, 0.3)
        conv.bias.copy_(torch.tensor([-2.0, 0.1]))  # channel 0: negative for every image near gray
    engine = Engine(nn.Sequential(conv, nn.ReLU(inplace=True)), input_size=(24, 24), device="cpu")
    run = dict(steps=30, lr=0.2, pad=0, jitter=0, jitter_after=0, degrees=0.0, scale=(1.0, 1.0))
    start = engine.optimize("1", [0], steps=0, seed=4)
    lit = engine.optimize("1", [0], seed=4, **run)
    monkeypatch.setattr(capture, "LEAK", 0.0)  # the bare ReLU gradient: nothing to follow
    _fresh(engine)
    stuck = engine.optimize("1", [0], seed=4, **run)
    assert start.activations[0] == 0 and stuck.activations[0] == 0
    assert np.array_equal(stuck.images[0], start.images[0])
    assert lit.activations[0] > 0.05
    assert hook_count(engine.model) == 0


def test_class_visualisations_are_classified_as_their_class(demo_engine):
    _fresh(demo_engine)
    classes = list(range(len(demo_engine.categories)))
    result = demo_engine.optimize(None, "all", objective="class", steps=64, size=SIZE, seed=0)
    assert result.units == tuple(classes) and result.layer is None
    predicted = [demo_engine.predict(_input(image), k=1)[0].index for image in result.images]
    hits = sum(p == c for p, c in zip(predicted, classes))
    REPORT["filter optimisation: class visualisations classified as their class"] = f"{hits}/{len(classes)}"
    assert hits > len(classes) // 2, predicted
    logits = torch.stack([demo_engine.logits(_input(image)) for image in result.images])
    assert np.allclose(logits[range(len(classes)), classes].numpy(), result.activations, rtol=1e-3, atol=1e-3)


def test_a_channel_gives_the_same_image_alone_and_inside_a_batch(demo_engine):
    _fresh(demo_engine)
    batch = demo_engine.optimize("features.relu5", [2, 5, 9, 11], steps=12, size=48, seed=3)
    _fresh(demo_engine)
    alone = demo_engine.optimize("features.relu5", [9], steps=12, size=48, seed=3)
    assert batch.cached == 0 and alone.cached == 0
    diff = np.abs(batch.images[2].astype(int) - alone.images[0].astype(int))
    assert diff.max() <= 2 and diff.mean() < 0.05
    assert alone.activations[0] == pytest.approx(batch.activations[2], rel=1e-3, abs=1e-5)
    assert not np.array_equal(batch.images[1], batch.images[2])


@pytest.mark.parametrize("preset", ["lucid", "keras"])
def test_same_seed_same_images_other_seed_other_images(demo_engine, preset):
    run = dict(steps=6, size=40, preset=preset, crop=0)
    _fresh(demo_engine)
    first = demo_engine.optimize("features.relu4", [0, 7], seed=11, **run)
    _fresh(demo_engine)
    torch.manual_seed(999)  # the global RNG plays no part
    second = demo_engine.optimize("features.relu4", [0, 7], seed=11, **run)
    other = demo_engine.optimize("features.relu4", [0, 7], seed=12, **run)
    assert all(np.array_equal(a, b) for a, b in zip(first.images, second.images))
    assert not np.array_equal(first.images[0], other.images[0])


class _Counter:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, *_args) -> None:
        self.calls += 1


def test_forward_stops_at_the_target_layer(demo_engine):
    _fresh(demo_engine)
    demo_engine.layers()  # the one-off probe forward runs the whole model; do it before counting
    later = {name: _Counter() for name in ("features.conv4", "features.conv7", "fc")}
    target = _Counter()
    modules = dict(demo_engine.model.named_modules())
    handles = [modules[n].register_forward_hook(c) for n, c in later.items()]
    handles.append(modules["features.relu3"].register_forward_hook(target))
    try:
        demo_engine.optimize("features.relu3", [0, 1], steps=3, size=32)
        assert target.calls == 4 and all(c.calls == 0 for c in later.values())  # 3 steps + the final score
        demo_engine.optimize("features.relu3", [0, 1], steps=3, size=32, stop_early=False)
        assert all(c.calls == 4 for c in later.values())
        demo_engine.optimize(None, [0], objective="class", steps=2, size=32)  # logits need the whole network
        assert later["fc"].calls == 7
    finally:
        for handle in handles:
            handle.remove()


class _Tail(nn.Module):
    """Global average pooling that raises once armed: proof that the forward never reached it."""

    armed = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.armed:
            raise RuntimeError("the tail of the network must not run")
        return x.mean((2, 3))


def test_early_stop_skips_a_raising_tail():
    torch.manual_seed(0)
    tail = _Tail()
    engine = Engine(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), tail), input_size=(24, 24),
                    device="cpu")
    assert [info.name for info in engine.layers()] == ["0", "1", "2"]
    tail.armed = True
    result = engine.optimize("1", [0, 3], steps=4)
    assert len(result.images) == 2 and result.activations.shape == (2,)
    assert hook_count(engine.model) == 0
    with pytest.raises(ModelError, match=r"fails on its own input size, 24×24.*tail of the network must not run"):
        engine.optimize("1", [1], steps=2, stop_early=False)  # the tail runs (and raises) without the early stop
    assert hook_count(engine.model) == 0


def test_no_hooks_grads_or_lock_left_after_a_run_and_after_an_error(demo_engine):
    _fresh(demo_engine)
    demo_engine.optimize("features.relu2", [0], steps=2, size=32)
    assert hook_count(demo_engine.model) == 0

    def explode(step, total, preview):
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        demo_engine.optimize("features.relu2", [1], steps=5, size=32, on_step=explode)
    assert hook_count(demo_engine.model) == 0
    assert all(p.grad is None and not p.requires_grad for p in demo_engine.model.parameters())
    assert not demo_engine.model.training
    assert not demo_engine._lock.held  # the lock was released


def test_on_step_reports_progress_and_cancels(demo_engine):
    _fresh(demo_engine)
    seen = []

    def stop_at_three(step, total, preview):
        seen.append((step, total, preview.shape, preview.dtype))
        return step < 3

    result = demo_engine.optimize("features.relu3", [0, 1, 2], steps=50, size=32, on_step=stop_at_three)
    assert result.cancelled and result.steps_done == 3 and result.steps_total == 50
    assert [s[:2] for s in seen] == [(1, 50), (2, 50), (3, 50)]
    assert seen[0][3] == np.uint8 and seen[0][2][2] == 3
    assert len(result.images) == 3
    again = demo_engine.optimize("features.relu3", [0], steps=50, size=32, on_step=lambda *a: False)
    assert again.cached == 0  # a cancelled run is not cached


def test_counts_passes_and_caches_per_unit(demo_engine):
    _fresh(demo_engine)
    before = demo_engine.counters.snapshot()
    first = demo_engine.optimize("features.relu4", [3, 4], steps=5, size=32, seed=2)
    after = demo_engine.counters.snapshot()
    assert (after[0] - before[0], after[1] - before[1]) == (5 + 1, 5)  # one forward per step + the final score
    again = demo_engine.optimize("features.relu4", [4, 3], steps=5, size=32, seed=2)
    assert again.cached == 2 and demo_engine.counters.snapshot() == after
    assert np.array_equal(again.images[0], first.images[1])
    mixed = demo_engine.optimize("features.relu4", [3, 8], steps=5, size=32, seed=2)
    assert mixed.cached == 1 and demo_engine.counters.snapshot()[1] == after[1] + 5
    _fresh(demo_engine)
    alone = demo_engine.optimize("features.relu4", [8], steps=5, size=32, seed=2)
    assert np.abs(alone.images[0].astype(int) - mixed.images[1].astype(int)).max() <= 2


def test_other_objectives_raise_their_score(demo_engine):
    _fresh(demo_engine)
    layer = "features.relu5"
    for kind, extra in [("neuron", dict(position=(4, 5))), ("deepdream", {})]:
        noise = demo_engine.optimize(layer, [0], objective=kind, **{**SHARP, "steps": 0}, **extra)
        best = demo_engine.optimize(layer, [0], objective=kind, **{**SHARP, "steps": 24}, **extra)
        assert best.activations[0] > 3 * max(noise.activations[0], 1e-3), kind
        REPORT[f"filter optimisation: {kind} objective on {layer}, noise → 24 steps"] = \
            f"{noise.activations[0]:.3g} → {best.activations[0]:.3g}"
    maps = demo_engine.feature_maps(_input(best.images[0]), [layer])[layer]
    assert maps.pow(2).sum().item() == pytest.approx(float(best.activations[0]), rel=1e-3)
    composed = channel(layer, 4) + 0.5 * neuron(layer, 9, 4, 4)
    result = demo_engine.optimize_objectives([composed], steps=24, size=SIZE)
    acts = demo_engine.feature_maps(_input(result.images[0]), [layer])[layer]
    expected = acts[4].mean() + 0.5 * acts[9, 4, 4]
    assert float(result.activations[0]) == pytest.approx(expected.item(), rel=1e-3, abs=1e-4)


def test_classic_presets_raise_the_activation(demo_engine):
    _fresh(demo_engine)
    layer = "features.relu4"
    start = dict(preset="multiscale", upscale_steps=1, seed=0)
    unit = _quiet_channels(demo_engine, layer, 1, **start)[0]  # the recipe's bright start drives many channels
    keras0 = demo_engine.optimize(layer, [unit], preset="keras", steps=0)
    keras = demo_engine.optimize(layer, [unit], preset="keras", size=96)
    assert keras.images[0].shape == (96 - 50, 96 - 50, 3)  # crop 25 px per side
    assert keras0.images[0].shape == (180 - 50, 180 - 50, 3)
    multi = demo_engine.optimize(layer, [unit], preset="multiscale", steps=6, upscale_steps=4)
    side = 56
    for _ in range(3):
        side = int(side * 1.2)
    assert multi.images[0].shape == (side, side, 3) and multi.steps_total == 24
    noise = demo_engine.optimize(layer, [unit], steps=0, **start)
    assert noise.cached == 1
    assert multi.activations[0] > 3 * max(noise.activations[0], 1e-3), (unit, noise.activations[0])
    assert keras.activations[0] > 0
    REPORT["filter optimisation: multiscale preset (24 steps), activation ÷ noise's"] = \
        f"{multi.activations[0] / max(noise.activations[0], 1e-3):.0f}× (relu4:{unit})"


def test_penalties_smooth_the_image(demo_engine):
    _fresh(demo_engine)
    plain = demo_engine.optimize("features.relu3", [2], steps=16, size=48, param="pixel", lr=0.05, pad=0,
                                 jitter=0, jitter_after=0, degrees=0, scale=(1, 1))
    smooth = demo_engine.optimize("features.relu3", [2], steps=16, size=48, param="pixel", lr=0.05, pad=0,
                                  jitter=0, jitter_after=0, degrees=0, scale=(1, 1), tv=5.0)

    def tv(image: np.ndarray) -> float:
        a = image.astype(float)
        return np.abs(np.diff(a, axis=0)).mean() + np.abs(np.diff(a, axis=1)).mean()

    assert tv(smooth.images[0]) < tv(plain.images[0])


def test_bad_requests_raise_readable_errors(demo_engine):
    with pytest.raises(LayerError, match=r"features\.relu3"):
        demo_engine.optimize("features.relu33", [0])
    with pytest.raises(InputError, match="0…63"):
        demo_engine.optimize("features.relu3", [64])
    with pytest.raises(InputError, match="objective"):
        demo_engine.optimize("features.relu3", [0], objective="texture")
    with pytest.raises(LayerError, match="spatial"):
        demo_engine.optimize("fc", [0], objective="neuron")
    with pytest.raises(InputError, match="class"):
        demo_engine.optimize(None, [8], objective="class")
    with pytest.raises(InputError, match="Unknown optimisation setting"):
        demo_engine.optimize("features.relu3", [0], learning_rate=0.1)
    with pytest.raises(InputError, match="pixel"):
        demo_engine.optimize("features.relu3", [0], upscale_steps=3)
    with pytest.raises(InputError, match=r"outside the .* map of features\.relu5"):
        demo_engine.optimize("features.relu5", [0], objective="neuron", position=(9, 1), size=32, steps=1)
    assert hook_count(demo_engine.model) == 0


def test_other_callers_interleave_with_a_long_run(demo_engine, demo_images):
    _fresh(demo_engine)
    stop, steps = threading.Event(), []

    def on_step(step, total, preview):
        steps.append(step)
        return not stop.is_set()

    worker = threading.Thread(target=demo_engine.optimize, args=("features.relu7", list(range(8))),
                              kwargs=dict(steps=10_000, size=SIZE, on_step=on_step))
    worker.start()
    try:
        while not steps:
            time.sleep(0.01)
        demo_engine.predict(demo_images[0])  # waits one step at most, not for the run
        assert worker.is_alive()
    finally:
        stop.set()
        worker.join(60)
    assert not worker.is_alive() and len(steps) < 10_000
