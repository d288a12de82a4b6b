"""Filter optimisation, the parts: objectives, parameterisations, transforms, normalisation, settings."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as v1
from torchvision.transforms import v2

from cnnvis_core import InputError
from cnnvis_core.normalization import IMAGENET_MEAN, IMAGENET_STD, normalize
from cnnvis_core.optimize import (
    OUTPUT,
    PRESETS,
    Settings,
    channel,
    class_logit,
    deepdream,
    neuron,
    normalization_of,
    per_item,
    preset,
)
from cnnvis_core.optimize.cache import ResultCache
from cnnvis_core.optimize.loop import item_generator, standardize
from cnnvis_core.optimize.params import (
    COLOR_CORRELATION_SQRT,
    decorrelated_to_rgb,
    fft_image,
    frequency_scale,
    pixel_image,
)
from cnnvis_core.optimize.transforms import (
    affine_matrices,
    box_blur,
    jitter,
    l2_penalty,
    random_affine,
    total_variation,
)


def _gens(*keys: int, seed: int = 0) -> list[torch.Generator]:
    return [item_generator(seed, k) for k in keys]


@pytest.fixture(scope="module")
def acts() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {"a": torch.randn(3, 5, 6, 7, generator=g), "v": torch.randn(3, 4, generator=g),
            OUTPUT: torch.randn(3, 8, generator=g)}


# ---------------------------------------------------------------------------- objectives
def test_objectives_against_their_formulas(acts):
    a = acts["a"].numpy()
    assert np.allclose(channel("a", 2)(acts).numpy(), a[:, 2].mean(axis=(1, 2)), atol=1e-6)
    assert np.allclose(channel("a", 2, border=2)(acts).numpy(), a[:, 2, 2:4, 2:5].mean(axis=(1, 2)), atol=1e-6)
    assert np.allclose(channel("v", 3)(acts).numpy(), acts["v"].numpy()[:, 3])
    assert np.allclose(neuron("a", 1, 4, 5)(acts).numpy(), a[:, 1, 4, 5])
    assert np.allclose(neuron("a", 1)(acts).numpy(), a[:, 1, 3, 3])  # centre of a 6×7 map
    assert np.allclose(class_logit(6)(acts).numpy(), acts[OUTPUT].numpy()[:, 6])
    assert np.allclose(deepdream("a")(acts).numpy(), (a ** 2).sum(axis=(1, 2, 3)), rtol=1e-5)


def test_objective_algebra_composes_weighted_sums(acts):
    combined = channel("a", 3) + 0.5 * class_logit(2)
    expected = acts["a"][:, 3].mean((1, 2)) + 0.5 * acts[OUTPUT][:, 2]
    assert torch.allclose(combined(acts), expected, atol=1e-6)
    assert combined.layers == {"a", OUTPUT}
    diff = (channel("a", 0) - deepdream("a") / 4 + 1.0)(acts)
    assert torch.allclose(diff, acts["a"][:, 0].mean((1, 2)) - acts["a"].pow(2).sum((1, 2, 3)) / 4 + 1, atol=1e-4)
    assert torch.allclose((-channel("a", 1))(acts), -acts["a"][:, 1].mean((1, 2)))
    assert torch.allclose((2 * channel("a", 1))(acts), (channel("a", 1) * 2)(acts))


def test_per_item_scores_each_item_with_its_own_objective(acts):
    objs = [channel("a", 4), class_logit(1), neuron("a", 0, 1, 2)]
    scores = per_item(objs)(acts)
    expected = [acts["a"][0, 4].mean(), acts[OUTPUT][1, 1], acts["a"][2, 0, 1, 2]]
    assert torch.allclose(scores, torch.stack(expected), atol=1e-6)
    assert per_item(objs).layers == {"a", OUTPUT}


def test_leaky_gradient_keeps_the_relu_value_and_gives_a_leaky_relu_derivative():
    from cnnvis_core.optimize.capture import leaky_gradient

    pre = torch.tensor([-2.0, -0.5, 0.3, 1.5], requires_grad=True)
    out = leaky_gradient(pre, torch.relu(pre), leak=0.1)
    assert torch.equal(out.detach(), torch.relu(pre.detach()))  # the forward value is exactly the ReLU's
    (grad,) = torch.autograd.grad((out * torch.tensor([1.0, 2.0, 3.0, 4.0])).sum(), pre)
    assert torch.allclose(grad, torch.tensor([0.1, 0.2, 3.0, 4.0]))  # ∂ of a leaky ReLU, slope 0.1 below 0


def test_forward_until_records_an_inplace_relu_with_a_live_gradient():
    from cnnvis_core.core import ModelCore
    from cnnvis_core.hooks import hook_count
    from cnnvis_core.optimize.capture import forward_until

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(inplace=True),
                                torch.nn.Conv2d(4, 2, 1)).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    core = ModelCore(model, input_size=(9, 9), device="cpu")
    x = torch.randn(2, 3, 9, 9, requires_grad=True)
    with forward_until(core, ["2"], leak=0.25) as acts:
        model(x)
    pre = model[1](model[0](x))
    assert torch.equal(acts["2"].detach(), torch.relu(pre).detach())
    assert torch.equal(acts.leaky["2"].detach(), acts["2"].detach())
    (plain,) = torch.autograd.grad(acts["2"].sum(), x, retain_graph=True)
    (want_plain,) = torch.autograd.grad(torch.relu(pre).sum(), x, retain_graph=True)
    assert torch.allclose(plain, want_plain, atol=1e-5)
    (got,) = torch.autograd.grad(acts.leaky["2"].sum(), x)
    leaky = torch.where(pre > 0, pre, 0.25 * pre)
    (want,) = torch.autograd.grad(leaky.sum(), x)
    assert torch.allclose(got, want, atol=1e-5)
    with torch.no_grad(), forward_until(core, ["2"]) as acts:  # no gradient wanted: the plain output
        model(x)
    assert acts["2"].grad_fn is None and not acts.leaky and hook_count(model) == 0


# ---------------------------------------------------------------------------- normalisation
def test_normalization_found_in_the_transforms_we_meet():
    from torchvision.transforms._presets import ImageClassification

    from cnnvis_core import demo

    def flat(stats):
        return [v for part in stats for v in part]

    assert normalization_of(demo.transform()) == ((0.5,) * 3, (0.25,) * 3)
    # a torchvision weights preset carries .mean / .std (here not ImageNet's, to tell it from the fallback)
    preset_tf = ImageClassification(crop_size=64, mean=(0.2, 0.3, 0.4), std=(0.5, 0.6, 0.7))
    assert flat(normalization_of(preset_tf)) == pytest.approx([0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
    custom = v1.Compose([v1.Resize(64), v1.ToTensor(), v1.Normalize((0.1, 0.2, 0.3), (0.4, 0.5, 0.6))])
    assert flat(normalization_of(custom)) == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    nested = v2.Compose([v2.ToImage(), v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.3], [0.7])])])
    assert flat(normalization_of(nested)) == pytest.approx([0.3] * 3 + [0.7] * 3)
    assert normalization_of(lambda image: image) == (tuple(IMAGENET_MEAN), tuple(IMAGENET_STD))


def test_normalize_matches_the_engines_preprocessing_of_a_pil_image(demo_engine):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
    unit = torch.from_numpy(pixels).permute(2, 0, 1).float().div(255).unsqueeze(0)
    ours = normalize(unit, normalization_of(demo_engine.transform))
    assert torch.allclose(ours, demo_engine.preprocess(Image.fromarray(pixels)), atol=1e-5)


# ---------------------------------------------------------------------------- parameterisations
def test_fft_image_is_a_valid_image_and_each_item_starts_from_its_own_seed():
    (spectrum,), image_fn = fft_image(_gens(1, 3, 5), (24, 20))
    image = image_fn()
    assert spectrum.shape == (3, 3, 24, 11, 2) and image.shape == (3, 3, 24, 20)
    assert image.min() > 0 and image.max() < 1
    _, alone = fft_image(_gens(3), (24, 20))
    assert torch.equal(alone()[0], image[1])
    _, other_seed = fft_image(_gens(3, seed=1), (24, 20))
    assert not torch.equal(other_seed()[0], image[1])


def test_frequency_scale_and_colour_decorrelation():
    scale = frequency_scale(16, 16)
    assert scale[0, 0] == pytest.approx(16.0)  # DC: 1 / (1/16)
    assert scale[0, 4] == pytest.approx(4.0)  # f = 4/16 cycles per pixel
    assert scale[3, 4] == pytest.approx(1 / math.hypot(3 / 16, 4 / 16))
    eye = torch.eye(3).view(3, 3, 1, 1)  # one image per decorrelated channel
    columns = decorrelated_to_rgb(eye)[:, :, 0, 0].T
    m = COLOR_CORRELATION_SQRT / COLOR_CORRELATION_SQRT.norm(dim=0).max()
    assert torch.allclose(columns, m, atol=1e-6)
    assert columns.norm(dim=0).max() == pytest.approx(1.0)


def test_pixel_image_renders_its_noise_in_image_scale():
    (x,), image_fn = pixel_image(_gens(0, 1), (8, 9), (0.5, 0.4, 0.3), (0.25, 0.2, 0.1), low=0.6, high=0.7)
    image = image_fn()
    assert x.shape == (2, 3, 8, 9) and image.min() >= 0.6 - 1e-6 and image.max() <= 0.7 + 1e-6
    assert torch.allclose(x[:, 2], (image[:, 2] - 0.3) / 0.1, atol=1e-5)


# ---------------------------------------------------------------------------- transforms
def test_jitter_is_a_shift_drawn_per_item():
    images = torch.arange(2 * 3 * 10 * 10, dtype=torch.float32).view(2, 3, 10, 10)
    out = jitter(images, 3, _gens(7, 8))
    assert out.shape == (2, 3, 7, 7)
    for b in range(2):
        dy, dx = (int(v) for v in torch.randint(0, 4, (2,), generator=_gens(7, 8)[b]))
        assert torch.equal(out[b], images[b, :, dy:dy + 7, dx:dx + 7])


def test_affine_rotation_by_90_degrees_is_rot90():
    image = torch.rand(1, 3, 9, 9)
    theta = affine_matrices(torch.tensor([1.0]), torch.tensor([90.0]), 9, 9)
    grid = torch.nn.functional.affine_grid(theta, [1, 3, 9, 9], align_corners=False)
    turned = torch.nn.functional.grid_sample(image, grid, align_corners=False)
    assert torch.allclose(turned, torch.rot90(image, k=1, dims=(2, 3)), atol=1e-5) or \
        torch.allclose(turned, torch.rot90(image, k=-1, dims=(2, 3)), atol=1e-5)
    identity = affine_matrices(torch.tensor([1.0]), torch.tensor([0.0]), 9, 9)
    grid = torch.nn.functional.affine_grid(identity, [1, 3, 9, 9], align_corners=False)
    assert torch.allclose(torch.nn.functional.grid_sample(image, grid, align_corners=False), image, atol=1e-6)
    zoom = affine_matrices(torch.tensor([2.0]), torch.tensor([0.0]), 8, 8)  # ×2 about the centre
    assert torch.allclose(zoom[0], torch.tensor([[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]]))


def test_robustness_transforms_an_item_the_same_alone_or_in_a_batch():
    lucid = PRESETS["lucid"].robustness
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    batch = lucid(images, _gens(10, 11, 12))
    alone = lucid(images[1:2], _gens(11))
    assert batch.shape == (3, 3, 32 + 24 - 8 - 4, 32 + 24 - 8 - 4)
    assert torch.allclose(batch[1:2], alone, atol=1e-6)
    assert not torch.allclose(batch[0], batch[1])
    again = lucid(images, _gens(10, 11, 12))
    assert torch.equal(batch, again)  # seeded: no global RNG involved
    torch.manual_seed(123)
    assert torch.equal(lucid(images, _gens(10, 11, 12)), batch)


def test_random_affine_keeps_a_constant_gray_image():
    gray = torch.full((2, 3, 16, 16), 0.5)
    assert torch.allclose(random_affine(gray, (0.8, 1.2), 30, _gens(0, 1)), gray, atol=1e-6)


def test_box_blur_penalties_and_standardize_against_numpy():
    rng = np.random.default_rng(3)
    a = rng.random((1, 2, 7, 8)).astype(np.float32)
    blurred = box_blur(torch.from_numpy(a), 3).numpy()
    padded = np.pad(a, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="reflect")
    ref = sum(padded[:, :, i:i + 7, j:j + 8] for i in range(3) for j in range(3)) / 9
    assert np.allclose(blurred, ref, atol=1e-6)
    assert torch.equal(box_blur(torch.from_numpy(a), 1), torch.from_numpy(a))
    tv = np.abs(np.diff(a, axis=2)).mean() + np.abs(np.diff(a, axis=3)).mean()
    assert total_variation(torch.from_numpy(a)).item() == pytest.approx(tv, rel=1e-5)
    assert l2_penalty(torch.from_numpy(a)).item() == pytest.approx(((a - 0.5) ** 2).mean(), rel=1e-5)
    x = torch.from_numpy(rng.normal(3, 2, (2, 3, 40, 40)).astype(np.float32))
    s = standardize(x)
    assert s.min() >= 0 and s.max() <= 1
    assert s.mean().item() == pytest.approx(0.5, abs=0.01) and s[0].std().item() == pytest.approx(0.15, abs=0.01)


# ---------------------------------------------------------------------------- settings, presets, cache
def test_presets_hold_the_published_parameters():
    lucid, multi, keras = preset("lucid"), preset("multiscale"), preset("keras")
    assert (lucid.param, lucid.pad, lucid.jitter, lucid.scale, lucid.degrees, lucid.jitter_after) == \
        ("fft", 12, 8, (0.9, 1.1), 10.0, 4)
    assert (multi.size, multi.upscale_steps, multi.upscale_factor, multi.steps, multi.lr, multi.weight_decay) == \
        (56, 12, 1.2, 20, 0.1, 1e-6)
    assert (multi.init_low * 255, multi.init_high * 255) == pytest.approx((150, 180))
    assert (keras.size, keras.steps, keras.lr, keras.optimizer, keras.crop, keras.border) == \
        (180, 30, 10.0, "ascent", 25, 2)
    with pytest.raises(InputError, match="lucid"):
        preset("deep")


@pytest.mark.parametrize("bad", [dict(param="jpeg"), dict(steps=-1), dict(lr=0), dict(size=4),
                                 dict(upscale_steps=3), dict(scale=(1.2, 0.9)), dict(blur=3), dict(colour=1)])
def test_bad_settings_say_what_is_wrong(bad):
    with pytest.raises(InputError):
        Settings().updated(**bad)


def test_settings_are_hashable_and_compare_by_value():
    assert hash(Settings(steps=3)) == hash(Settings().updated(steps=3))
    assert Settings(scale=[0.9, 1.1]) == Settings(scale=(0.9, 1.1))


def test_result_cache_drops_least_recently_used_beyond_its_budget():
    cache = ResultCache(budget=3 * 100)
    for k in range(3):
        cache.put(k, np.zeros(100, np.uint8), float(k))
    assert cache.get(0)[1] == 0.0  # 0 is now the most recent
    cache.put(3, np.zeros(100, np.uint8), 3.0)
    assert cache.get(1) is None and cache.get(0) is not None and len(cache) == 3
    image = cache.get(3)[0]
    assert not image.flags.writeable
