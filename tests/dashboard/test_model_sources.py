"""The sidebar's new ways in (issue 17): a model file (.pt2 from torch.export, .onnx), a timm
model by name, and the server's own factory (``--model pkg.mod:build`` / ``CNNVIS_MODEL``)."""

from __future__ import annotations

import io

import torch
from torch import nn

from dashboard.state import ModelChoice, server_factory
from tests.dashboard.apptest import open_app


def _tiny_pt2() -> bytes:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 3)).eval()
    program = torch.export.export(model, (torch.randn(2, 3, 32, 32),),
                                  dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue()


def test_a_pt2_upload_is_the_model_and_a_text_file_is_refused() -> None:
    app = open_app()
    app.radio(key="model_source").set_value("Model file (.pt2, .onnx)")
    app.run()
    assert any("Upload a .pt2 or .onnx" in i.value for i in app.info)
    app.file_uploader(key="model_file").set_value(("tiny.pt2", _tiny_pt2(), "application/octet-stream"))
    app.run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    assert any("model file tiny.pt2" in c.value and "input 32×32" in c.value for c in app.caption)
    assert any(m.value.startswith("**Top-1:**") and "class " in m.value for m in app.markdown)

    app.file_uploader(key="model_file").set_value(("notes.onnx", b"just some text\n", "application/octet-stream"))
    app.run()
    assert not app.exception
    assert any("neither a torch.export program" in e.value for e in app.error), [e.value for e in app.error]


def test_the_server_factory_comes_from_the_command_line_or_the_environment(monkeypatch) -> None:
    monkeypatch.delenv("CNNVIS_MODEL", raising=False)
    assert server_factory(["--model", "pkg.models:build"]) == "pkg.models:build"
    assert server_factory(["--model=pkg.models:build"]) == "pkg.models:build"
    assert server_factory([]) is None
    monkeypatch.setenv("CNNVIS_MODEL", "other.mod:make")
    assert server_factory([]) == "other.mod:make"
    choice = ModelChoice("factory", "other.mod:make", None)
    assert choice.title == "other.mod:make()" and choice.stem == "other.mod_make"
    assert ModelChoice("timm", "resnet18", None).title == "timm resnet18 (random weights)"
