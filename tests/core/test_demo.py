"""The bundled demo: the procedural data set, the model, its training script and its accuracy."""

from __future__ import annotations

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from cnnvis_core.demo import CLASSES, WEIGHTS_PATH, DemoNet, load_model, sample, training_summary
from cnnvis_core.demo.data import held_out_accuracy
from cnnvis_core.demo.train import main as train_main
from tests.conftest import REPORT, TEST_SEED_START


def test_sample_is_reproducible_and_seeds_differ():
    a, la, ma = sample(123)
    b, lb, mb = sample(123)
    c, _, _ = sample(124)
    assert np.array_equal(np.asarray(a), np.asarray(b)) and la == lb
    assert np.array_equal(ma[0], mb[0])
    assert not np.array_equal(np.asarray(a), np.asarray(c))


def test_sample_format_and_masks():
    for seed in range(20):
        image, labels, masks = sample(seed)
        assert image.mode == "RGB" and image.size == (128, 128)
        assert len(labels) == len(masks) == 1 and 0 <= labels[0] < len(CLASSES)
        mask = masks[0]
        assert mask.dtype == bool and mask.shape == (128, 128)
        assert 0.02 < mask.mean() < 0.6
        pixels = np.asarray(image, np.float32)
        inside, outside = pixels[mask].mean(0), pixels[~mask].mean(0)
        assert np.linalg.norm(inside - outside) > 10  # the object stands out


def test_two_object_samples_have_distinct_classes_and_disjoint_masks():
    for seed in range(20):
        _, labels, masks = sample(seed, n_objects=2)
        assert len(set(labels)) == 2 and len(masks) == 2
        assert not (masks[0] & masks[1]).any()


def test_all_classes_occur():
    assert len(CLASSES) >= 8
    seen = {sample(seed)[1][0] for seed in range(200)}
    assert seen == set(range(len(CLASSES)))


def test_architecture_is_small_and_fits_every_method():
    model = load_model()
    kinds = {type(m) for m in model.modules()}
    assert {nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.Linear} <= kinds
    assert sum(isinstance(m, nn.Linear) for m in model.modules()) == 1
    assert sum(p.numel() for p in model.parameters()) <= 2_000_000
    assert WEIGHTS_PATH.stat().st_size < 5_000_000


def test_held_out_accuracy_is_at_least_97_percent():
    model = load_model()
    accuracy = held_out_accuracy(model, n=1000, start=TEST_SEED_START)
    REPORT["demo model held-out accuracy (1000 fresh samples)"] = f"{accuracy:.1%}"
    REPORT["demo model accuracy recorded by its training run"] = \
        f"{training_summary().get('held_out_accuracy', float('nan')):.1%}"
    assert accuracy >= 0.97


def test_training_script_is_seeded_and_reproducible(tmp_path):
    args = ["--samples", "64", "--epochs", "1", "--batch", "32", "--eval-samples", "8", "--workers", "1"]
    train_main(args + ["--out", str(tmp_path / "a.safetensors")])
    train_main(args + ["--out", str(tmp_path / "b.safetensors")])
    a, b = load_file(str(tmp_path / "a.safetensors")), load_file(str(tmp_path / "b.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    fresh = DemoNet().state_dict()
    assert any(not torch.equal(a[k], fresh[k]) for k in a if k.endswith("weight"))
