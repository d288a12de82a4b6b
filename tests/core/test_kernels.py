"""Kernel pictures and numbers: RGB tiles, slices, paging, scalings, norms, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from cnnvis_core import Engine, InputError, LayerError
from cnnvis_core import kernels as kx
from cnnvis_core.hooks import hook_count
from cnnvis_core.sheets import layout


def _weight(out: int, inp: int, k: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(out, inp, k, k, generator=torch.Generator().manual_seed(seed))


def _pixels(unit: np.ndarray) -> np.ndarray:
    return np.clip(unit * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _tile(image: np.ndarray, k: int, size: int, ncols: int, padding: int = 2) -> np.ndarray:
    r, c = divmod(k, ncols)
    top, left = padding + r * (size + padding), padding + c * (size + padding)
    return image[top: top + size, left: left + size]


def test_engine_kernels_is_a_cpu_copy_and_runs_no_forward(demo_engine):
    before = demo_engine.counters.snapshot()
    w = demo_engine.kernels("features.conv1")
    assert w.shape == (16, 3, 3, 3) and w.device.type == "cpu" and w.dtype == torch.float32
    assert torch.equal(w, demo_engine.model.features.conv1.weight.cpu())
    w.zero_()
    assert demo_engine.model.features.conv1.weight.abs().sum() > 0
    assert demo_engine.counters.snapshot() == before
    assert demo_engine.conv_layers() == [f"features.conv{i}" for i in range(1, 8)]


@pytest.mark.parametrize("name", ["features.relu1", "fc", "no.such.layer", ""])
def test_a_layer_that_is_not_a_conv_names_the_convs(demo_engine, name):
    with pytest.raises(LayerError, match=r"features\.conv1, features\.conv2") as info:
        demo_engine.kernels(name)
    assert "not a 2-D convolution" in str(info.value)
    assert hook_count(demo_engine.model) == 0


@pytest.mark.parametrize("scaling", ["each", "shared"])
def test_rgb_tiles_show_each_filter_with_its_scaling(scaling):
    w = _weight(5, 3, 2, seed=1)
    w[2] *= 0.1                                  # a weak filter
    image = kx.rgb_kernels(w, scaling, ncols=3, min_tile=8, labels=False)
    factor = 4
    assert image.shape == (2 * (8 + 2) + 2, 3 * (8 + 2) + 2, 3)
    a = w.numpy()
    m = np.abs(a).max()
    for o in range(5):
        if scaling == "each":
            unit = (a[o] - a[o].min()) / (a[o].max() - a[o].min())
        else:
            unit = (a[o] / m + 1) / 2
        expected = np.kron(_pixels(unit.transpose(1, 2, 0)), np.ones((factor, factor, 1), np.uint8))
        assert np.abs(_tile(image, o, 8, 3).astype(int) - expected).max() <= 1, o
    weak = _tile(image, 2, 8, 3).astype(int)
    if scaling == "shared":   # the weak filter stays close to gray; on its own scale it spans the range
        assert np.abs(weak - 128).max() < 40
    else:
        assert weak.max() >= 254 and weak.min() <= 1
    with pytest.raises(InputError, match="3 input channels"):
        kx.rgb_kernels(_weight(4, 8))


def test_filter_slices_one_tile_per_input_channel_shared_scale_is_layer_wide():
    w = _weight(4, 6, 3, seed=2)
    w[1] *= 0.01
    m = float(w.abs().max())
    shared = kx.filter_slices(w, 1, "shared", "gray", ncols=6, min_tile=9, labels=False)
    each = kx.filter_slices(w, 1, "each", "gray", ncols=6, min_tile=9, labels=False)
    assert shared.shape == each.shape == (9 + 4, 6 * (9 + 2) + 2, 3)
    for i in range(6):
        s = w[1, i].numpy()
        exp_shared = np.kron(_pixels((s / m + 1) / 2), np.ones((3, 3), np.uint8))
        exp_each = np.kron(_pixels((s - s.min()) / (s.max() - s.min())), np.ones((3, 3), np.uint8))
        assert np.abs(_tile(shared, i, 9, 6)[..., 0].astype(int) - exp_shared).max() <= 1
        assert np.abs(_tile(each, i, 9, 6)[..., 0].astype(int) - exp_each).max() <= 1
    with pytest.raises(InputError, match="4"):
        kx.filter_slices(w, 4)


def test_kernel_pages_split_all_out_in_pairs():
    w = _weight(5, 7, 3, seed=3)
    pages = [kx.kernel_page(w, p, 16, "each", "gray", min_tile=3) for p in range(3)]
    assert [(p.start, p.stop) for p in pages] == [(0, 16), (16, 32), (32, 35)]
    assert pages[0].first == (0, 0) and pages[0].last == (2, 1)
    assert pages[2].first == (4, 4) and pages[2].last == (4, 6)
    assert all(p.pages == 3 and p.ncols == 7 for p in pages)
    last = pages[2].image
    assert last.shape == (3 + 4, 3 * (3 + 2) + 2, 3)       # one row of 3 tiles
    s = w[4, 5].numpy()
    expected = _pixels((s - s.min()) / (s.max() - s.min()))
    assert np.abs(_tile(last, 1, 3, 3)[..., 0].astype(int) - expected).max() <= 1
    with pytest.raises(InputError, match="3 page"):
        kx.kernel_page(w, 3, 16)


def test_norms_match_numpy_and_flag_the_smallest():
    w = _weight(12, 4, 3, seed=4)
    w[9] = 0.0
    w[4] *= 0.05
    result = kx.kernel_norms(w, flag=3)
    a = w.numpy().reshape(12, -1).astype(np.float64)
    assert np.allclose(result.l1, np.abs(a).sum(1)) and np.allclose(result.l2, np.sqrt((a ** 2).sum(1)))
    assert result.flagged[:2] == (9, 4) and len(result.flagged) == 3
    assert result.flagged[2] == int(np.argsort(np.abs(a).sum(1))[2])
    assert len(kx.kernel_norms(w).flagged) == 1           # a tenth of 12, at least one
    counts, edges = kx.weight_histogram(w, bins=20)
    assert counts.sum() == w.numel() and len(edges) == 21
    assert math.isclose(edges[0], float(w.min()), rel_tol=1e-6)
    # Rice's rule by default: 2 · 432^(1/3) = 15.1 → 15 bins, clamped to 10 … 80
    assert [len(kx.weight_histogram(t)[0]) for t in (w, torch.ones(8), torch.zeros(10 ** 6))] == [15, 10, 80]


def test_unit_tiles_rejects_unknown_scaling_and_handles_zero_kernels():
    with pytest.raises(InputError, match="scaling"):
        kx.unit_tiles(torch.zeros(2, 3, 3), "loud")
    assert torch.equal(kx.unit_tiles(torch.zeros(2, 3, 3), "each"), torch.full((2, 3, 3), 0.5))
    assert torch.equal(kx.unit_tiles(torch.zeros(2, 3, 3), "shared"), torch.full((2, 3, 3), 0.5))


def test_torchvision_first_layer_and_grouped_convs():
    from torchvision.models import mobilenet_v3_small
    engine = Engine(mobilenet_v3_small(), device="cpu")
    names = engine.conv_layers()
    first = engine.kernels(names[0])
    assert first.shape[1] == 3
    assert kx.rgb_kernels(first).ndim == 3
    depthwise = next(n for n in names if engine.kernels(n).shape[1] == 1)
    image = kx.filter_slices(engine.kernels(depthwise), 0)
    assert image.ndim == 3
    assert isinstance(dict(engine.model.named_modules())[depthwise], nn.Conv2d)
    tiles = layout(np.zeros((1, 2, 2, 3), np.uint8), 1, 1)
    assert tiles.shape == (4, 4, 3)


def test_labelled_kernel_sheets_frame_white_zero_kernels_in_gray():
    from cnnvis_core.render import colormap_lut
    w = _weight(2, 3, 3, seed=5)
    w[0, 1] = 0.0                                     # a zero slice: the white centre of rdbu_r
    image = kx.filter_slices(w, 0, "shared", "rdbu_r", ncols=3, min_tile=9, labels=True)
    pad = 3                                           # labelled kernel sheets: padding 2 + 1
    top, left = pad, pad + (9 + pad)                  # tile 1 (first row, second column)
    zero_tile = image[top: top + 9, left: left + 9]
    assert (zero_tile == colormap_lut("rdbu_r")[128]).all()
    gap = image[top + 4, left - 1]
    assert tuple(gap) == kx.LABELLED_BACKGROUND
    assert np.abs(gap.astype(int) - zero_tile[4, 4].astype(int)).max() > 30   # the tile stands out
