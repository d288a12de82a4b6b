"""Data sets (cnnvis_core.data): folders, ImageFolder trees, zip and tar archives (path, bytes, file
object), lists of paths and the demo generator; unreadable files skipped with their reason;
fingerprints; selections; batches equal to the engine's own preprocessing; the transform geometry."""

from __future__ import annotations

import io
import os
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from cnnvis_core import Engine, InputError, load_image
from cnnvis_core.data import Dataset, view_of
from cnnvis_core.demo import sample
from tests.conftest import TEST_SEED_START

#: seeds of this file's images (after those other test files use)
SEEDS = TEST_SEED_START + 5_000
BAD = b"this is no image at all"


def _png(seed: int) -> bytes:
    buffer = io.BytesIO()
    sample(seed)[0].save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """An ImageFolder tree: circle/ (3 images), square/ (3 images and a broken one), notes.txt in
    square/, a hidden file."""
    root = tmp_path_factory.mktemp("tree")
    for label, first in (("circle", 0), ("square", 3)):
        (root / label).mkdir()
        for i in range(3):
            (root / label / f"{i}.png").write_bytes(_png(SEEDS + first + i))
    (root / "square" / "broken.png").write_bytes(BAD)
    (root / "square" / "notes.txt").write_text("not an image")
    (root / "circle" / ".DS_Store").write_bytes(b"\0")
    return root


@pytest.fixture(scope="module")
def flat(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("flat")
    for i in range(5):
        (root / f"img{i}.png").write_bytes(_png(SEEDS + 10 + i))
    (root / "zz_broken.jpg").write_bytes(BAD)
    (root / "deeper").mkdir()
    (root / "deeper" / "more.png").write_bytes(_png(SEEDS + 20))
    return root


def _read_all(ds: Dataset, engine: Engine, batch_size: int = 4) -> tuple[list[int], list]:
    ids, skipped = [], []
    for batch in ds.batches(engine, batch_size):
        assert batch.x is None or batch.x.shape[0] == len(batch.ids) <= batch_size
        ids += batch.ids.tolist()
        skipped += batch.skipped
    return ids, skipped


def test_a_folder_is_read_recursively_and_a_broken_file_is_skipped_with_its_reason(flat, demo_engine):
    ds = Dataset.from_path(flat)
    assert len(ds) == 7 and ds.classes == []  # images below the top too; but no labels: files at the top
    ids, skipped = _read_all(ds, demo_engine)
    assert len(ids) == 6 and len(skipped) == 1
    with pytest.raises(InputError) as expected:
        load_image(flat / "zz_broken.jpg")
    assert skipped[0].path == str(flat / "zz_broken.jpg") and skipped[0].reason == str(expected.value)
    assert ds.skipped == tuple(skipped)


def test_an_imagefolder_tree_gets_labels_and_non_images_are_reported(tree, demo_engine):
    ds = Dataset.from_path(tree)
    assert ds.classes == ["circle", "square"] and len(ds) == 7
    assert [ds.label(i) for i in range(len(ds))] == ["circle"] * 3 + ["square"] * 4
    assert [s.path for s in ds.ignored] == [str(tree / "square" / "notes.txt")]
    assert "not an image file" in ds.ignored[0].reason
    ids, skipped = _read_all(ds, demo_engine)
    assert len(ids) == 6 and [Path(s.path).name for s in skipped] == ["broken.png"]
    assert all(".DS_Store" not in ds.path(i) for i in range(len(ds)))


def _zip(tree: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(tree.rglob("*")):
            if path.is_file():
                archive.write(path, "val/" + path.relative_to(tree).as_posix())  # one folder around it all
    return buffer.getvalue()


def _tar(tree: Path, target: Path, mode: str) -> Path:
    with tarfile.open(target, mode) as archive:
        for path in sorted(tree.rglob("*")):
            if path.is_file():
                archive.add(path, path.relative_to(tree).as_posix())
    return target


def _same_images(a: Dataset, b: Dataset, engine: Engine) -> None:
    xa = torch.cat([batch.x for batch in a.batches(engine, 8)])
    xb = torch.cat([batch.x for batch in b.batches(engine, 8)])
    assert torch.equal(xa, xb)


def test_zip_and_tar_archives_from_a_path_bytes_or_a_file_object(tree, tmp_path, demo_engine):
    folder = Dataset.from_path(tree)
    data = _zip(tree)
    (tmp_path / "val.zip").write_bytes(data)
    tar = _tar(tree, tmp_path / "val.tar", "w")
    tgz = _tar(tree, tmp_path / "val.tar.gz", "w:gz")
    with open(tar, "rb") as opened:
        from_file = Dataset.from_path(opened)  # a real file: read from its path
    archives = [Dataset.from_path(tmp_path / "val.zip"), Dataset.from_path(data), Dataset.from_path(io.BytesIO(data)),
                Dataset.from_path(tar), Dataset.from_path(tgz), from_file]
    for ds in archives:
        assert len(ds) == 7 and ds.classes == ["circle", "square"], ds
        ids, skipped = _read_all(ds, demo_engine)
        assert len(ids) == 6 and [s.path.rsplit("/", 1)[-1] for s in skipped] == ["broken.png"]
        assert [s.path.rsplit("/", 1)[-1] for s in ds.ignored] == ["notes.txt"]
        _same_images(ds, folder, demo_engine)
    assert archives[1].fingerprint == archives[0].fingerprint == archives[2].fingerprint  # the bytes' hash
    assert archives[0].path(0).endswith("val.zip::val/circle/0.png")
    # an archive data set travels to another process (a Ray worker) without its open reader
    copy = pickle.loads(pickle.dumps(archives[4]))
    _same_images(copy, folder, demo_engine)


def test_a_list_of_paths_keeps_its_order_and_skips_a_missing_file(flat, demo_engine):
    paths = [flat / "img3.png", flat / "img1.png", flat / "missing.png"]
    ds = Dataset.from_path(paths)
    assert [ds.path(i) for i in range(3)] == [str(p) for p in paths]
    ids, skipped = _read_all(ds, demo_engine)
    assert ids == [0, 1] and len(skipped) == 1 and "missing.png" in skipped[0].reason
    assert torch.equal(next(iter(ds.batches(demo_engine, 1))).x, demo_engine.preprocess(load_image(paths[0])))


def test_batches_are_the_engines_preprocessing(flat, demo_engine):
    ds = Dataset.from_path(flat)
    batches = list(ds.batches(demo_engine, 3, prefetch=True))
    x = torch.cat([b.x for b in batches if b.x is not None])
    ids = np.concatenate([b.ids for b in batches])
    expected = torch.cat([demo_engine.preprocess(load_image(ds.path(i))) for i in ids])
    assert torch.equal(x, expected)


def test_fingerprints_are_stable_and_follow_the_files(tmp_path):
    for i in range(3):
        (tmp_path / f"{i}.png").write_bytes(_png(SEEDS + 30 + i))
    first = Dataset.from_path(tmp_path).fingerprint
    assert Dataset.from_path(tmp_path).fingerprint == first and len(first) == 16
    path = tmp_path / "1.png"
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))  # touched
    touched = Dataset.from_path(tmp_path).fingerprint
    path.write_bytes(_png(SEEDS + 40))  # rewritten
    assert len({first, touched, Dataset.from_path(tmp_path).fingerprint}) == 3
    (tmp_path / "3.png").write_bytes(_png(SEEDS + 41))  # one more
    ds = Dataset.from_path(tmp_path)
    assert ds.fingerprint not in (first, touched)
    # a selection has its own fingerprint; the source's stays
    part = ds.limit(2)
    assert part.root_fingerprint == ds.fingerprint != part.fingerprint == ds.limit(2).fingerprint


