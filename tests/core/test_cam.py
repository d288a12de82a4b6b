"""Class activation maps on a tiny fixed-weight model, against the formulas computed in NumPy.

The model: conv 3×3 (3→3) → in-place ReLU → max-pool 2 → conv 1×1 (3→4) → in-place ReLU →
global average pool → linear (4→3). Everything the methods need (activations, gradients by
the chain rule, masked forwards, bilinear upsampling) is recomputed here in NumPy, apart
from torch, so a wrong formula, a sum taken for a mean or a map read after an in-place ReLU
makes a test fail.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cnnvis_core import Engine, InputError, LayerError, ModelError
from cnnvis_core.cam import METHODS, SHARED, auc, pointing_game, silhouette
from cnnvis_core.hooks import hook_count

SIZE = 8


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        rng = np.random.default_rng(7)
        self.conv1 = nn.Conv2d(3, 3, 3, padding=1)
        self.relu1 = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(3, 4, 1, bias=False)
        self.relu2 = nn.ReLU(inplace=True)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(4, 3)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.from_numpy(rng.normal(0, 0.6, p.shape).astype(np.float32)))
            self.conv1.bias.add_(0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pool(self.relu1(self.conv1(x)))
        return self.fc(self.flatten(self.gap(self.relu2(self.conv2(h)))))


# ---------------------------------------------------------------------------- NumPy reference
def params(model: Tiny) -> dict[str, np.ndarray]:
    return {k: v.detach().double().numpy() for k, v in model.state_dict().items()}


def np_forward(p: dict, x: np.ndarray) -> dict[str, np.ndarray]:
    """x (3, H, W) → every intermediate, by explicit loops and sums."""
    c_out, _, kh, kw = p["conv1.weight"].shape
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1)))
    h, w = x.shape[1:]
    z1 = np.zeros((c_out, h, w))
    for o in range(c_out):
        for i in range(h):
            for j in range(w):
                z1[o, i, j] = np.sum(p["conv1.weight"][o] * padded[:, i:i + kh, j:j + kw]) + p["conv1.bias"][o]
    r1 = np.maximum(z1, 0)
    pooled = r1.reshape(c_out, h // 2, 2, w // 2, 2).max(axis=(2, 4))
    b = np.einsum("kc,chw->khw", p["conv2.weight"][:, :, 0, 0], pooled)
    r2 = np.maximum(b, 0)
    logits = p["fc.weight"] @ r2.mean(axis=(1, 2)) + p["fc.bias"]
    return {"conv2": b, "relu2": r2, "logits": logits}


def np_grad(p: dict, fwd: dict, layer: str, c: int) -> np.ndarray:
    """∂ logit_c / ∂ (layer output), by the chain rule through ReLU, mean and linear."""
    b = fwd["conv2"]
    per_channel = p["fc.weight"][c][:, None, None] / (b.shape[1] * b.shape[2]) * np.ones_like(b)
    return per_channel * (b > 0) if layer == "conv2" else per_channel


def np_bilinear(a: np.ndarray, size: int) -> np.ndarray:
    """Bilinear upsampling with half-pixel centres (align_corners=False), border clamped."""
    n = a.shape[-1]
    coords = np.clip((np.arange(size) + 0.5) * n / size - 0.5, 0, n - 1)
    lo = np.floor(coords).astype(int)
    hi = np.minimum(lo + 1, n - 1)
    t = coords - lo
    rows = a[..., lo, :] * (1 - t)[:, None] + a[..., hi, :] * t[:, None]
    return rows[..., lo] * (1 - t) + rows[..., hi] * t


def np_minmax(a: np.ndarray) -> np.ndarray:
    span = a.max() - a.min()
    return (a - a.min()) / span if span > 0 else np.zeros_like(a)


def relu(a: np.ndarray) -> np.ndarray:
    return np.maximum(a, 0)


def np_formula(method: str, A: np.ndarray, g: np.ndarray) -> np.ndarray:
    sums = A.sum(axis=(1, 2), keepdims=True)
    if method == "gradcam":
        return relu(np.einsum("k,khw->hw", g.mean(axis=(1, 2)), A))
    if method == "gradcam++":
        denom = 2 * g ** 2 + sums * g ** 3
        alpha = np.where(denom != 0, g ** 2 / np.where(denom != 0, denom, 1), 0)
        return relu(np.einsum("k,khw->hw", (alpha * relu(g)).sum(axis=(1, 2)), A))
    if method == "xgradcam":
        share = np.where(sums != 0, A / np.where(sums != 0, sums, 1), 0)
        return relu(np.einsum("k,khw->hw", (share * g).sum(axis=(1, 2)), A))
    if method == "layercam":
        return relu((relu(g) * A).sum(axis=0))
    raise AssertionError(method)


@pytest.fixture(scope="module")
def tiny():
    model = Tiny()
    engine = Engine(model, input_size=(SIZE, SIZE), device="cpu", categories=["a", "b", "c"])
    x = torch.from_numpy(np.random.default_rng(3).normal(0, 1, (1, 3, SIZE, SIZE)).astype(np.float32))
    return engine, x, params(model)


# ---------------------------------------------------------------------------- formulas
@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "xgradcam", "layercam"])
@pytest.mark.parametrize("layer", ["conv2", "relu2"])
def test_gradient_methods_match_their_formula(tiny, method, layer):
    engine, x, p = tiny
    fwd = np_forward(p, x[0].double().numpy())
    for c in range(3):
        result = engine.cam(x, method, layer=layer, target=c)
        expected = np_formula(method, fwd[layer], np_grad(p, fwd, layer, c))
        assert result.raw.shape == (4, 4) and result.target == c and result.layer == layer
        np.testing.assert_allclose(result.raw, expected, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(result.map, np_minmax(np_bilinear(expected, SIZE)), atol=1e-4)


def test_conv2_gradients_vary_in_space_so_the_test_means_something(tiny):
    _, x, p = tiny
    fwd = np_forward(p, x[0].double().numpy())
    assert (fwd["conv2"] < 0).any() and (fwd["conv2"] > 0).any()  # the in-place ReLU had work to do
    g = np_grad(p, fwd, "conv2", 0)
    assert len(np.unique(np.round(g, 9))) > 2


def test_cam_is_the_linear_layers_weighted_sum_without_relu(tiny):
    engine, x, p = tiny
    fwd = np_forward(p, x[0].double().numpy())
    for c in range(3):
        result = engine.cam(x, "cam", target=c)
        expected = np.einsum("k,khw->hw", p["fc.weight"][c], fwd["relu2"])
        assert result.layer == "relu2"
        np.testing.assert_allclose(result.raw, expected, rtol=1e-4, atol=1e-6)
        # Grad-CAM on GAP + linear is ReLU(CAM) / (h·w) (Selvaraju et al., section 3.1).
        np.testing.assert_allclose(engine.cam(x, "gradcam", target=c).raw, relu(expected) / 16, rtol=1e-4,
                                   atol=1e-7)


def np_score_weights(p: dict, x: np.ndarray, A: np.ndarray, c: int, path: list[float]) -> np.ndarray:
    """Score-CAM's channel scores, averaged over mask multipliers ``path`` (IS-CAM), softmaxed."""
    scores = []
    for k in range(A.shape[0]):
        mask = np_minmax(np_bilinear(A[k], SIZE))
        scores.append(np.mean([np_forward(p, x * (t * mask))["logits"][c] for t in path]))
    e = np.exp(np.array(scores) - max(scores))
    return e / e.sum()


