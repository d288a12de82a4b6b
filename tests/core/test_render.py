"""Pictures from tensors: scaling, colormaps, grids and overlays."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cnnvis_core import InputError
from cnnvis_core.render import COLORMAPS, colorize, colormap_lut, overlay, to_png_bytes


@pytest.mark.parametrize("name", COLORMAPS)
def test_every_colormap_has_256_distinct_ordered_entries(name):
    lut = colormap_lut(name)
    assert lut.shape == (256, 3) and lut.dtype == np.uint8
    assert len({tuple(c) for c in lut}) > 100


def test_gray_is_the_identity_and_viridis_ends_match_its_definition():
    assert np.array_equal(colormap_lut("gray")[:, 0], np.arange(256))
    assert tuple(colormap_lut("viridis")[0]) == (68, 1, 84)       # #440154
    assert tuple(colormap_lut("viridis")[-1]) == (253, 231, 37)   # #fde725


def test_unknown_colormap_is_our_error():
    with pytest.raises(InputError, match="Unknown colormap"):
        colormap_lut("no-such-map")


def test_colorize_maps_through_the_table():
    out = colorize(np.array([[0.0, 1.0]]), "gray")
    assert out.shape == (1, 2, 3) and out[0, 0].tolist() == [0, 0, 0] and out[0, 1].tolist() == [255] * 3


def test_overlay_blends_with_the_given_opacity():
    image = Image.new("RGB", (8, 6), (100, 100, 100))
    heat = np.ones((3, 4), np.float32)
    top = colormap_lut("jet")[255].astype(float)
    for alpha in (0.0, 0.3, 1.0):
        out = np.asarray(overlay(image, heat, alpha, "jet"), float)
        assert out.shape == (6, 8, 3)
        assert np.allclose(out, (1 - alpha) * 100 + alpha * top, atol=1)
    with pytest.raises(InputError):
        overlay(image, heat, 1.5)


def test_png_bytes_round_trip():
    array = (np.arange(48).reshape(4, 4, 3) * 5).astype(np.uint8)
    import io
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(to_png_bytes(array)))), array)


def test_a_color_bar_runs_through_the_colormap_from_low_to_high():
    from cnnvis_core.render import color_bar, with_color_bar
    bar = color_bar("viridis", -1.5, 3.0, width=200, label="activation")
    lut = colormap_lut("viridis")
    assert bar.shape[1] == 200 and bar.dtype == np.uint8
    assert np.abs(bar[2, 0].astype(int) - lut[0]).max() <= 1 and np.abs(bar[2, -1].astype(int) - lut[255]).max() <= 1
    assert (bar[-8:, :40] < 128).any() and (bar[-8:, -40:] < 128).any()  # the end values are printed
    picture = np.zeros((50, 120, 3), np.uint8)
    stacked = with_color_bar(picture, "gray", 0.0, 1.0)
    assert stacked.shape[1] == 120 and stacked.shape[0] > 50 and not stacked[:50].any()