def test_selections_keep_ids(flat):
    ds = Dataset.from_path(flat)
    assert ds.limit(3).ids.tolist() == [0, 1, 2]
    drawn = ds.sample(4, seed=3)
    assert drawn.ids.tolist() == ds.sample(4, seed=3).ids.tolist() == sorted(drawn.ids.tolist())
    assert drawn.ids.tolist() != ds.sample(4, seed=4).ids.tolist()
    halves = [ds.shard(i, 2).ids.tolist() for i in range(2)]
    assert halves[0] + halves[1] == list(range(7)) and abs(len(halves[0]) - len(halves[1])) <= 1
    assert ds.subset([5, 1]).ids.tolist() == [1, 5] and ds.subset([5, 1]).path(5) == ds.path(5)
    assert Dataset.from_path(flat, limit=2).ids.tolist() == [0, 1]


def test_the_demo_data_set_has_classes_and_masks(demo_engine):
    ds = Dataset.demo(6, seed_start=SEEDS + 50)
    assert ds.has_masks and ds.classes[0] == "circle"
    batch = next(iter(ds.batches(demo_engine, 6)))
    for n, i in enumerate(batch.ids):
        image, labels, masks = sample(SEEDS + 50 + int(i))
        assert batch.targets[n] == labels[0] and np.array_equal(batch.masks[n], masks[0])
        assert torch.equal(batch.x[n:n + 1], demo_engine.preprocess(image))
    assert ds.path(2) == f"demo:seed={SEEDS + 52}.png"
    assert np.array_equal(np.asarray(ds.open(ds.path(2))), np.asarray(sample(SEEDS + 52)[0]))


def test_what_is_no_data_set_gets_a_message(tmp_path):
    with pytest.raises(InputError, match="No such folder"):
        Dataset.from_path(tmp_path / "nowhere")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="No image files"):
        Dataset.from_path(tmp_path)
    (tmp_path / "fake.zip").write_bytes(b"neither zip nor tar")
    with pytest.raises(InputError, match="neither a zip nor a tar"):
        Dataset.from_path(tmp_path / "fake.zip")


def test_the_view_of_a_torchvision_transform_matches_the_transform():
    resnet = Engine.from_torchvision("resnet18", weights=None, device="cpu")
    view = view_of(resnet.transform, resnet.input_size)
    assert view.exact and view.steps == (("resize", ((256,), None)), ("crop", (224, 224)))
    photo = sample(SEEDS + 60)[0].resize((300, 200))
    seen = view.apply(photo)
    expected = TF.center_crop(TF.resize(photo, [256]), [224, 224])
    assert seen.size == (224, 224) and np.abs(np.asarray(seen, int) - np.asarray(expected, int)).mean() < 1.0
    # 300×200 resized to 384×256 (×1.28), the middle 224×224 cut at (80, 16): 175 photo pixels from (62.5, 12.5)
    assert view.to_original((0, 0, 224, 224), (300, 200)) == (62, 12, 238, 188)
    demo = view_of(Engine.demo(device="cpu").transform, (128, 128))
    assert demo.to_original((10, 20, 30, 40), (128, 128)) == (10, 20, 30, 40)
    unknown = view_of(lambda image: image, (64, 64))
    assert not unknown.exact and unknown.to_original((0, 0, 64, 64), (128, 32)) == (0, 0, 128, 32)
    assert isinstance(seen, Image.Image)