@pytest.mark.parametrize("method, path", [("scorecam", [1.0]), ("iscam", [i / 4 for i in range(1, 5)])])
def test_score_family_matches_its_formula(tiny, method, path):
    engine, x, p = tiny
    x_np = x[0].double().numpy()
    A = np_forward(p, x_np)["conv2"]
    options = {"n_samples": 4} if method == "iscam" else {}
    for c in range(3):
        result = engine.cam(x, method, layer="conv2", target=c, **options)
        weights = np_score_weights(p, x_np, A, c, path)
        np.testing.assert_allclose(result.raw, relu(np.einsum("k,khw->hw", weights, A)), rtol=1e-4, atol=1e-6)


def test_sscam_without_noise_is_scorecam_and_its_noise_is_seeded(tiny):
    engine, x, _ = tiny
    plain = engine.cam(x, "scorecam", layer="conv2", target=1).raw
    np.testing.assert_allclose(engine.cam(x, "sscam", layer="conv2", target=1, n_samples=3, sigma=0.0).raw,
                               plain, rtol=1e-5, atol=1e-7)
    noisy = engine.cam(x, "sscam", layer="conv2", target=1, n_samples=3, sigma=0.5, seed=1).raw
    again = engine.cam(x, "sscam", layer="conv2", target=1, n_samples=3, sigma=0.5, seed=1).raw
    other = engine.cam(x, "sscam", layer="conv2", target=1, n_samples=3, sigma=0.5, seed=2).raw
    np.testing.assert_array_equal(noisy, again)
    assert not np.allclose(noisy, plain) and not np.allclose(noisy, other)


