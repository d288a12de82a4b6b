"""Issue 13 in the library: pictures drawn to be shown (fitted, labelled at their size, with their
colour scale), 16-bit images by their true range, and whether pretrained weights can be had."""

from __future__ import annotations

import io
import os
import socket
import time

import numpy as np
import pytest
import torch
from PIL import Image

from cnnvis_core import features as fx
from cnnvis_core import kernels as kx
from cnnvis_core import load_image_with_notes, zoo
from cnnvis_core.render import colormap_lut, with_color_bar
from cnnvis_core.sheets import Style

STYLE = Style(width=500, scale=2)


def bar_rows(picture: np.ndarray, cmap: str) -> list[int]:
    """Rows that run through ``cmap`` from its first colour (left edge) to its last."""
    lut = colormap_lut(cmap).astype(int)
    rows = []
    for r in range(picture.shape[0]):
        row = picture[r].astype(int)
        if np.abs(row[0] - lut[0]).max() <= 2 and (np.abs(row - lut[255]).max(1) <= 2).any() \
                and (np.abs(row - lut[128]).max(1) <= 3).any():
            rows.append(r)
    return rows


def _maps(c: int, h: int, w: int, seed: int) -> torch.Tensor:
    return torch.randn(c, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("scaling", ["channel", "layer"])
def test_a_styled_grid_fits_its_width_and_carries_its_colour_scale(scaling):
    maps = _maps(16, 16, 16, seed=1)
    grid = fx.channel_grid(maps, list(range(16)), "viridis", scaling, style=STYLE)
    plain = fx.channel_grid(maps, list(range(16)), "viridis", scaling)
    assert plain.shape[1] < 250 and grid.shape[1] > 2 * plain.shape[1]       # large enough to read
    assert STYLE.px(STYLE.width) * 0.8 <= grid.shape[1] <= STYLE.px(STYLE.width)
    bar = bar_rows(grid, "viridis")
    assert bar and min(bar) > 0.8 * grid.shape[0]                              # the scale is under the maps
    assert not bar_rows(plain, "viridis")
    assert STYLE.shown(grid) == grid.shape[1] // 2


def test_styled_kernel_pictures_have_scales_axes_and_rgb_inputs():
    w = torch.randn(8, 3, 3, 3, generator=torch.Generator().manual_seed(2))
    assert kx.input_names(3) == ["R", "G", "B"] and kx.input_names(4) == ["0", "1", "2", "3"]
    slices = kx.filter_slices(w, 0, "shared", "rdbu_r", style=STYLE)
    assert bar_rows(slices, "rdbu_r")
    assert slices.shape[1] <= STYLE.px(320), "three 3×3 slices must not fill the page"
    rgb = kx.rgb_kernels(w, "shared", style=STYLE)
    assert bar_rows(rgb, "gray")
    page = kx.kernel_page(w, 0, kx.whole_rows(3, 256), "each", "gray", style=STYLE)
    plain = kx.kernel_page(w, 0, kx.whole_rows(3, 256), "each", "gray", min_tile=48)
    grid_w = plain.image.shape[1]
    assert page.image.shape[1] > grid_w                       # a column of filter labels on the left
    left = page.image[: page.image.shape[0] // 2, : page.image.shape[1] - grid_w]
    assert (left < 100).any(), "the filter axis is not labelled"
    assert bar_rows(page.image, "gray")
    assert kx.whole_rows(3, 256) == 255 and kx.whole_rows(64, 100) == 96 and kx.kernel_columns(48) == 24


def test_the_overview_and_a_summed_map_carry_their_scales():
    from cnnvis_core.layers import LayerInfo
    layers = [LayerInfo(f"l{i}", "ReLU", (2, 8, 8), i) for i in range(3)]
    outputs = {f"l{i}": torch.relu(_maps(2, 8, 8, seed=i)) for i in range(3)}
    assert bar_rows(fx.overview_sheet(layers, outputs, 3, style=STYLE), "gray")
    summed = fx.map_image(fx.sum_map(outputs["l0"]), "magma", style=STYLE, label="sum")
    assert bar_rows(summed, "magma")
    assert np.allclose(fx.max_map(outputs["l0"]), outputs["l0"].numpy().max(0))


def test_a_long_scale_label_is_wrapped_under_the_bar_and_a_narrow_picture_is_padded():
    from cnnvis_core.render import color_bar
    label = "a label much longer than the bar is wide"
    one_line = color_bar("gray", 0.0, 1.0, 600, label, text_size=12)
    wrapped = color_bar("gray", 0.0, 1.0, 100, label, text_size=12)
    assert wrapped.shape[1] == 100 and wrapped.shape[0] >= one_line.shape[0] + 3 * 16   # never wider: more lines
    narrow = np.zeros((20, 40, 3), np.uint8)
    stacked = with_color_bar(narrow, "gray", 0.0, 1.0, label, text_size=12)
    assert stacked.shape[1] == 64 and (stacked[:20, 40:] == 255).all()                 # the bar is 64 px at least


def test_a_16_bit_image_is_stretched_from_its_own_range():
    values = np.linspace(1000, 17320, 32 * 32).reshape(32, 32).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(values).save(buffer, "PNG")
    image, notes = load_image_with_notes(buffer.getvalue())
    assert image.convert("L").getextrema() == (0, 255)
    assert notes == ["Converted from 16-bit grayscale: values 1000–17320 (their own range) stretched to 0–255."]


@pytest.fixture()
def empty_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(zoo, "_probes", {})
    return tmp_path


def test_cached_pretrained_weights_are_available_without_any_probe(empty_cache, monkeypatch):
    import torchvision

    def no_probe(*args, **kwargs):
        raise AssertionError("the cache answers; the network must not be asked")

    monkeypatch.setattr(zoo, "download_reachable", no_probe)
    url = torchvision.models.get_model_weights("squeezenet1_0")["DEFAULT"].url
    path = os.path.join(str(empty_cache), "hub", "checkpoints", os.path.basename(url))
    os.makedirs(os.path.dirname(path))
    open(path, "wb").close()
    status = zoo.pretrained_status("squeezenet1_0")
    assert status.cached and status.available and status.reachable is None and status.path == path


def test_a_download_probe_is_bounded_and_remembered(empty_cache, monkeypatch):
    calls = []

    def hang(*args, **kwargs):
        calls.append(args)
        time.sleep(5)
        raise OSError("never answers")

    monkeypatch.setattr(socket, "create_connection", hang)
    started = time.monotonic()
    status = zoo.pretrained_status("squeezenet1_0")
    assert time.monotonic() - started < 2.5 and not status.available and status.reachable is False
    started = time.monotonic()
    assert not zoo.pretrained_status("squeezenet1_0").available
    assert time.monotonic() - started < 0.1 and len(calls) == 1     # remembered, not probed again
