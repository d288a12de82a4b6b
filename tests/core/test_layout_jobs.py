"""Dead channels, channel statistics and data set examples read through the layout (issue 17): a
ViT block's output ``(B, 1 + h·w, D)`` is D channels over the h×w grid (the class token is no
position), a Swin stage's ``(B, H, W, C)`` is C channels; each checked against a direct
computation from the raw tokens.

Tiny torchvision VisionTransformer (32 px, 4×4 patches) and Swin (32 px), random weights, 6 images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn
from torchvision.models import VisionTransformer

from cnnvis_core import Engine, jobs, load_image
from cnnvis_core.data import Dataset
from cnnvis_core.hooks import hook_count
from cnnvis_core.layouts import fill_channels
from cnnvis_core.pruning import channel_peaks, dead_channels, verify_pruning, zeroed_channels

BLOCK = "encoder.layers.encoder_layer_0"
N_IMAGES = 6


@pytest.fixture(scope="module")
def vit() -> Engine:
    torch.manual_seed(0)
    model = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32)
    nn.init.normal_(model.heads.head.weight, std=0.5)  # torchvision zero-initialises it
    with torch.no_grad():
        model.class_token.fill_(50.0)  # far above every patch: reading it as a position would show
    return Engine(model, input_size=(32, 32), device="cpu")


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    generator = np.random.default_rng(7)
    return [generator.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(N_IMAGES)]


@pytest.fixture(scope="module")
def ds(images, tmp_path_factory) -> Dataset:
    root = tmp_path_factory.mktemp("tokens")
    for i, image in enumerate(images):
        Image.fromarray(image).save(root / f"{i:02d}.png")
    return Dataset.from_path(root)


def _files(ds: Dataset) -> list:
    """The data set's images as read back from their files, in id order."""
    return [load_image(ds.path(i)) for i in range(N_IMAGES)]


def _raw(engine: Engine, layer: str, images: list) -> torch.Tensor:
    """The layer's raw outputs for ``images``, one plain forward each (no cnnvis reading)."""
    found = []
    handle = engine.module(layer).register_forward_hook(lambda _m, _i, out: found.append(out.detach().clone()))
    try:
        with torch.no_grad():
            for image in images:
                engine.model(engine.preprocess(image))
    finally:
        handle.remove()
    return torch.cat(found)


def test_a_block_is_read_as_d_channels_over_the_grid(vit: Engine) -> None:
    info = vit.layer(BLOCK)
    assert (info.layout, info.prefix_tokens, info.grid, info.output_shape) == ("tokens", 1, (4, 4), (17, 16))
    assert info.map_shape == (16, 4, 4) and info.channels == 16


def test_channel_stats_of_a_block_equal_the_tokens(vit: Engine, ds: Dataset, images) -> None:
    stats = jobs.channel_stats(vit, ds, [BLOCK], batch_size=4)
    tokens = _raw(vit, BLOCK, _files(ds))
    patches = tokens[:, 1:, :].double()  # (N, h·w, D): the class token is not a position
    np.testing.assert_allclose(stats.peak[BLOCK], patches.abs().amax((0, 1)).numpy(), rtol=1e-6)
    np.testing.assert_allclose(stats.mean[BLOCK], patches.mean((0, 1)).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats.active[BLOCK], (patches > 0).double().mean((0, 1)).numpy(), atol=1e-12)
    with_class = tokens.double().abs().amax((0, 1)).numpy()
    assert np.all(with_class > 2 * stats.peak[BLOCK]), "the class token must not count"
    assert hook_count(vit.model) == 0


def test_dataset_examples_of_a_block_find_the_top_patch(vit: Engine, ds: Dataset) -> None:
    result = jobs.dataset_examples(vit, ds, [BLOCK], k=2, batch_size=4)
    tokens = _raw(vit, BLOCK, _files(ds))
    patches = tokens[:, 1:, :]  # (N, 16, D)
    for channel in (0, 5, 15):
        per_image = patches[:, :, channel].amax(1)
        best = int(per_image.argmax())
        example = result.top(BLOCK, channel)[0]
        assert example.id == best and example.activation == pytest.approx(float(per_image[best]), rel=1e-5)
        assert example.position == divmod(int(patches[best, :, channel].argmax()), 4)
        # after a global attention block every patch token depends on the whole image
        assert example.box == (0, 0, 32, 32)


def test_dead_channels_of_a_block_follow_the_patch_tokens(vit: Engine, images) -> None:
    peaks = channel_peaks(vit, images, [BLOCK])
    tokens = _raw(vit, BLOCK, images)
    np.testing.assert_allclose(peaks.peaks[0], tokens[:, 1:].abs().amax((0, 1)).numpy(), rtol=1e-6)
    eps = float(np.sort(peaks.peaks[0])[2])  # the three quietest channels
    assert dead_channels(vit, images, [BLOCK], eps=eps)[BLOCK].dead == tuple(
        int(c) for c in np.flatnonzero(peaks.peaks[0] <= eps))


def test_zeroing_a_token_channel_keeps_the_class_token(vit: Engine, images) -> None:
    info = vit.layer(BLOCK)
    x = torch.randn(2, 17, 16)
    out = fill_channels(info, x, torch.tensor([3, 7]))
    assert torch.equal(out[:, 0], x[:, 0]) and bool((out[:, 1:, [3, 7]] == 0).all())
    keep = [c for c in range(16) if c not in (3, 7)]
    assert torch.equal(out[:, 1:, keep], x[:, 1:, keep])
    with zeroed_channels(vit, {BLOCK: [3]}):
        zeroed = _raw(vit, BLOCK, images[:1])
    assert bool((zeroed[:, 1:, 3] == 0).all()) and bool((zeroed[:, 0, 3] != 0).all())
    check = verify_pruning(vit, images, {BLOCK: [3]})
    assert check.masked_channels == 1 and check.max_logit_change > 0  # a live channel: the logits move
    assert hook_count(vit.model) == 0


def test_a_swin_stage_is_read_channels_last() -> None:
    torch.manual_seed(0)
    model = torchvision.models.SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[1, 1], num_heads=[1, 2],
                                               window_size=[4, 4], num_classes=10)
    engine = Engine(model, input_size=(32, 32), device="cpu")
    stage = "features.1"
    assert engine.layer(stage).layout == "NHWC" and engine.layer(stage).map_shape == (16, 8, 8)
    generator = np.random.default_rng(1)
    images = [generator.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(3)]
    peaks = channel_peaks(engine, images, [stage])
    raw = _raw(engine, stage, images)  # (N, H, W, C)
    np.testing.assert_allclose(peaks.peaks[0], raw.abs().amax((0, 1, 2)).numpy(), rtol=1e-6)


def test_the_manifest_gives_the_map_shape_and_the_layout(vit: Engine, ds: Dataset, tmp_path: Path) -> None:
    stats = jobs.channel_stats(vit, ds, [BLOCK], batch_size=8)
    (entry,) = stats.manifest["layers"]
    assert entry["shape"] == [16, 4, 4] and entry["layout"] == "tokens" and entry["output_shape"] == [17, 16]
