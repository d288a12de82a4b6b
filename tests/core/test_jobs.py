"""Jobs over data sets (cnnvis_core.jobs): dataset examples, channel statistics and CAM quality against
brute force; the merge law; receptive-field boxes; checkpoints and resuming; results saved and loaded
without the model; the Ray executor against the local one; the command line."""

from __future__ import annotations

import importlib.util
import itertools
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision.transforms import v2

from cnnvis_core import Engine, jobs, load_image
from cnnvis_core.cam import pointing_game, silhouette
from cnnvis_core.data import Dataset
from cnnvis_core.demo import sample
from cnnvis_core.hooks import tapped
from cnnvis_core.receptive_field import receptive_field
from tests.conftest import REPORT, TEST_SEED_START

ROOT = Path(__file__).resolve().parents[2]
#: seeds of this file's images
SEEDS = TEST_SEED_START + 6_000
#: two layers: a signed conv map (32×32) and a ReLU map (16×16)
LAYERS = ["features.conv3", "features.relu7"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """24 demo images as PNG files and one broken file."""
    root = tmp_path_factory.mktemp("images")
    for i in range(24):
        sample(SEEDS + i)[0].save(root / f"{i:02d}.png")
    (root / "99_broken.png").write_bytes(b"no image")
    return root


@pytest.fixture(scope="module")
def ds(folder) -> Dataset:
    return Dataset.from_path(folder)


@pytest.fixture(scope="module")
def maps(ds, demo_engine) -> dict[int, dict[str, torch.Tensor]]:
    """Brute force: every image's maps of LAYERS, one image at a time through the engine."""
    return {i: demo_engine.feature_maps(load_image(ds.path(i)), LAYERS) for i in range(24)}


@pytest.fixture(scope="module")
def examples(ds, demo_engine) -> jobs.DatasetExamples:
    return jobs.dataset_examples(demo_engine, ds, LAYERS, k=5, batch_size=8, shard_size=8)


def _brute_top(maps: dict, layer: str, channel: int, k: int) -> list[tuple[int, float, tuple[int, int]]]:
    rows = []
    for i, found in maps.items():
        plane = found[layer][channel]
        where = int(torch.argmax(plane.flatten()))
        rows.append((i, float(plane.flatten()[where]), divmod(where, plane.shape[1])))
    return sorted(rows, key=lambda r: (-r[1], r[0]))[:k]


def test_top_k_equals_brute_force(examples, maps, ds):
    assert examples.images == 24 and [Path(s.path).name for s in examples.skipped] == ["99_broken.png"]
    for layer in LAYERS:
        for channel in range(examples.job.shapes[LAYERS.index(layer)][0]):
            found = examples.top(layer, channel)
            expected = _brute_top(maps, layer, channel, 5)
            assert [e.id for e in found] == [r[0] for r in expected], (layer, channel)
            assert [e.path for e in found] == [ds.path(r[0]) for r in expected]
            np.testing.assert_allclose([e.activation for e in found], [r[1] for r in expected], rtol=1e-5, atol=1e-6)
            assert [e.position for e in found] == [r[2] for r in expected], (layer, channel)


def test_boxes_are_receptive_fields_and_contain_what_changes_the_unit(examples, demo_engine):
    for layer in LAYERS:
        field, measured = examples.receptive_fields[layer], receptive_field(demo_engine, layer, "gradient")
        assert field.method == "geometry" and (field.rows, field.cols) == (measured.rows, measured.cols)
    best = examples.top("features.relu7", 7)[0]
    left, top, right, bottom = best.box
    assert 0 < right - left <= 78 and 0 < bottom - top <= 78  # a 78-pixel field, clipped at the border
    x = demo_engine.preprocess(load_image(best.path))
    row, col = best.position

    def unit(image: torch.Tensor) -> torch.Tensor:
        kept = []
        with demo_engine.session(), tapped([demo_engine.tap("features.relu7", lambda _m, _i, out: kept.append(out),
                                                            stop=True)]):
            demo_engine.model(image)
        return kept[0][0, 7, row, col]

    assert float(unit(x)) == pytest.approx(best.activation, rel=1e-5)
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(x.shape, generator=generator) * 2
    outside = torch.ones_like(x, dtype=torch.bool)
    outside[..., top:bottom, left:right] = False
    with torch.no_grad():
        assert float(unit(torch.where(outside, x + noise, x))) == pytest.approx(best.activation, rel=1e-4, abs=1e-4)
        assert abs(float(unit(torch.where(outside, x, x + noise))) - best.activation) > 1e-2
    # where the real model's unit has a gradient lies inside the box
    image = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(unit(image), image)
    rows, cols = torch.nonzero(grad[0].abs().sum(0), as_tuple=True)
    assert rows.numel() > 0
    assert top <= int(rows.min()) and int(rows.max()) < bottom and left <= int(cols.min()) and int(cols.max()) < right


def test_geometry_and_gradient_agree_on_every_layer_of_the_demo(demo_engine):
    for layer in ["features.conv1", "features.relu2", "features.pool2", "features.conv4", "features.relu6",
                  "features"]:
        geometry, gradient = (receptive_field(demo_engine, layer, m) for m in ("geometry", "gradient"))
        assert geometry.rows == gradient.rows and geometry.cols == gradient.cols, layer
    assert receptive_field(demo_engine, "features.relu7").size == (78, 78)


def test_a_residual_model_gets_gradient_boxes():
    resnet = Engine.from_torchvision("resnet18", weights=None, device="cpu")
    assert receptive_field(resnet, "layer1.0.conv1").method == "geometry"
    field = receptive_field(resnet, "layer2")
    assert field.method == "gradient" and len(field.rows) == 28
    assert field.rows[0][0] == 0 and field.rows[-1][1] == 224 and field.rows[14][1] - field.rows[14][0] == 99


def _same_tops(a: jobs.DatasetExamples, b: jobs.DatasetExamples, exact: bool = True) -> None:
    for layer in LAYERS:
        for channel in range(0, 64 if layer == LAYERS[0] else 128, 3):
            x, y = a.top(layer, channel), b.top(layer, channel)
            if exact:
                assert x == y, (layer, channel)
            else:
                assert [(e.id, e.position, e.box) for e in x] == [(e.id, e.position, e.box) for e in y]
                np.testing.assert_allclose([e.activation for e in x], [e.activation for e in y], rtol=1e-5)


def test_the_merge_of_two_halves_is_the_whole(examples, ds, demo_engine):
    """Parts cut at batch boundaries run the very batches of the whole run: equal to the bit. Cut
    elsewhere, a batch of other images gives a conv map that differs in its last bits (oneDNN
    blocks the batch), so then the lists are equal and the activations to float precision."""
    aligned = [ds.subset(range(a, b)) for a, b in ((0, 8), (8, 16), (16, 25))]
    parts = [jobs.dataset_examples(demo_engine, part, LAYERS, k=5, batch_size=8) for part in aligned]
    merged = jobs.merge(*parts)
    assert merged.fingerprint == examples.fingerprint == ds.fingerprint
    assert merged.images == 24 and len(merged.skipped) == 1
    _same_tops(merged, examples)
    _same_tops(jobs.merge(parts[0], jobs.merge(parts[1], parts[2])), examples)  # associative
    _same_tops(jobs.merge(parts[2], parts[0], parts[1]), examples)  # and commutative
    halves = [jobs.dataset_examples(demo_engine, ds.shard(i, 2), LAYERS, k=5, batch_size=8) for i in range(2)]
    _same_tops(jobs.merge(*halves), examples, exact=False)
    with pytest.raises(jobs.JobError, match="same images"):
        jobs.merge(halves[0], halves[0])
    stats = [jobs.channel_stats(demo_engine, part, LAYERS, batch_size=8) for part in (ds.subset(range(8)),
                                                                                      ds.subset(range(8, 25)))]
    whole = jobs.channel_stats(demo_engine, ds, LAYERS, batch_size=8)
    joined = jobs.merge(*stats)
    for layer in LAYERS:
        np.testing.assert_array_equal(joined.peak[layer], whole.peak[layer])
        np.testing.assert_array_equal(joined.active[layer], whole.active[layer])
        np.testing.assert_allclose(joined.mean[layer], whole.mean[layer], rtol=1e-12)  # float64 sums, other order
    with pytest.raises(jobs.JobError, match="settings"):
        jobs.merge(stats[0], jobs.channel_stats(demo_engine, ds.subset(range(8, 25)), LAYERS[:1], batch_size=8))


def test_statistics_equal_brute_force_and_dead_channels_equal_the_engines(ds, maps, demo_engine):
    st = jobs.channel_stats(demo_engine, ds, LAYERS, batch_size=8, shard_size=16)
    assert st.images == 24
    for layer in LAYERS:
        stacked = torch.stack([maps[i][layer] for i in range(24)])  # (N, C, H, W)
        flat = stacked.transpose(0, 1).reshape(stacked.shape[1], -1).double()
        np.testing.assert_allclose(st.peak[layer], flat.abs().amax(1).numpy(), rtol=1e-6)
        np.testing.assert_allclose(st.mean[layer], flat.mean(1).numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(st.active[layer], (flat > 0).double().mean(1).numpy(), atol=1e-3)
    images = [load_image(ds.path(i)) for i in range(24)]
    everything = jobs.channel_stats(demo_engine, ds, batch_size=8)  # default layers: every conv and ReLU
    peaks = np.sort(np.concatenate(list(everything.peak.values())))
    for eps in (0.0, float(peaks[len(peaks) // 10] + peaks[len(peaks) // 10 + 1]) / 2):  # none, and a tenth dead
        expected = demo_engine.dead_channels(images, eps=eps)
        found = everything.dead(eps)
        assert [(d.name, d.kind, d.channels, d.dead) for d in found.layers] == \
               [(d.name, d.kind, d.channels, d.dead) for d in expected.layers]
        assert found.images == expected.images == 24
    check = demo_engine.verify_pruning(images[:4], everything.dead(0.0))  # the pruning check reads it
    assert check.images == 4


def test_cam_quality_and_the_pointing_game_on_the_demo_data_set(demo_engine, tmp_path):
    ds = Dataset.demo(24, seed_start=SEEDS + 100)
    started = time.perf_counter()
    cq = jobs.cam_quality(demo_engine, ds, ("gradcam", "cam"), steps=4, out=tmp_path / "cq")
    seconds = time.perf_counter() - started
    summary = cq.summary
    REPORT["cam quality job, 24 demo images, gradcam + cam, 4 steps"] = (
        f"{seconds:.1f} s; pointing game gradcam {summary['gradcam'].pointing.mean:.0%}, "
        f"deletion AUC {summary['gradcam'].deletion.mean:.3f}, insertion AUC {summary['gradcam'].insertion.mean:.3f}")
    for method in ("gradcam", "cam"):
        q = summary[method]
        assert q.pointing.n == 24 and q.pointing.mean > 0.8
        assert q.pointing.low <= q.pointing.mean <= q.pointing.high <= 1
        assert q.deletion.low <= q.deletion.mean <= q.deletion.high and q.deletion.n == 24
        assert q.deletion.mean < q.insertion.mean
    # one row per image and method, the targets the labels
    rows = cq.rows
    assert rows["id"].tolist() == sorted(list(range(24)) * 2)
    assert rows["target"][rows["method"] == "gradcam"].tolist() == [sample(SEEDS + 100 + i)[1][0] for i in range(24)]
    gradcam = rows["method"] == "gradcam"
    hits = []
    for i in range(24):  # the pointing game, image by image through the engine
        image, labels, masks = sample(SEEDS + 100 + i)
        hits.append(int(pointing_game(demo_engine.cam(image, "gradcam", target=labels[0]).map, silhouette(masks[0]))))
    assert rows["hit"][gradcam].tolist() == hits
    heat = demo_engine.cam(sample(SEEDS + 100)[0], "gradcam", target=int(rows["target"][0])).map
    curves = demo_engine.faithfulness(sample(SEEDS + 100)[0], heat, int(rows["target"][0]), steps=4)
    assert rows["deletion"][gradcam][0] == pytest.approx(curves.deletion_auc, abs=1e-6)
    loaded = jobs.load(tmp_path / "cq")
    assert loaded.summary == summary
    assert json.loads((tmp_path / "cq" / "manifest.json").read_text())["summary"]["gradcam"]["pointing"]["n"] == 24


def test_a_stopped_job_resumes_from_its_finished_shards(ds, demo_engine, tmp_path):
    out = tmp_path / "run"
    seen = []

    def stop_after_two_shards(progress: jobs.Progress) -> bool:
        seen.append(progress)
        return progress.shards < 2

    before = demo_engine.counters.forward
    with pytest.raises(jobs.JobCancelled, match="2 of 4 shards"):
        jobs.dataset_examples(demo_engine, ds, LAYERS, k=5, batch_size=4, shard_size=8, out=out,
                              progress=stop_after_two_shards)
    assert demo_engine.counters.forward - before == 4  # two shards of two batches
    assert sorted(p.name for p in (out / "shards").glob("*.parquet")) == ["000000.parquet", "000001.parquet"]
    assert seen[-1].done == 16 and seen[-1].total == 25 and seen[-1].rate > 0 and seen[-1].eta is not None

    def crash(progress: jobs.Progress) -> None:  # a crash in the third shard: its work is lost, not the others'
        if progress.done > 18:
            raise RuntimeError("power cut")

    with pytest.raises(RuntimeError, match="power cut"):
        jobs.dataset_examples(demo_engine, ds, LAYERS, k=5, batch_size=4, shard_size=8, out=out, progress=crash)
    before = demo_engine.counters.forward
    resumed = jobs.dataset_examples(demo_engine, ds, LAYERS, k=5, batch_size=4, shard_size=8, out=out)
    assert demo_engine.counters.forward - before == 2  # the last two shards: 2 batches, and the broken file alone
    uninterrupted = jobs.dataset_examples(demo_engine, ds, LAYERS, k=5, batch_size=4, shard_size=8)
    assert all(resumed.top(layer, c) == uninterrupted.top(layer, c) for layer in LAYERS for c in range(64))
    assert not (out / "shards").exists()
    committed = json.loads((out / "manifest.json").read_text())["files"]["table"]
    assert [p.name for p in out.glob("*.parquet")] == [committed]
    before = demo_engine.counters.forward
    again = jobs.dataset_examples(demo_engine, ds, LAYERS, k=5, batch_size=4, shard_size=8, out=out)
    assert demo_engine.counters.forward == before and again.top(LAYERS[1], 3) == resumed.top(LAYERS[1], 3)
    # another job in the same folder's shards is refused, unless asked to start over
    (out / "shards").mkdir()
    (out / "shards" / "job.json").write_text(json.dumps({"kind": "other"}))
    with pytest.raises(jobs.JobError, match="another job"):
        jobs.dataset_examples(demo_engine, ds, LAYERS, k=4, batch_size=4, shard_size=8, out=out)
    event = threading.Event()
    event.set()
    with pytest.raises(jobs.JobCancelled):
        jobs.dataset_examples(demo_engine, ds, LAYERS, k=4, batch_size=4, shard_size=8, out=out, resume=False,
                              cancel=event)


def test_results_save_and_load_without_the_model(examples, ds, demo_engine, tmp_path, monkeypatch):
    examples.save(tmp_path / "ex")
    [path] = (tmp_path / "ex").glob("examples.*.parquet")
    table = pq.read_table(path)
    assert {"layer", "channel", "rank", "activation", "id", "path", "row", "col", "left", "top", "right",
            "bottom"} <= set(table.column_names) and table.num_rows == (64 + 128) * 5
    manifest = json.loads((tmp_path / "ex" / "manifest.json").read_text())
    assert manifest["kind"] == "dataset_examples" and manifest["model"]["spec"] == {"kind": "demo", "name": None,
                                                                                    "weights": None}
    assert manifest["data"]["fingerprint"] == ds.fingerprint and manifest["settings"]["k"] == 5
    assert {"torch", "pyarrow", "numpy", "python"} <= set(manifest["versions"])
    assert manifest["data"]["skipped"][0]["path"].endswith("99_broken.png")

    def no_model(*_args, **_kwargs):
        raise AssertionError("loading a result built a model")

    monkeypatch.setattr(Engine, "demo", no_model)
    monkeypatch.setattr(Engine, "__init__", no_model)
    before = demo_engine.counters.snapshot()
    loaded = jobs.load(tmp_path / "ex")
    assert isinstance(loaded, jobs.DatasetExamples) and loaded.images == 24
    assert all(loaded.top(layer, c) == examples.top(layer, c) for layer in LAYERS for c in range(64))
    crop = loaded.crop("features.relu7", 7, 0)  # rendered from the file, on demand
    best = loaded.top("features.relu7", 7)[0]
    left, top, right, bottom = best.box
    assert np.array_equal(np.asarray(crop), np.asarray(load_image(best.path))[top:bottom, left:right])
    assert demo_engine.counters.snapshot() == before
    stats = jobs.channel_stats(demo_engine, ds, LAYERS, batch_size=8)
    stats.save(tmp_path / "st")
    back = jobs.load(tmp_path / "st")
    for layer in LAYERS:
        assert np.array_equal(back.mean[layer], stats.mean[layer])
        assert np.array_equal(back.peak[layer], stats.peak[layer])
    assert {path.name for path, _ in jobs.find(tmp_path)} == {"ex", "st"}


class ColourNet(nn.Module):
    """Channel c of ``detect`` responds to pure colour c (red, green, blue) and to nothing grey: a 3×3
    conv of ``x_c − x_other`` (inputs scaled to [-1, 1]), ReLU, 2×2 max-pool, a 3×3 mean per channel."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1, bias=False)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.detect = nn.Conv2d(3, 3, 3, padding=1, groups=3, bias=False)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 3))
        with torch.no_grad():
            weight = -torch.ones(3, 3, 3, 3) / 9
            for c in range(3):
                weight[c, c] = 2 / 9
            self.conv.weight.copy_(weight)
            self.detect.weight.fill_(1 / 9)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.detect(self.pool(self.relu(self.conv(x)))))


def test_a_model_with_a_known_answer_finds_the_coloured_images_and_their_patches(tmp_path):
    transform = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.5] * 3, [0.5] * 3)])
    engine = Engine(ColourNet(), transform=transform, input_size=(48, 48), device="cpu")
    rng = np.random.default_rng(0)
    patches = {}
    for i in range(18):
        pixels = np.full((48, 48, 3), 128, np.uint8)
        colour, (y, x) = i % 3, rng.integers(2, 40, size=2)
        pixels[y:y + 6, x:x + 6] = 0
        pixels[y:y + 6, x:x + 6, colour] = 255
        Image.fromarray(pixels).save(tmp_path / f"{i:02d}.png")
        patches[f"{i:02d}.png"] = (colour, (int(x), int(y), int(x) + 6, int(y) + 6))
    ex = jobs.dataset_examples(engine, Dataset.from_path(tmp_path), ["detect"], k=6, batch_size=5)
    for channel in range(3):
        top = ex.top("detect", channel)
        assert {patches[Path(e.path).name][0] for e in top} == {channel}, channel
        for e in top:
            left, top_, right, bottom = e.box
            px0, py0, px1, py1 = patches[Path(e.path).name][1]
            assert left <= px0 and top_ <= py0 and right >= px1 and bottom >= py1, (e, patches[Path(e.path).name])
            assert e.activation > 0
    assert ex.receptive_fields["detect"].size == (8, 8)


@pytest.fixture
def local_ray():
    """A local Ray for one test, shut down after it (unless it was running before)."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (python3 -m pip install -r requirements-dev.txt)")
    running = ray.is_initialized()
    yield ray
    if not running:
        ray.shutdown()


@pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                    reason="Ray is not installed (python3 -m pip install -r requirements-dev.txt)")
@pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*")
def test_the_ray_executor_gives_what_the_local_one_gives(ds, demo_engine, tmp_path, local_ray):
    started = time.perf_counter()
    local = jobs.dataset_examples(demo_engine, ds, LAYERS, k=5, batch_size=8, shard_size=8)
    on_ray = jobs.dataset_examples(demo_engine, ds, LAYERS, k=5, executor="ray", workers=2, batch_size=8,
                                   shard_size=8, out=tmp_path / "ex")
    assert all(on_ray.top(layer, c) == local.top(layer, c) for layer in LAYERS for c in range(64))
    assert on_ray.skipped == local.skipped and on_ray.images == 24
    stats_local = jobs.channel_stats(demo_engine, ds, LAYERS, batch_size=8, shard_size=8)
    stats_ray = jobs.channel_stats(demo_engine, ds, LAYERS, executor="ray", workers=2, batch_size=8, shard_size=8)
    for layer in LAYERS:
        for what in ("peak", "mean", "active"):
            np.testing.assert_array_equal(getattr(stats_ray, what)[layer], getattr(stats_local, what)[layer])
    REPORT["Ray executor test (local Ray, 2 workers, 2 jobs of 25 files)"] = f"{time.perf_counter() - started:.1f} s"
    with pytest.raises(jobs.JobError, match="description"):
        jobs.channel_stats(Engine(demo_engine.model, transform=demo_engine.transform, input_size=(128, 128),
                                  device="cpu"), ds, LAYERS, executor="ray")


def test_the_command_line_runs_a_job_end_to_end(folder, tmp_path):
    out = tmp_path / "stats"
    done = subprocess.run([sys.executable, "-m", "cnnvis_core.jobs", "stats", "--model", "demo", "--data", str(folder),
                           "--out", str(out), "--layers", "features.relu7", "--batch-size", "8"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "saved to" in done.stdout and "25/25 images" in done.stderr and "100%" in done.stderr
    loaded = jobs.load(out)
    assert isinstance(loaded, jobs.ChannelStats) and loaded.images == 24 and loaded.layers == ["features.relu7"]
    failed = subprocess.run([sys.executable, "-m", "cnnvis_core.jobs", "examples", "--model", "demo", "--data",
                             str(tmp_path / "nowhere"), "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert failed.returncode == 2 and "No such folder" in failed.stderr


def test_progress_reports_rate_and_time_left(ds, demo_engine):
    reports: list[jobs.Progress] = []
    jobs.channel_stats(demo_engine, ds, LAYERS[:1], batch_size=4, shard_size=8, progress=reports.append)
    assert [r.done for r in reports if r.shards == r.shard_count][-1] == 25
    assert all(a.done <= b.done for a, b in itertools.pairwise(reports))
    assert reports[-1].skipped == 1 and reports[-1].eta == 0 and "img/s" in str(reports[-1])


@pytest.mark.slow
def test_figures_on_two_thousand_demo_samples(demo_engine, tmp_path):
    """The issue's figures: 2,000 generator samples, dataset examples for every channel of two layers,
    channel statistics, CAM quality for CAM and Grad-CAM on all of them and Score-CAM on the first
    200 (each Score-CAM map costs 128 masked passes here); printed in the run's figures."""
    ds = Dataset.demo(2000, seed_start=SEEDS + 10_000)
    started = time.perf_counter()
    ex = jobs.dataset_examples(demo_engine, ds, ["features.relu4", "features.relu7"], out=tmp_path / "ex")
    REPORT["2,000 demo samples: dataset examples, 2 layers (192 channels), k = 9"] = \
        f"{time.perf_counter() - started:.1f} s"
    started = time.perf_counter()
    st = jobs.channel_stats(demo_engine, ds, out=tmp_path / "st")
    dead = st.dead(0.0)
    REPORT["2,000 demo samples: channel statistics, 14 layers"] = (
        f"{time.perf_counter() - started:.1f} s; dead channels {dead.total}; mean active fraction of relu7 "
        f"{float(st.active['features.relu7'].mean()):.1%}")
    for methods, part in ((("gradcam", "cam"), ds), (("scorecam",), ds.limit(200))):
        started = time.perf_counter()
        cq = jobs.cam_quality(demo_engine, part, methods, steps=16, out=tmp_path / "-".join(methods))
        for method, q in cq.summary.items():
            REPORT[f"CAM quality, {method}, {len(part)} demo samples, 16 steps"] = (
                f"deletion AUC {q.deletion.mean:.3f} [{q.deletion.low:.3f}, {q.deletion.high:.3f}], insertion AUC "
                f"{q.insertion.mean:.3f} [{q.insertion.low:.3f}, {q.insertion.high:.3f}], pointing game "
                f"{q.pointing.mean:.1%} [{q.pointing.low:.1%}, {q.pointing.high:.1%}] "
                f"({time.perf_counter() - started:.0f} s for {', '.join(methods)})")
            assert q.pointing.mean > 0.8
    assert len(ex.top("features.relu7", 0)) == 9 and st.images == 2000
