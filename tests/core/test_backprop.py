"""Backpropagation saliency: the ReLU rules against a numpy reference, autograd and captum;
the model left exactly as it was, also after errors."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnvis_core import Engine, InputError, ModelError
from cnnvis_core.backprop import METHODS, RULES, relu_rule
from cnnvis_core.hooks import hook_count


# ---------------------------------------------------------------------------- a tiny model and its numpy twin
class Tiny(nn.Module):
    """conv 2×2 (3→2) → ReLU → conv 1×1 (2→2) → ReLU → max-pool 2 → linear (8→3), on 5×5 inputs.

    ``style`` says how the ReLUs are written: as in-place modules, as functional calls, or as
    in-place tensor methods whose return value is ignored.
    """

    def __init__(self, style: str = "module") -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(14)
        self.conv1 = nn.Conv2d(3, 2, 2)
        self.conv2 = nn.Conv2d(2, 2, 1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(8, 3)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen))
        self.relu1 = nn.ReLU(inplace=True)
        self.relu2 = nn.ReLU(inplace=True)
        self.style = style
        self.explode = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(x)
        if self.style == "module":
            h = self.relu2(self.conv2(self.relu1(h)))
        elif self.style == "functional":
            h = F.relu(self.conv2(torch.relu(h)))
        else:  # in-place methods, result ignored
            h.relu_()
            h = self.conv2(h)
            h.relu_()
        if self.explode:
            raise RuntimeError("boom")
        return self.fc(self.pool(h).flatten(1))


def numpy_reference(model: Tiny, x: np.ndarray, target: int, rule: str) -> np.ndarray:
    """∂y_t/∂x of :class:`Tiny` with explicit loops; ReLU backward per ``rule``."""
    w1, b1 = model.conv1.weight.detach().numpy(), model.conv1.bias.detach().numpy()
    w2, b2 = model.conv2.weight.detach().numpy()[:, :, 0, 0], model.conv2.bias.detach().numpy()
    fc = model.fc.weight.detach().numpy()
    z1 = np.zeros((2, 4, 4))
    for o in range(2):
        for i in range(4):
            for j in range(4):
                z1[o, i, j] = b1[o] + np.sum(w1[o] * x[:, i:i + 2, j:j + 2])
    h1 = np.maximum(z1, 0)
    z2 = np.einsum("oc,cij->oij", w2, h1) + b2[:, None, None]
    h2 = np.maximum(z2, 0)

    def relu_back(g: np.ndarray, z: np.ndarray) -> np.ndarray:
        return {"gradient": g * (z > 0), "deconvnet": np.maximum(g, 0),
                "guided": np.maximum(g, 0) * (z > 0)}[rule]

    g_pool = fc[target].reshape(2, 2, 2)
    g_h2 = np.zeros_like(h2)
    for o in range(2):
        for i in range(2):
            for j in range(2):
                window = h2[o, 2 * i:2 * i + 2, 2 * j:2 * j + 2]
                a, b = np.unravel_index(np.argmax(window), (2, 2))
                g_h2[o, 2 * i + a, 2 * j + b] += g_pool[o, i, j]
    g_h1 = np.einsum("oc,oij->cij", w2, relu_back(g_h2, z2))
    g_z1 = relu_back(g_h1, z1)
    g_x = np.zeros_like(x)
    for o in range(2):
        for i in range(4):
            for j in range(4):
                g_x[:, i:i + 2, j:j + 2] += w1[o] * g_z1[o, i, j]
    return g_x


def tiny_engine(style: str = "module") -> Engine:
    return Engine(Tiny(style), input_size=(5, 5), device="cpu")


def tiny_input(seed: int = 3) -> torch.Tensor:
    return torch.randn(1, 3, 5, 5, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("style", ["module", "functional", "tensor_method"])
@pytest.mark.parametrize("rule", ["gradient", "deconvnet", "guided"])
def test_rules_match_the_numpy_reference(style, rule):
    engine = tiny_engine(style)
    for seed in range(3):
        x = tiny_input(seed)
        for target in range(3):
            got = engine.saliency(x, rule, target=target)
            expected = numpy_reference(engine.model, x[0].numpy().astype(np.float64), target, rule)
            assert got.target == target
            assert np.allclose(got.gradient, expected, atol=1e-5), (style, rule, seed, target)
            assert got.relus == (0 if rule == "gradient" else 2)


def test_the_reference_cases_tell_the_three_rules_apart():
    """The inputs and targets of the reference test are ones where every pair of rules differs."""
    engine = tiny_engine()
    differ = {("gradient", "deconvnet"): 0, ("gradient", "guided"): 0, ("deconvnet", "guided"): 0}
    for seed in range(3):
        for target in range(3):
            g = {r: engine.saliency(tiny_input(seed), r, target=target).gradient for r in RULES}
            for a, b in differ:
                differ[(a, b)] += not np.allclose(g[a], g[b], atol=1e-4)
    assert all(count > 0 for count in differ.values()), differ


def test_rules_differ_only_in_the_relu_backward():
    """conv → ReLU → linear: with non-negative linear weights the gradient reaching the ReLU is
    ≥ 0, so guided = vanilla; with all ReLU inputs > 0 the mask is all ones, so guided = deconvnet."""
    gen = torch.Generator().manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(4 * 4 * 4, 2))
    engine = Engine(model, input_size=(6, 6), device="cpu")
    x = torch.randn(1, 3, 6, 6, generator=gen)
    with torch.no_grad():
        model[3].weight.copy_(torch.rand(2, 64, generator=gen))
    g = {m: engine.saliency(x, m, target=0).gradient for m in ("gradient", "deconvnet", "guided")}
    assert np.allclose(g["guided"], g["gradient"], atol=1e-6)
    assert not np.allclose(g["deconvnet"], g["gradient"])
    with torch.no_grad():
        model[0].bias.fill_(100.0)  # every ReLU input positive
        model[3].weight.copy_(torch.randn(2, 64, generator=gen))
    g = {m: engine.saliency(x, m, target=0).gradient for m in ("gradient", "deconvnet", "guided")}
    assert np.allclose(g["guided"], g["deconvnet"], atol=1e-6)
    assert not np.allclose(g["guided"], g["gradient"])


# ---------------------------------------------------------------------------- the demo model
def test_gradient_equals_autograd_of_the_logit(demo_engine, demo_images):
    x = demo_engine.preprocess(demo_images[0])
    result = demo_engine.saliency(x, "gradient", target=3)
    xg = x.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(demo_engine.model(xg)[0, 3], xg)
    assert np.allclose(result.gradient, expected[0].numpy(), atol=1e-7, rtol=1e-5)
    m = np.abs(expected[0].numpy()).max(0)
    assert np.allclose(result.map, m / m.max(), atol=1e-6)
    assert result.map.shape == (128, 128) and result.map.dtype == np.float32
    assert result.score == pytest.approx(float(demo_engine.logits(x)[3]), abs=1e-5)


def test_default_target_is_top1_and_one_forward_one_backward(demo_engine, demo_images):
    x = demo_engine.preprocess(demo_images[1])
    before = demo_engine.counters.snapshot()
    result = demo_engine.saliency(x, "guided")
    after = demo_engine.counters.snapshot()
    assert (after[0] - before[0], after[1] - before[1]) == (1, 1)
    assert result.target == int(demo_engine.logits(x).argmax())


CAPTUM_HOOK_WARNING = "ignore:Setting backward hooks:UserWarning"


@pytest.mark.filterwarnings(CAPTUM_HOOK_WARNING)
@pytest.mark.parametrize("method", ["guided", "deconvnet"])
def test_captum_agrees_on_the_demo_model(demo_engine, demo_images, method):
    from captum.attr import Deconvolution, GuidedBackprop
    algorithm = {"guided": GuidedBackprop, "deconvnet": Deconvolution}[method]
    for image in demo_images[:3]:
        x = demo_engine.preprocess(image)
        ours = demo_engine.saliency(x, method)
        theirs = algorithm(demo_engine.model).attribute(x.clone().requires_grad_(True), target=ours.target)
        theirs = theirs[0].detach().numpy()
        scale = np.abs(theirs).max()
        assert scale > 0
        assert np.allclose(ours.gradient, theirs, atol=1e-5 * scale)
    assert hook_count(demo_engine.model) == 0


@pytest.mark.filterwarnings(CAPTUM_HOOK_WARNING)
def test_guided_gradcam_agrees_with_captum(demo_engine, demo_images):
    from captum.attr import GuidedGradCam
    modules = dict(demo_engine.model.named_modules())
    for image in demo_images[:2]:
        x = demo_engine.preprocess(image)
        ours = demo_engine.saliency(x, "guided_gradcam")
        layer = demo_engine.cam(x, "gradcam", target=ours.target).layer
        theirs = GuidedGradCam(demo_engine.model, modules[layer]).attribute(
            x.clone().requires_grad_(True), target=ours.target, interpolate_mode="bilinear")[0].detach().numpy()
        # captum leaves the Grad-CAM map unscaled; ours divides it by its maximum.
        assert np.corrcoef(ours.gradient.ravel(), theirs.ravel())[0, 1] > 0.9999
        assert ours.map.max() == pytest.approx(1.0)


# ---------------------------------------------------------------------------- the model stays as it was
def model_state(model: nn.Module, x: torch.Tensor) -> dict:
    with torch.no_grad():
        out = model(x.clone())
    return {
        "repr": repr(model),
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "modules": [(name, type(m), sorted(vars(m)), getattr(m, "inplace", None), m.training)
                    for name, m in model.named_modules()],
        "hooks": hook_count(model) + len(torch.nn.modules.module._global_forward_hooks)
        + len(torch.nn.modules.module._global_backward_hooks),
        "grads": [p.grad for p in model.parameters()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "output": out,
    }


def assert_same_state(before: dict, after: dict) -> None:
    assert after["repr"] == before["repr"]
    assert after["state"].keys() == before["state"].keys()
    assert all(torch.equal(after["state"][k], v) for k, v in before["state"].items())
    assert after["modules"] == before["modules"]
    assert after["hooks"] == before["hooks"] == 0
    assert all(g is None for g in after["grads"])
    assert after["requires_grad"] == before["requires_grad"]
    assert torch.equal(after["output"], before["output"])


def test_model_restored_exactly_after_every_method(demo_engine, demo_images):
    x = demo_engine.preprocess(demo_images[2])
    before = model_state(demo_engine.model, x)
    for method in METHODS:
        demo_engine.saliency(x, method)
    demo_engine.reconstruct(x, "features.relu5", 3, top_only=True)
    assert_same_state(before, model_state(demo_engine.model, x))
    assert all(m.inplace for m in demo_engine.model.modules() if isinstance(m, nn.ReLU))


@pytest.mark.parametrize("style", ["module", "functional"])
def test_model_restored_and_rule_gone_after_an_error_mid_forward(style):
    engine, x = tiny_engine(style), tiny_input()
    before = model_state(engine.model, x)
    engine.model.explode = True
    for method in ("guided", "deconvnet"):
        with pytest.raises(RuntimeError, match="boom"):
            engine.saliency(x, method)
    engine.model.explode = False
    assert_same_state(before, model_state(engine.model, x))
    # The ordinary ReLU gradient is back: ∂ relu(z)/∂z = [z > 0], negative incoming gradients pass.
    z = torch.tensor([-1.0, 2.0], requires_grad=True)
    (g,) = torch.autograd.grad(F.relu(z), z, grad_outputs=torch.tensor([-3.0, -4.0]))
    assert g.tolist() == [0.0, -4.0]
    assert np.allclose(engine.saliency(x, "guided", target=0).gradient,
                       numpy_reference(engine.model, x[0].numpy().astype(np.float64), 0, "guided"), atol=1e-5)


def test_rule_is_local_to_the_thread():
    seen = {}
    inside, done = threading.Event(), threading.Event()

    def other() -> None:
        inside.wait()
        z = torch.tensor([-1.0, 2.0], requires_grad=True)
        seen["grad"] = torch.autograd.grad(F.relu(z), z, grad_outputs=torch.tensor([-3.0, -4.0]))[0].tolist()
        done.set()

    thread = threading.Thread(target=other)
    thread.start()
    with relu_rule("guided") as stats:
        inside.set()
        done.wait(10)
    thread.join()
    assert seen["grad"] == [0.0, -4.0]
    assert stats.calls == 0


# ---------------------------------------------------------------------------- errors
def test_bad_method_and_target_are_readable_errors(demo_engine, demo_images):
    with pytest.raises(InputError, match="guided"):
        demo_engine.saliency(demo_images[0], "guidedbackprop")
    with pytest.raises(InputError, match=r"out of range.*\(0–7\)"):
        demo_engine.saliency(demo_images[0], "guided", target=8)
    assert hook_count(demo_engine.model) == 0
    assert set(METHODS) == {"gradient", "deconvnet", "guided", "guided_gradcam"}


def test_model_without_relu_gets_a_clear_error_and_other_activations_a_note():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.SiLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 2))
    engine, x = Engine(model, input_size=(6, 6), device="cpu"), torch.randn(1, 3, 6, 6)
    with pytest.raises(ModelError, match=r"SiLU.*'gradient'"):
        engine.saliency(x, "guided")
    assert engine.saliency(x, "gradient").notes == ()
    mixed = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 1), nn.GELU(), nn.Flatten(),
                          nn.Linear(4 * 4 * 4, 2))
    result = Engine(mixed, input_size=(6, 6), device="cpu").saliency(x, "deconvnet")
    assert result.relus == 1 and "GELU" in result.notes[0]


def test_rgb_display_centres_zero_on_grey(demo_engine, demo_images):
    result = demo_engine.saliency(demo_images[3], "guided")
    rgb = result.rgb()
    assert rgb.shape == (128, 128, 3) and rgb.dtype == np.uint8
    # The brightest red pixel is where the red gradient is largest.
    g = result.gradient[0]
    assert rgb[..., 0].flat[np.argmax(g)] >= rgb[..., 0].flat[np.argmin(g)]
