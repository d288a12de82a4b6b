"""A model file uploaded through the sidebar (issue 17): a ``.pt2`` made here with torch.export from
a tiny model, carrying its class names; the Predictions page then shows that model's answer."""

from __future__ import annotations

import io
import json
import re

import pytest
import torch
from torch import nn

from tests.e2e.browser import AppPage, import_expect

pytestmark = pytest.mark.e2e
expect = import_expect()

CLASSES = ["apple", "pear", "plum"]
LABEL = "Model file (.pt2 from torch.export.save, .onnx)"


def _tiny_pt2() -> bytes:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 3)).eval()
    program = torch.export.export(model, (torch.randn(2, 3, 48, 48),),
                                  dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},))
    buffer = io.BytesIO()
    torch.export.save(program, buffer, extra_files={"cnnvis.json": json.dumps({"categories": CLASSES})})
    return buffer.getvalue()


def test_an_uploaded_pt2_model_gives_the_predictions(app: AppPage, screenshots) -> None:
    app.choose_radio("Model", "Model file (.pt2, .onnx)")
    expect(app.sidebar().get_by_text("Upload a .pt2 or .onnx", exact=False)).to_be_visible()
    app.upload(LABEL, "fruit.pt2", _tiny_pt2(), "application/octet-stream")
    expect(app.sidebar().get_by_text(re.compile(r"model file fruit\.pt2"))).to_be_visible()
    expect(app.sidebar().get_by_text(re.compile(r"input 48×48"))).to_be_visible()
    assert app.errors() == []
    top1 = app.top1()
    assert re.fullmatch(rf"({'|'.join(CLASSES)}) — \d+\.\d%", top1), top1
    expect(app.main().get_by_test_id("stPlotlyChart")).to_be_visible()
    app.screenshot(screenshots, "model-file-pt2")
