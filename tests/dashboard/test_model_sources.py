"""The sidebar's new ways in (issue 17): a model file (.pt2 from torch.export, .onnx), a timm
model by name, and the server's own factory (``--model pkg.mod:build`` / ``CNNVIS_MODEL``)."""

from __future__ import annotations

import io
import warnings

import pytest
import torch
from torch import nn

from dashboard.state import ModelChoice, plain, server_factory
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
    assert any(f"model file {plain('tiny.pt2')}" in c.value and "input 32×32" in c.value for c in app.caption)
    assert any(m.value.startswith("**Top-1:**") and "class " in m.value for m in app.markdown)

    app.file_uploader(key="model_file").set_value(("notes.onnx", b"just some text\n", "application/octet-stream"))
    app.run()
    assert not app.exception
    assert any("neither a torch.export program" in e.value for e in app.error), [e.value for e in app.error]


def test_an_onnx_upload_is_converted_and_is_the_model() -> None:
    pytest.importorskip("onnx2torch")
    from tests.core.test_loaders import tiny_cnn

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(tiny_cnn(), (torch.randn(1, 3, 24, 24),), buffer, dynamo=False, input_names=["x"],
                          dynamic_axes={"x": {0: "batch"}})
    app = open_app()
    app.radio(key="model_source").set_value("Model file (.pt2, .onnx)")
    app.run()
    app.file_uploader(key="model_file").set_value(("tiny.onnx", buffer.getvalue(), "application/octet-stream"))
    app.run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    assert any(f"model file {plain('tiny.onnx')}" in c.value and "input 24×24" in c.value for c in app.caption), \
        [c.value for c in app.caption]
    assert any(m.value.startswith("**Top-1:**") and "class " in m.value for m in app.markdown)


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


def _assert_predictions(app) -> None:
    assert not app.exception and not app.error, [e.value for e in app.error]
    assert any(m.value.startswith("**Top-1:**") for m in app.markdown), [m.value for m in app.markdown]


def test_a_timm_model_with_pretrained_off_shows_predictions() -> None:
    app = open_app()
    app.radio(key="model_source").set_value("timm model").run()
    assert not app.exception, app.exception
    assert "resnet18" in app.selectbox(key="timm_arch").options and len(app.selectbox(key="timm_arch").options) > 500
    app.selectbox(key="timm_arch").set_value("resnet18")
    app.toggle(key="timm_pretrained").set_value(False)
    app.run()
    _assert_predictions(app)
    assert any("timm resnet18 (random weights)" in c.value for c in app.caption), [c.value for c in app.caption]
    engine = app.session_state["_engine"]
    assert type(engine.model).__module__.startswith("timm.") and engine.input_size == (224, 224)


def test_the_server_factory_from_the_environment_is_the_default_model(monkeypatch) -> None:
    monkeypatch.setenv("CNNVIS_MODEL", "tests.dashboard.factory_models:tiny_vit")
    app = open_app()
    assert app.radio(key="model_source").value == "Server model"
    assert any("tests.dashboard.factory_models:tiny_vit" in c.value for c in app.caption)
    _assert_predictions(app)
    top = next(m.value for m in app.markdown if m.value.startswith("**Top-1:**"))
    assert any(name in top for name in ("north", "east", "south", "west")), top
    assert app.session_state["_engine"].input_size == (32, 32)

    # the page of filter optimisation on that ViT: its native size, and a note that says so
    app.switch_page("pages/optimize.py").run()
    assert not app.exception, app.exception
    app.selectbox(key="opt_layer").set_value("encoder.layers.encoder_layer_1.ln_1")
    app.number_input(key="opt_steps_lucid").set_value(2)
    app.run()
    app.button(key="opt_run").click().run()
    job = app.session_state["_optimize_job"]
    assert job.wait(120), "the optimisation did not finish"
    app.run()
    assert not app.exception and job.result is not None and job.result.images[0].shape == (32, 32, 3)
    assert any("native 32×32 input" in c.value for c in app.caption), [c.value for c in app.caption]


def test_a_factory_returning_a_bare_module_gets_the_defaults(monkeypatch) -> None:
    monkeypatch.setenv("CNNVIS_MODEL", "tests.dashboard.factory_models:tiny_cnn")
    app = open_app()
    _assert_predictions(app)
    assert app.session_state["_engine"].input_size == (224, 224)
