"""Where the model's input lies on the photo: input_window follows a transform's resize and centre
crop, Window.to_photo lays a map over the input back onto the photo, render.overlay leaves what
was cropped away uncoloured."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torchvision.transforms import v2

from cnnvis_core.demo import transform as demo_transform
from cnnvis_core.render import overlay
from cnnvis_core.view import Window, input_window


def _marked_photo(size: tuple[int, int], square: tuple[int, int, int, int]) -> Image.Image:
    """A grey photo with a white square at (left, top, right, bottom)."""
    pixels = np.full((size[1], size[0], 3), 60, np.uint8)
    left, top, right, bottom = square
    pixels[top:bottom, left:right] = 255
    return Image.fromarray(pixels)


def _through(transform, photo: Image.Image) -> np.ndarray:
    """Where the transform's output is bright: the marker as the model sees it, ``h×w`` in {0, 1}."""
    x = transform(photo)
    return (x.float().mean(0) > x.float().mean(0).mean()).numpy().astype(np.float32)


TRANSFORMS = {
    "demo (plain resize)": demo_transform(),
    "torchvision preset (resize 256, crop 224)": torchvision.models.ResNet18_Weights.DEFAULT.transforms(),
    "v2 compose (shorter side, centre crop)": v2.Compose([v2.ToImage(), v2.Resize(150, antialias=True),
                                                          v2.CenterCrop(128), v2.ToDtype(torch.float32, scale=True)]),
    "v1 compose": torchvision.transforms.Compose([torchvision.transforms.Resize(100),
                                                  torchvision.transforms.CenterCrop((90, 80)),
                                                  torchvision.transforms.ToTensor()]),
}


@pytest.mark.parametrize("name", list(TRANSFORMS))
@pytest.mark.parametrize("size", [(640, 427), (300, 500)])
def test_a_map_of_the_input_lands_on_the_photo_where_the_model_saw_it(name, size):
    """A marker on the photo goes through the real transform; the input's view of it, mapped back
    with to_photo, covers the marker on the photo (up to a pixel or two of resampling)."""
    transform = TRANSFORMS[name]
    square = (size[0] // 2 - 40, size[1] // 2 - 30, size[0] // 2 + 20, size[1] // 2 + 35)
    photo = _marked_photo(size, square)
    window = input_window(transform, size)
    assert window is not None and window.photo_size == size
    back = window.to_photo(_through(transform, photo))
    assert back.shape == (size[1], size[0])
    truth = np.zeros_like(back)
    left, top, right, bottom = square
    truth[top:bottom, left:right] = 1
    seen = np.isfinite(back)
    hit = (back > 0.5) & seen
    miss = np.abs(hit.astype(np.float32) - truth)[seen]
    assert miss.mean() < 0.01, f"{miss.mean():.3%} of the photo's seen pixels disagree"
    edge = max(size) / min(size)
    assert np.abs(np.argwhere(hit).mean(0) - [(top + bottom) / 2, (left + right) / 2]).max() < 2 * edge


def test_the_crop_is_left_out_and_the_plain_resize_covers_everything():
    preset = torchvision.models.ResNet18_Weights.DEFAULT.transforms()  # 256 then 224: 1/8 of the shorter side cut
    window = input_window(preset, (512, 400))
    assert not window.whole
    left, top, right, bottom = window.box
    assert (right - left) == pytest.approx(224 * 400 / 256, abs=1) and (bottom - top) == pytest.approx(350, abs=1)
    assert (left + right) / 2 == pytest.approx(256, abs=1) and (top + bottom) / 2 == pytest.approx(200, abs=1)
    mapped = window.to_photo(np.ones((224, 224), np.float32))
    assert np.isnan(mapped[:, :10]).all() and np.isnan(mapped[:10]).all() and np.isfinite(mapped[200, 256])

    window = input_window(demo_transform(), (300, 200))
    assert window.whole and window.box == (0.0, 0.0, 300.0, 200.0)
    assert np.isfinite(window.to_photo(np.zeros((128, 128)))).all()


def test_a_transform_it_cannot_follow_gives_none():
    assert input_window(v2.Compose([v2.ToImage(), v2.RandomResizedCrop(128)]), (300, 200)) is None
    assert input_window(lambda image: image, (300, 200)) is None
    assert input_window(torchvision.transforms.Compose([torchvision.transforms.Lambda(lambda x: x)]),
                        (300, 200)) is None


def test_overlay_leaves_what_the_model_never_saw_uncoloured():
    photo = Image.fromarray(np.full((40, 60, 3), 200, np.uint8))
    heat = np.ones((40, 60), np.float32)
    heat[:, :20] = np.nan
    out = np.asarray(overlay(photo, heat, 0.5, "jet"), np.int32)
    assert (out[:, 25:] != 200).any(axis=-1).all(), "the seen part is coloured"
    outside = out[:, :19]
    assert (outside[..., 0] == outside[..., 1]).all() and (outside[..., 1] == outside[..., 2]).all(), \
        "the part the model never saw keeps the photo's colours (darkened), no colormap"
    assert outside.max() < 200
    Window((0.0, 0.0, 60.0, 40.0), (60, 40))  # a window is a plain value
