"""Feature-map pictures and numbers: paging, ordering, grid tiling, summaries, statistics."""

from __future__ import annotations

import math
from itertools import pairwise

import numpy as np
import pytest
import torch

from cnnvis_core import InputError
from cnnvis_core import features as fx
from cnnvis_core.layers import LayerInfo
from cnnvis_core.render import colormap_lut
from cnnvis_core.sheets import BACKGROUND, layout, sheet_png, titled_sheet


def _maps(c: int = 10, h: int = 4, w: int = 5, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(c, h, w, generator=g)


def test_pages_cover_every_channel_once_with_the_right_boundaries():
    maps = _maps(130, 2, 2)
    pages = [fx.channel_page(maps, p, 64) for p in range(3)]
    assert [p.pages for p in pages] == [3, 3, 3]
    assert [len(p.channels) for p in pages] == [64, 64, 2]
    assert pages[2].channels == (128, 129) and (pages[2].start, pages[2].stop) == (128, 130)
    assert sum((p.channels for p in pages), ()) == tuple(range(130))
    with pytest.raises(InputError, match="3 page"):
        fx.channel_page(maps, 3, 64)
    assert fx.channel_page(maps, 0, 200).pages == 1
    assert fx.page_count(128, 64) == 2 and fx.page_count(129, 64) == 3


def test_order_by_mean_is_strongest_first_across_pages_ties_by_index():
    maps = _maps(40, 3, 3, seed=1)
    maps[7] = 5.0
    maps[3] = 5.0          # same mean as channel 7: the lower index comes first
    means = maps.reshape(40, -1).numpy().mean(1)
    ordered = sum((fx.channel_page(maps, p, 16, "mean").channels for p in range(3)), ())
    assert ordered[:2] == (3, 7)
    assert sorted(ordered) == list(range(40))
    assert all(means[a] >= means[b] for a, b in pairwise(ordered))
    assert np.allclose(fx.channel_means(maps), means, atol=1e-6)
    with pytest.raises(InputError, match="order"):
        fx.channel_order(maps, "loudest")


def _gray_pixels(unit: np.ndarray) -> np.ndarray:
    return np.clip(unit * 255.0 + 0.5, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("scaling", ["channel", "layer"])
def test_grid_puts_each_scaled_channel_in_its_tile(scaling):
    maps = _maps(10, 4, 5, seed=2)
    picked = [3, 1, 7]
    grid = fx.channel_grid(maps, picked, cmap="gray", scaling=scaling, ncols=2, min_tile=8, padding=1, labels=False)
    factor = math.ceil(8 / 4)
    th, tw = 4 * factor, 5 * factor
    assert grid.shape == (2 * (th + 1) + 1, 2 * (tw + 1) + 1, 3)
    a = maps.numpy()
    for k, c in enumerate(picked):
        lo, hi = (a[c].min(), a[c].max()) if scaling == "channel" else (a.min(), a.max())
        expected = _gray_pixels((a[c] - lo) / (hi - lo))
        expected = np.kron(expected, np.ones((factor, factor), np.uint8))
        r, col = divmod(k, 2)
        tile = grid[1 + r * (th + 1): 1 + r * (th + 1) + th, 1 + col * (tw + 1): 1 + col * (tw + 1) + tw]
        assert np.abs(tile[..., 0].astype(int) - expected).max() <= 1, (k, c)
    # the fourth cell and the gaps are background
    assert (grid[th + 2:, tw + 2:] == BACKGROUND).all()
    assert (grid[0] == BACKGROUND).all()


def test_a_constant_channel_is_dark_and_does_not_divide_by_zero():
    maps = torch.zeros(3, 4, 4)
    maps[1] = torch.arange(16.0).view(4, 4)
    unit = fx.scale_maps(maps, "channel")
    assert torch.equal(unit[0], torch.zeros(4, 4)) and unit[1].max() == 1 and unit[1].min() == 0


def test_a_512_channel_layer_is_one_labelled_image():
    maps = torch.relu(_maps(512, 7, 7, seed=3))
    grid = fx.channel_grid(maps, cmap="viridis")
    cols = math.ceil(math.sqrt(512))
    rows = math.ceil(512 / cols)
    tile = 7 * math.ceil(40 / 7)
    strip = (10 + 3) + 2
    assert grid.shape == (rows * (tile + strip + 2) + 2, cols * (tile + 2) + 2, 3)
    assert grid.dtype == np.uint8


def test_mean_and_sum_maps_match_numpy():
    maps = _maps(6, 5, 7, seed=4)
    assert np.allclose(fx.mean_map(maps), maps.numpy().mean(0), atol=1e-6)
    assert np.allclose(fx.sum_map(maps), maps.numpy().sum(0), atol=1e-5)
    picture = fx.map_image(fx.mean_map(maps), "gray", min_size=50)
    assert picture.shape == (50, 70, 3)  # 5×7 enlarged by 10
    values = maps.numpy().mean(0)
    darkest = np.unravel_index(values.argmin(), values.shape)
    assert picture[darkest[0] * 10, darkest[1] * 10].tolist() == [0, 0, 0]


def test_heat_strip_folds_a_vector_row_major():
    v = np.arange(150, dtype=np.float32)
    strip = fx.heat_strip(v, 64)
    assert strip.shape == (3, 64)
    assert strip[1, 5] == 64 + 5 and strip[2, 21] == 149
    assert np.isnan(strip[2, 22:]).all()
    assert fx.heat_strip(np.ones(3), 64).shape == (1, 3)


def _info(name: str, shape: tuple[int, ...], index: int = 0, kind: str = "ReLU") -> LayerInfo:
    return LayerInfo(name, kind, shape, index)


def test_layer_statistics_match_direct_numpy():
    x = torch.relu(_maps(8, 6, 6, seed=5))
    x[2] = 0.0
    x[5] = 0.0
    a = x.numpy()
    stats = fx.layer_stats(_info("relu", (8, 6, 6)), x)
    assert math.isclose(stats.sparsity, float((a == 0).mean()), rel_tol=1e-6)
    assert math.isclose(stats.mean, float(a.mean()), rel_tol=1e-5)
    assert math.isclose(stats.max, float(a.max()), rel_tol=1e-6)
    assert stats.zero_channels == int((a.reshape(8, -1) == 0).all(1).sum()) == 2
    assert stats.spatial and stats.channels == 8
    vec = torch.tensor([0.0, 1.5, 0.0, -2.0])
    vstats = fx.layer_stats(_info("fc", (4,), kind="Linear"), vec)
    assert (vstats.sparsity, vstats.zero_channels, vstats.channels, vstats.spatial) == (0.5, 2, 4, False)


def test_depth_statistics_of_the_demo_model_match_numpy(demo_engine, demo_images):
    layers = demo_engine.layers()
    maps = demo_engine.feature_maps(demo_images[0], [layer.name for layer in layers])
    stats = fx.depth_stats(layers, maps)
    assert [s.name for s in stats] == [layer.name for layer in layers]
    for s in stats:
        a = maps[s.name].numpy()
        assert math.isclose(s.sparsity, float((a == 0).mean()), abs_tol=1e-7), s.name
        assert math.isclose(s.max, float(a.max()), rel_tol=1e-6, abs_tol=1e-7), s.name
    relus = [s for s in stats if s.kind == "ReLU"]
    assert all(s.sparsity > 0 for s in relus)          # rectified maps have exact zeros
    assert all(s.sparsity == 0 for s in stats if s.kind == "Conv2d")


def test_overview_has_one_titled_tile_per_spatial_layer_in_order():
    tile, ncols = 16, 3
    outputs = {}
    layers = []
    for i in range(5):
        m = torch.zeros(2, 4, 4)
        m[:, :, 2:] = 1.0 + i        # right half bright in every layer
        outputs[f"l{i}"] = m
        layers.append(_info(f"l{i}", (2, 4, 4), i))
    outputs["gap"] = torch.ones(2, 1, 1)
    outputs["fc"] = torch.ones(3)
    layers += [_info("gap", (2, 1, 1), 5, "AdaptiveAvgPool2d"), _info("fc", (3,), 6, "Linear")]
    sheet = fx.overview_sheet(layers, outputs, ncols=ncols, tile=tile)
    strip = 2 * (11 + 3) + 2
    rows = math.ceil(5 / ncols)   # gap (1×1) and fc (a vector) are left out
    assert sheet.shape == (rows * (tile + strip + 4) + 4, ncols * (tile + 4) + 4, 3)
    for k in range(5):
        r, c = divmod(k, ncols)
        top, left = 4 + r * (tile + strip + 4), 4 + c * (tile + 4)
        assert sheet[top + tile // 2, left + 1].max() < 30          # dark left half
        assert sheet[top + tile // 2, left + tile - 2].min() > 225  # bright right half
    with pytest.raises(InputError):
        fx.overview_sheet(layers[5:], outputs)


def test_layout_matches_torchvision_make_grid_geometry():
    from torchvision.utils import make_grid
    tiles = (np.arange(7 * 3 * 4 * 3) % 251).astype(np.uint8).reshape(7, 3, 4, 3)
    ours = layout(tiles, ncols=3, padding=2, background=(9, 9, 9))
    theirs = make_grid(torch.from_numpy(tiles).permute(0, 3, 1, 2), nrow=3, padding=2, pad_value=9)
    assert np.array_equal(ours, theirs.permute(1, 2, 0).numpy())
    titled = titled_sheet(tiles, [("a",)] * 7, ncols=3)
    assert titled.shape[1] == 3 * (4 + 4) + 4 and titled.dtype == np.uint8
    assert tuple(colormap_lut("gray")[0]) == (0, 0, 0)


def test_sheet_png_is_lossless():
    import io

    from PIL import Image
    grid = fx.channel_grid(torch.relu(_maps(20, 6, 6, seed=6)), cmap="magma")
    data = sheet_png(grid)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")), grid)
