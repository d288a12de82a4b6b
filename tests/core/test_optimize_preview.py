"""What a page needs to caption the live preview of a filter optimisation: the preview's tiles in
batch order, and which units of a request the cache holds (those are not in the preview)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnvis_core.optimize.loop import preview, preview_tiles
from cnnvis_core.optimize.run import cached_units


@pytest.mark.parametrize("count", [1, 2, 3, 4, 5, 10, 16])
def test_preview_tiles_are_the_batch_items_in_order(count):
    images = torch.stack([torch.full((3, 12, 10), (i + 1) / 20) for i in range(count)])
    tiles = preview_tiles(preview(images), count)
    assert len(tiles) == count
    for i, tile in enumerate(tiles):
        assert tile.shape == (12, 10, 3)
        assert np.all(tile == round((i + 1) / 20 * 255)), i


def test_cached_units_are_those_the_engine_will_not_run_again(demo_engine):
    request = dict(layer="features.relu2", objective="channel", seed=5, steps=1, size=16)
    assert cached_units(demo_engine, units=[1, 2, 3], **request) == ()
    demo_engine.optimize(units=[2], **request)
    assert cached_units(demo_engine, units=[1, 2, 3], **request) == (2,)
    assert cached_units(demo_engine, units=[1, 2, 3], **{**request, "seed": 6}) == ()
    result = demo_engine.optimize(units=[1, 2, 3], **request)
    assert result.cached == 1
