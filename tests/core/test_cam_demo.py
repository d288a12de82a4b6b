"""Class activation maps on the demo model: an independent Grad-CAM, in-place ReLUs, the view the
maps align with, and the pointing game on fresh samples with ground-truth masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from cnnvis_core import Engine
from cnnvis_core.cam import SHARED, pointing_game, silhouette
from cnnvis_core.demo import sample
from cnnvis_core.hooks import hook_count
from tests.conftest import REPORT, TEST_SEED_START

#: seeds of this file's pointing game (fresh: after the fixtures' first few test seeds)
POINTING_START = TEST_SEED_START + 4_000
TWO_OBJECT_START = TEST_SEED_START + 5_000


def test_gradcam_agrees_with_captum_layer_gradcam(demo_engine, demo_images):
    captum = pytest.importorskip("captum.attr")
    layer = demo_engine.default_cam_layer()
    module = dict(demo_engine.model.named_modules())[layer]
    ours, theirs = [], []
    for image in demo_images:
        x = demo_engine.preprocess(image)
        result = demo_engine.cam(x, "gradcam", layer=layer)
        reference = captum.LayerGradCam(demo_engine.model, module).attribute(
            x, target=result.target, relu_attributions=True)
        ours.append(result.raw.ravel())
        theirs.append(reference.detach()[0, 0].numpy().ravel())
    for a, b in zip(ours, theirs):
        assert np.corrcoef(a, b)[0, 1] >= 0.999
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-6 * float(np.abs(b).max()))
    assert hook_count(demo_engine.model) == 0
    assert all(p.grad is None for p in demo_engine.model.parameters())


def test_a_layer_before_an_in_place_relu_keeps_its_negative_values(demo_engine, demo_images):
    x = demo_engine.preprocess(demo_images[0])
    model = demo_engine.model
    with torch.no_grad():
        h = x
        for name, module in model.features.named_children():
            h = module(h.clone())
            if name == "bn7":
                break
    activation = h.clone().requires_grad_(True)
    logits = model.fc(torch.flatten(model.gap(torch.relu(activation)), 1))
    target = int(logits.argmax())
    (grad,) = torch.autograd.grad(logits[0, target], activation)
    weights = grad[0].mean((1, 2))
    expected = torch.relu(torch.einsum("k,khw->hw", weights, activation[0].detach()))
    assert (activation < 0).any()
    result = demo_engine.cam(x, "gradcam", layer="features.bn7", target=target)
    np.testing.assert_allclose(result.raw, expected.numpy(), rtol=1e-4, atol=1e-6)


def test_cams_equal_individual_calls_and_targets_equal_single_targets(demo_engine, demo_images):
    x = demo_engine.preprocess(demo_images[1])
    before = demo_engine.counters.snapshot()
    together = demo_engine.cams(x)
    assert demo_engine.counters.snapshot() == (before[0] + 1, before[1] + 1)
    assert set(together) == set(SHARED)
    top = demo_engine.cam_targets(x, "gradcam++", 5)
    assert demo_engine.counters.snapshot() == (before[0] + 2, before[1] + 2)
    for name, result in together.items():
        np.testing.assert_allclose(result.raw, demo_engine.cam(x, name).raw, rtol=1e-5, atol=1e-7)
    assert [r.target for r in top] == [p.index for p in demo_engine.predict(x, 5)]
    for result in top:
        alone = demo_engine.cam(x, "gradcam++", target=result.target)
        np.testing.assert_allclose(result.raw, alone.raw, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(result.map, alone.map, atol=1e-5)


def test_maps_have_the_input_tensors_resolution_and_unit_range(demo_engine, demo_images):
    result = demo_engine.cam(demo_images[2], "layercam", layer="features.relu4")
    assert result.map.shape == (128, 128) and result.map.dtype == np.float32
    assert result.raw.shape == (32, 32)
    assert result.map.min() == 0.0 and result.map.max() == pytest.approx(1.0)
    up = F.interpolate(torch.from_numpy(result.raw)[None, None], size=(128, 128), mode="bilinear")[0, 0]
    expected = (up - up.min()) / (up.max() - up.min())
    np.testing.assert_allclose(result.map, expected.numpy(), atol=1e-5)


def test_model_view_is_the_picture_the_model_sees(demo_engine, demo_images):
    image = demo_images[3]
    view = demo_engine.model_view(image)
    assert view.size == image.size
    assert np.abs(np.asarray(view, int) - np.asarray(image, int)).max() <= 1
    resnet = Engine.from_torchvision("resnet18", weights=None, device="cpu")
    wide = image.resize((300, 200))
    view = resnet.model_view(wide)
    assert view.size == (224, 224)
    resize, crop = resnet.transform.resize_size, resnet.transform.crop_size  # torchvision's preset
    expected = TF.center_crop(TF.resize(wide, resize, interpolation=TF.InterpolationMode.BILINEAR), crop)
    assert np.abs(np.asarray(view, int) - np.asarray(expected, int)).mean() < 1.0
    assert resnet.cam(wide, "gradcam").map.shape == (224, 224)


def _pointing_scores(engine: Engine, method: str, n: int) -> tuple[float, float]:
    """Hit rates on the objects' silhouettes (a ring's hole counts as the ring) and on the exact masks."""
    hits = strict = 0
    for i in range(n):
        image, labels, masks = sample(POINTING_START + i)
        heat = engine.cam(image, method, target=labels[0]).map
        hits += pointing_game(heat, silhouette(masks[0]))
        strict += pointing_game(heat, masks[0])
    return hits / n, strict / n


@pytest.mark.parametrize("method", ["cam", "gradcam"])
def test_pointing_game_on_fresh_single_object_samples(demo_engine, method):
    score, strict = _pointing_scores(demo_engine, method, 120)
    REPORT[f"pointing game, {method}, 120 single-object demo images"] = (
        f"{score:.1%} (exact masks, holes not counted: {strict:.1%})")
    assert score >= 0.95


@pytest.mark.parametrize("method", ["cam", "gradcam"])
def test_each_class_of_two_object_images_points_at_its_own_object(demo_engine, method):
    hits = total = 0
    for i in range(80):
        image, labels, masks = sample(TWO_OBJECT_START + i, n_objects=2)
        if labels[0] == labels[1]:
            continue
        for result, mask in zip(demo_engine.cam_targets(image, method, list(labels)), masks):
            hits += pointing_game(result.map, silhouette(mask))
            total += 1
    REPORT[f"pointing game, {method}, each class of {total // 2} two-object demo images"] = f"{hits / total:.1%}"
    assert total >= 100 and hits / total >= 0.80


def test_faithfulness_of_a_good_map_beats_its_inverse(demo_engine):
    wins = 0
    for i in range(6):
        image, labels, _ = sample(POINTING_START + 500 + i)
        result = demo_engine.cam(image, "gradcam", target=labels[0])
        good = demo_engine.faithfulness(image, result.map, labels[0], steps=16)
        bad = demo_engine.faithfulness(image, 1 - result.map, labels[0], steps=16)
        assert good.deletion[0] == pytest.approx(good.insertion[-1], abs=1e-5)
        wins += good.deletion_auc < bad.deletion_auc and good.insertion_auc > bad.insertion_auc
    assert wins >= 5
    assert isinstance(demo_engine.model_view(image), Image.Image)


def test_bfloat16_masked_passes_stay_close_to_float32(demo_engine, demo_images):
    from cnnvis_core import InputError
    x = demo_engine.preprocess(demo_images[4])
    exact = demo_engine.cam(x, "scorecam")
    fast = demo_engine.cam(x, "scorecam", precision="bfloat16")
    assert fast.target == exact.target
    assert np.corrcoef(exact.raw.ravel(), fast.raw.ravel())[0, 1] > 0.99
    with pytest.raises(InputError, match="float32"):
        demo_engine.cam(x, "scorecam", precision="half")


def test_concurrent_cam_callers_get_their_own_maps(demo_engine, demo_images):
    """Streamlit serves every browser session in its own thread on one shared engine: threads asking
    for the shared-pass maps, the top-3 maps and Score-CAM of different images at once get exactly
    what they get alone, and no hook is left behind."""
    import threading

    images = demo_images[:4]

    def ask(image) -> list[np.ndarray]:
        shared = demo_engine.cams(image)
        top = demo_engine.cam_targets(image, "gradcam", 3)
        score = demo_engine.cam(image, "scorecam", layer="features.relu5")
        return [shared[m].raw for m in sorted(shared)] + [r.raw for r in top] + [score.raw]

    expected = [ask(image) for image in images]
    failures: list[str] = []

    def worker(i: int) -> None:
        for _ in range(2):
            got = ask(images[i])
            if len(got) != len(expected[i]) or any(not np.allclose(a, b, rtol=1e-5, atol=1e-6)
                                                   for a, b in zip(got, expected[i])):
                failures.append(f"thread {i}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(images))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures
    assert not all(np.allclose(expected[0][1], e[1]) for e in expected[1:])  # the images' maps differ
    assert hook_count(demo_engine.model) == 0