def test_smooth_gradcam_pp_averages_derivatives_over_noisy_inputs(tiny):
    engine, x, p = tiny
    n, noise, seed = 3, 0.2, 5
    sigma = noise * float(x.max() - x.min())
    eps = torch.randn((n, 3, SIZE, SIZE), generator=torch.Generator().manual_seed(seed)) * sigma
    clean = np_forward(p, x[0].double().numpy())
    grads = [np_grad(p, np_forward(p, (x + e)[0].double().numpy()), "conv2", 2) for e in eps]
    d1, d2, d3 = (np.mean([g ** k for g in grads], axis=0) for k in (1, 2, 3))
    A = clean["conv2"]
    denom = 2 * d2 + A.sum(axis=(1, 2), keepdims=True) * d3
    alpha = np.where(denom != 0, d2 / np.where(denom != 0, denom, 1), 0)
    expected = relu(np.einsum("k,khw->hw", (alpha * relu(d1)).sum(axis=(1, 2)), A))
    result = engine.cam(x, "smoothgradcam++", layer="conv2", target=2, n_samples=n, noise=noise, seed=seed)
    np.testing.assert_allclose(result.raw, expected, rtol=1e-4, atol=1e-6)
    # Without noise it is Grad-CAM++.
    np.testing.assert_allclose(engine.cam(x, "smoothgradcam++", layer="conv2", target=2, noise=0.0).raw,
                               engine.cam(x, "gradcam++", layer="conv2", target=2).raw, rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------------------- sharing passes
def test_all_shared_methods_cost_one_forward_and_one_backward(tiny):
    engine, x, _ = tiny
    engine.layers()
    before = engine.counters.snapshot()
    together = engine.cams(x, list(SHARED), target=1)
    assert engine.counters.snapshot() == (before[0] + 1, before[1] + 1)
    for name in SHARED:
        alone = engine.cam(x, name, target=1)
        np.testing.assert_allclose(together[name].raw, alone.raw, rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(together[name].map, alone.map, atol=1e-6)


def test_several_targets_share_one_forward_and_one_batched_backward(tiny):
    engine, x, _ = tiny
    engine.layers()  # its probe forward, once per engine, is not part of what is counted
    for method in ("gradcam", "gradcam++", "layercam", "xgradcam", "cam", "scorecam"):
        layer = "relu2" if method == "cam" else "conv2"
        before = engine.counters.snapshot()
        batch = engine.cam_targets(x, method, [2, 0, 1], layer=layer)
        if method != "scorecam":
            assert engine.counters.snapshot() == (before[0] + 1, before[1] + (method != "cam"))
        assert [r.target for r in batch] == [2, 0, 1]
        for result in batch:
            alone = engine.cam(x, method, layer=layer, target=result.target)
            np.testing.assert_allclose(result.raw, alone.raw, rtol=1e-5, atol=1e-7)


def test_top_k_targets_follow_the_logits(tiny):
    engine, x, p = tiny
    logits = np_forward(p, x[0].double().numpy())["logits"]
    order = list(np.argsort(-logits))
    assert [r.target for r in engine.cam_targets(x, "gradcam", 3)] == order
    assert engine.cam(x, "gradcam").target == order[0]
    assert engine.cam(x, "gradcam", target="c").target == 2


# ---------------------------------------------------------------------------- errors and hooks
def test_parameters_stay_frozen_without_grad(tiny):
    engine, x, _ = tiny
    for method in METHODS:
        options = {"n_samples": 2} if method in ("sscam", "iscam", "smoothgradcam++") else {}
        try:
            engine.cam(x, method, **options)
        except ModelError:  # the attention methods refuse a CNN
            assert method in ("rollout", "chefer"), method
        assert hook_count(engine.model) == 0, method
    assert all(p.grad is None and not p.requires_grad for p in engine.model.parameters())


def test_errors_say_what_to_do_and_leave_no_hooks(tiny):
    engine, x, _ = tiny
    with pytest.raises(InputError, match=r"gradcam\+\+.*layercam"):
        engine.cam(x, "gradcamm")
    with pytest.raises(LayerError, match=r"not a spatial map.*relu2"):
        engine.cam(x, "gradcam", layer="fc")
    with pytest.raises(LayerError, match="conv2"):
        engine.cam(x, "gradcam", layer="conv3")
    with pytest.raises(LayerError, match="gradcam"):
        engine.cam(x, "cam", layer="conv2")  # not what the linear layer pools
    with pytest.raises(InputError, match="out of range"):
        engine.cam(x, "gradcam", target=3)
    with pytest.raises(InputError, match="n_samples"):
        engine.cam(x, "gradcam", n_samples=3)
    assert hook_count(engine.model) == 0


def test_cam_on_a_model_without_a_final_linear_layer_suggests_gradcam():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    engine = Engine(model, input_size=(8, 8), device="cpu")
    with pytest.raises(ModelError, match="gradcam"):
        engine.cam(torch.randn(1, 3, 8, 8), "cam")
    assert engine.cam(torch.randn(1, 3, 8, 8), "gradcam").map.shape == (8, 8)
    assert set(engine.cams(torch.randn(1, 3, 8, 8))) == set(SHARED) - {"cam"}
    assert hook_count(model) == 0


def test_the_cam_head_check_is_remembered_once_passed_and_refusals_are_not():
    """After one pass has shown that the linear layer reads the layer's global average, later CAM
    passes do not record the linear layer again; a head that failed the check fails every time."""
    from cnnvis_core.cam.activation import verified_head
    model = Tiny()
    engine = Engine(model, input_size=(SIZE, SIZE), device="cpu")
    x = torch.randn(1, 3, SIZE, SIZE)
    assert verified_head(engine, "relu2") is None
    first = engine.cam(x, "cam", target=1)
    assert verified_head(engine, "relu2") is model.fc
    hooks_seen: list[int] = []  # hooks on fc while it runs: this probe, plus the engine's if it records fc
    probe = model.fc.register_forward_hook(lambda module, *_: hooks_seen.append(len(module._forward_hooks)))
    again = engine.cam(x, "cam", target=1)
    probe.remove()
    assert hooks_seen == [1]
    np.testing.assert_array_equal(again.raw, first.raw)
    weights = model.fc.weight.detach().numpy()[1]
    activation = engine.feature_maps(x, "relu2")["relu2"].numpy()
    np.testing.assert_allclose(again.raw, np.tensordot(weights, activation, 1), rtol=1e-5, atol=1e-6)
    for _ in range(2):
        with pytest.raises(LayerError):
            engine.cam(x, "cam", layer="conv2")
    assert verified_head(engine, "conv2") is None


class Exploding(Tiny):
    explode = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        if self.explode:
            raise RuntimeError("boom")
        return out


@pytest.mark.parametrize("method", ["gradcam", "cam", "scorecam", "smoothgradcam++"])
def test_no_hooks_left_after_a_forward_that_raised(method):
    model = Exploding()
    engine = Engine(model, input_size=(SIZE, SIZE), device="cpu")
    x = torch.randn(1, 3, SIZE, SIZE)
    engine.layers()
    model.explode = True
    with pytest.raises(RuntimeError, match="boom"):
        engine.cam(x, method, **({"n_samples": 2} if method == "smoothgradcam++" else {}))
    assert hook_count(model) == 0
    assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())


def test_layer_not_used_by_the_score_gets_a_layer_error():
    class Unused(Tiny):
        def __init__(self) -> None:
            super().__init__()
            self.side = nn.Conv2d(3, 2, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.side(x)
            return super().forward(x)

    engine = Engine(Unused(), input_size=(SIZE, SIZE), device="cpu")
    with pytest.raises(LayerError, match="do not depend"):
        engine.cam(torch.randn(1, 3, SIZE, SIZE), "gradcam", layer="side")
    assert hook_count(engine.model) == 0


# ---------------------------------------------------------------------------- metrics
def test_deletion_and_insertion_curves_match_a_direct_computation(tiny):
    engine, x, p = tiny
    heat = np.random.default_rng(11).random((SIZE, SIZE)).astype(np.float32)
    result = engine.faithfulness(x, heat, target=1, steps=4)
    order = np.argsort(-heat.ravel(), kind="stable")
    x_np = x[0].double().numpy()
    blurred = _np_blur(x_np)
    for s, fraction in enumerate(result.fractions):
        shown = np.zeros(SIZE * SIZE, bool)
        shown[order[:round(float(fraction) * SIZE * SIZE)]] = True
        shown = shown.reshape(SIZE, SIZE)
        deleted = np.where(shown, 0.0, x_np)
        inserted = np.where(shown, x_np, blurred)
        for image, curve in ((deleted, result.deletion), (inserted, result.insertion)):
            logits = np_forward(p, image)["logits"]
            prob = np.exp(logits - logits.max())[1] / np.exp(logits - logits.max()).sum()
            assert curve[s] == pytest.approx(prob, abs=1e-5)
    np.testing.assert_allclose(result.fractions, np.linspace(0, 1, 5))
    assert result.deletion_auc == pytest.approx(np.trapezoid(result.deletion, result.fractions))
    assert result.insertion_auc == pytest.approx(np.trapezoid(result.insertion, result.fractions))
    assert hook_count(engine.model) == 0


def _np_blur(x: np.ndarray, sigma: float = 5.0, k: int = 11) -> np.ndarray:
    """Separable Gaussian blur with reflect padding (torchvision's gaussian_blur)."""
    half = k // 2
    kernel = np.exp(-0.5 * (np.arange(-half, half + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(x, ((0, 0), (half, half), (half, half)), mode="reflect")
    rows = np.stack([np.tensordot(padded[:, i:i + k, :], kernel, axes=([1], [0])) for i in range(x.shape[1])], 1)
    return np.stack([np.tensordot(rows[:, :, j:j + k], kernel, axes=([2], [0])) for j in range(x.shape[2])], 2)


def test_auc_and_pointing_game():
    assert auc(np.array([0, 0.5, 1]), np.array([1, 0, 0])) == pytest.approx(0.25)
    heat = np.zeros((5, 5))
    heat[1, 3] = 2.0
    mask = np.zeros((5, 5), bool)
    mask[1, 3] = True
    assert pointing_game(heat, mask)
    mask[1, 3], mask[4, 4] = False, True
    assert not pointing_game(heat, mask)
    assert pointing_game(heat, mask, tolerance=3.2) and not pointing_game(heat, mask, tolerance=3.1)
    with pytest.raises(InputError):
        pointing_game(heat, mask[:4])


def test_silhouette_fills_enclosed_holes_only():
    yy, xx = np.mgrid[0:40, 0:40]
    r = np.hypot(yy - 20, xx - 20)
    ring = (r <= 12) & (r > 6)
    np.testing.assert_array_equal(silhouette(ring), r <= 12)
    c_shape = ring & ~((xx > 20) & (np.abs(yy - 20) < 3))  # a gap opens the hole to the outside
    np.testing.assert_array_equal(silhouette(c_shape), c_shape)
    edge = np.zeros((6, 6), bool)
    edge[:, :3] = True  # touching the border: nothing enclosed
    np.testing.assert_array_equal(silhouette(edge), edge)


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.relu(self.conv(x))


def test_automatic_layer_descends_sequentials_but_not_residual_blocks(tiny):
    assert tiny[0].default_cam_layer() == "relu2"
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Sequential(_Residual()), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(4, 2))
    engine = Engine(model, input_size=(8, 8), device="cpu")
    assert engine.default_cam_layer() == "1.0"  # the block's output, not its inner ReLU's
    x = torch.randn(1, 3, 8, 8)
    assert engine.cam(x, "cam").layer == "1.0"  # CAM's check: GAP of this output feeds the linear layer
    with pytest.raises(LayerError, match="automatic"):
        engine.cam(x, "cam", layer="1.0.relu")


# ---------------------------------------------------------------------------- batch sizes
def test_masked_batch_size_comes_from_the_free_memory(tiny, monkeypatch):
    from cnnvis_core.passes import batch_size as batching
    engine = tiny[0]
    layers, shape = engine.layers(), (3, SIZE, SIZE)
    per_item = 4 * (sum(int(np.prod(info.output_shape)) for info in layers) + 2 * int(np.prod(shape)))
    caps = {}
    for free in (10**12, 64 * per_item * 4, 8 * per_item * 4, 10):
        monkeypatch.setattr(batching, "free_memory", lambda device, free=free: free)
        caps[free] = batching.memory_cap(torch.device("cpu"), layers, shape)
    assert caps[10**12] == batching.MAX_BATCH  # plenty: the absolute cap
    assert caps[64 * per_item * 4] == 64 and caps[8 * per_item * 4] == 8  # a quarter of the free memory
    assert caps[10] == 1
    monkeypatch.setattr(batching, "free_memory", lambda device: 2 * 10**9)
    assert batching.memory_cap(torch.device("cuda"), layers, shape) == min(batching.MAX_BATCH, 10**9 // per_item)


def test_separable_upsampling_is_torchs_bilinear_for_tensors_and_arrays():
    from torch.nn import functional as F

    from cnnvis_core.cam.base import upsample
    rng = np.random.default_rng(3)
    for (h, w), size in [((16, 16), (128, 128)), ((7, 7), (224, 224)), ((5, 9), (37, 100)), ((12, 10), (6, 5))]:
        raw = rng.normal(size=(3, h, w)).astype(np.float32)
        expected = F.interpolate(torch.from_numpy(raw)[:, None], size=size, mode="bilinear",
                                 align_corners=False)[:, 0].numpy()
        np.testing.assert_allclose(upsample(torch.from_numpy(raw), size).numpy(), expected, atol=1e-5)
        np.testing.assert_allclose(upsample(raw, size), expected, atol=1e-5)


def test_batches_cover_every_item_once_within_the_cap_and_results_do_not_depend_on_them(tiny, monkeypatch):
    from cnnvis_core.passes import batch_size as batching
    seen: list[tuple[int, int]] = []
    batching.run_batched(100, lambda a, b: seen.append((a, b)), cap=16, remembered={}, key=("test",))
    assert [a for a, _ in seen] == [0] + [b for _, b in seen[:-1]] and seen[-1][1] == 100
    assert max(b - a for a, b in seen) <= 16
    engine, x, _ = tiny
    free = batching.free_memory
    wide = engine.cam(x, "iscam", layer="conv2", target=0, n_samples=5).raw
    monkeypatch.setattr(batching, "free_memory", lambda device: 0)  # one masked input per batch
    narrow = engine.cam(x, "iscam", layer="conv2", target=0, n_samples=5).raw
    np.testing.assert_allclose(narrow, wide, rtol=1e-5, atol=1e-7)
    assert free(torch.device("cpu")) > 0


# ---------------------------------------------------------------------------- the folded copy for masked passes
class WithNorms(nn.Module):
    """conv→BN (foldable), and a conv whose output feeds both a BN and a skip (not foldable)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1, self.bn1 = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.conv2, self.bn2 = nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
        with torch.no_grad():
            for bn in (self.bn1, self.bn2):
                bn.running_mean.uniform_(-1, 1)
                bn.running_var.uniform_(0.5, 2)
                bn.weight.uniform_(0.5, 1.5)
                bn.bias.uniform_(-0.5, 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu(self.bn1(self.conv1(x)))
        z = self.conv2(h)
        return self.head(self.relu(self.bn2(z) + z))


def test_masked_passes_use_a_folded_copy_that_computes_the_same_function(monkeypatch):
    from cnnvis_core.passes import batched
    from cnnvis_core.passes import folding as fused
    model = WithNorms()
    engine = Engine(model, input_size=(SIZE, SIZE), device="cpu")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(4, 3, SIZE, SIZE)
    with engine.session():
        net = fused.inference_copy(engine, x[:1])
    kinds = [type(m).__name__ for m in net.modules()]
    assert net is not model and kinds.count("BatchNorm2d") == 1  # bn1 folded, bn2 kept (z is used twice)
    with torch.inference_mode():
        np.testing.assert_allclose(net(x.contiguous(memory_format=torch.channels_last)), model(x), rtol=1e-5,
                                   atol=1e-6)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert hook_count(model) == 0 and isinstance(model.bn1, nn.BatchNorm2d)
    folded = engine.cam(x[:1], "scorecam", layer="conv2", target=1).raw
    monkeypatch.setattr(batched, "inference_copy", lambda core, probe: core.model)
    plain = engine.cam(x[:1], "scorecam", layer="conv2", target=1).raw
    np.testing.assert_allclose(folded, plain, rtol=1e-4, atol=1e-7)


def test_folding_needs_no_tracer_and_keeps_data_dependent_control_flow(tiny, monkeypatch):
    """torch.fx cannot trace a data-dependent branch, and its tracing patches nn.Module.__call__ for the
    whole process; the folding uses neither: the branchy model is folded and computes the same function."""
    from cnnvis_core.passes import folding as fused

    class Branchy(WithNorms):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum() > 0:  # data-dependent control flow
                x = -x
            return super().forward(x)

    monkeypatch.setattr(torch.fx, "symbolic_trace", lambda *a, **k: pytest.fail("folding traced the model"))
    engine = Engine(Branchy(), input_size=(SIZE, SIZE), device="cpu")
    x = torch.randn(3, 3, SIZE, SIZE)
    with engine.session():
        net = fused.inference_copy(engine, x[:1])
        assert fused.inference_copy(tiny[0], tiny[1]) is tiny[0].model  # no BatchNorm: nothing to fold
    assert net is not engine.model and [type(m).__name__ for m in net.modules()].count("BatchNorm2d") == 1
    for sign in (1, -1):
        with torch.inference_mode():
            np.testing.assert_allclose(net(sign * x), engine.model(sign * x), rtol=1e-5, atol=1e-6)
    assert hook_count(engine.model) == 0


def test_building_folded_copies_never_disturbs_other_threads(demo_engine):
    """One thread builds folded copies of fresh engines in a loop while eight threads preprocess,
    predict and compute CAMs on a shared engine: no exception, and every result equals the serial one."""
    import threading

    from cnnvis_core.demo import sample
    from cnnvis_core.passes import folding as fused

    images = [sample(500 + i)[0] for i in range(4)]
    serial = [(demo_engine.predict(im, 3), demo_engine.cam(im, "gradcam").map) for im in images]
    stop, errors = threading.Event(), []

    def build() -> None:
        while not stop.is_set():
            engine = Engine.demo(device="cpu")
            with engine.session():
                fused.inference_copy(engine, engine.preprocess(images[0]))

    def use(i: int) -> None:
        try:
            for _ in range(3):
                image = images[i % 4]
                top, heat = demo_engine.predict(image, 3), demo_engine.cam(image, "gradcam").map
                assert [p.index for p in top] == [p.index for p in serial[i % 4][0]]
                np.testing.assert_allclose(heat, serial[i % 4][1], atol=1e-5)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    builder = threading.Thread(target=build)
    builder.start()
    users = [threading.Thread(target=use, args=(i,)) for i in range(8)]
    for thread in users:
        thread.start()
    for thread in users:
        thread.join()
    stop.set()
    builder.join()
    assert not errors, errors
    assert hook_count(demo_engine.model) == 0


@pytest.mark.parametrize("n", [10, 5000])
def test_backward_seeds_are_one_hot_rows_for_small_and_large_class_counts(n):
    """Seeds are one-hot rows (cached per class), stacked when several classes share a backward."""
    from cnnvis_core.cam.base import _one_hot_row, _one_hot_rows
    classes = [3, n - 1, 0]
    rows = _one_hot_rows(classes, n, torch.device("cpu"), torch.float32)
    expected = torch.nn.functional.one_hot(torch.tensor(classes), n).float()
    assert torch.equal(rows, expected)
    assert torch.equal(_one_hot_row(n - 1, n, torch.device("cpu"), torch.float32), expected[1])


def test_masked_methods_report_progress_after_every_batch(tiny, monkeypatch):
    from cnnvis_core.passes import batch_size as batching
    engine, x, _ = tiny
    plain = engine.cam(x, "iscam", layer="conv2", target=0, n_samples=5)
    monkeypatch.setattr(batching, "free_memory", lambda device: 0)  # one masked input per batch
    calls: list[tuple[int, int]] = []
    followed = engine.cam(x, "iscam", layer="conv2", target=0, n_samples=5,
                          progress=lambda done, total: calls.append((done, total)))
    np.testing.assert_allclose(followed.raw, plain.raw, rtol=1e-5, atol=1e-7)
    totals = {total for _, total in calls}
    assert len(totals) == 1 and calls[-1][0] == totals.pop()  # ends at the total
    assert [done for done, _ in calls] == list(range(1, len(calls) + 1))  # one call per single-input batch
    with pytest.raises(InputError, match="progress"):
        engine.cam(x, "gradcam", progress=print)  # not an option of the gradient methods


def test_raising_from_progress_cancels_a_masked_map_and_leaves_the_engine_clean(tiny, monkeypatch):
    """The dashboard's Stop button interrupts the run from inside ``progress``; the exception must
    come out as raised, after that batch, with no hook left, and the next call must be unaffected."""
    from cnnvis_core.passes import batch_size as batching
    engine, x, _ = tiny
    plain = engine.cam(x, "iscam", layer="conv2", target=0, n_samples=5)
    monkeypatch.setattr(batching, "free_memory", lambda device: 0)  # one masked input per batch

    class Cancel(Exception):
        pass

    calls: list[int] = []

    def cancel_at_third(done: int, total: int) -> None:
        calls.append(done)
        if len(calls) == 3:
            raise Cancel

    before = engine.counters.snapshot()[0]
    with pytest.raises(Cancel):
        engine.cam(x, "iscam", layer="conv2", target=0, n_samples=5, progress=cancel_at_third)
    assert calls == [1, 2, 3], "the job went on after progress raised"
    assert engine.counters.snapshot()[0] - before == 1 + 3  # the layer pass, then three one-input batches
    assert hook_count(engine.model) == 0
    again = engine.cam(x, "iscam", layer="conv2", target=0, n_samples=5)
    np.testing.assert_allclose(again.raw, plain.raw, rtol=1e-5, atol=1e-7)
