"""Model coverage (issue 17): the engine's main calls over one small model per family.

The fast subset (``bench.coverage.fast_subset``: one small CNN per torchvision family at 64 px,
a tiny ViT, Swin and MaxViT, two timm models; random weights) runs predictions, every layer's
maps with their layouts, every CAM method on the automatic layer (Score-CAM's kin with 2 samples,
on layers of at most 64 channels), guided backpropagation or a clear refusal, 5 steps of filter
optimisation, dead channels over two images; after each model no hook is left and eval mode
and frozen parameters are restored. ``bench/coverage.py`` writes the same checks as a table;
the ``slow`` sweep runs every torchvision classifier.
"""

from __future__ import annotations

import pytest
import torch

from bench.coverage import check_engine, fast_subset, images_for, small_torchvision
from cnnvis_core import Engine, zoo

FAST = fast_subset()


def _assert_covered(name: str, outcomes: dict) -> None:
    for call, outcome in outcomes.items():
        assert outcome.status in ("ok", "refused", "skipped"), f"{name} · {call}: {outcome.cell()}"
    assert outcomes["state"].status == "ok"
    for call in ("predict", "maps", "auto layer", "cam:gradcam", "cam:layercam", "cam:xgradcam", "optimize", "dead"):
        assert outcomes[call].status == "ok", f"{name} · {call}: {outcomes[call].cell()}"


@pytest.mark.parametrize("name", list(FAST))
def test_fast_subset(name: str) -> None:
    torch.manual_seed(0)
    model, side = FAST[name]()
    engine = Engine(model, input_size=(side, side), device="cpu", name=name)
    outcomes = check_engine(engine, images_for(side), masked_channels=64)
    _assert_covered(name, outcomes)
    if name.startswith(("vit", "timm vit")):
        assert outcomes["auto layer"].detail.endswith("(tokens)")
    if name.startswith("swin"):
        assert outcomes["auto layer"].detail.endswith("(NHWC)")


@pytest.mark.slow
@pytest.mark.parametrize("name", zoo.list_architectures())
def test_every_torchvision_classifier(name: str) -> None:
    torch.manual_seed(0)
    model, side = small_torchvision(name)
    engine = Engine(model, input_size=(side, side), device="cpu", name=name)
    _assert_covered(name, check_engine(engine, images_for(side), masked_channels=0))
