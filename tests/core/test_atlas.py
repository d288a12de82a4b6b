"""The unit atlas (cnnvis_core.atlas): channel order and selectivity, the per-image peak histogram
the examples job now keeps (against brute force, and its merge law), the maps over the crops, the
kernels behind a channel, the logit view against the classifier's weights, and the static export
(every page exists, every relative link and picture resolves, text is escaped), by the library and
by the command line."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F

from cnnvis_core import InputError, atlas, deconv, jobs
from cnnvis_core.data import Dataset
from cnnvis_core.jobs import histogram
from cnnvis_core.kernels import filter_slices
from tests.conftest import REPORT

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ["features.relu2", "features.relu7"]
N, K = 24, 4


@pytest.fixture(scope="module")
def ds() -> Dataset:
    return Dataset.demo(N)


@pytest.fixture(scope="module")
def result(ds, demo_engine) -> jobs.DatasetExamples:
    return jobs.dataset_examples(demo_engine, ds, LAYERS + ["features.conv3"], k=K, batch_size=8, shard_size=8)


@pytest.fixture(scope="module")
def peaks(ds, demo_engine) -> dict[str, np.ndarray]:
    """Brute force: ``(N, C)`` each image's maximum per channel, one image at a time."""
    names = LAYERS + ["features.conv3"]
    maps = [demo_engine.feature_maps(ds.open(ds.path(i)), names) for i in range(N)]
    return {name: np.stack([m[name].flatten(1).amax(1).numpy() for m in maps]) for name in names}


# ---------------------------------------------------------------------------- order and selectivity
def test_order_selectivity_and_dead_marks_on_a_known_table():
    peak = np.array([4.0, 0.0, 9.0, 6.0, 2.0])
    mean = np.array([2.0, 0.0, 1.0, -1.0, 2.0])
    table = atlas.UnitTable("x", peak, mean, atlas.selectivity(peak, mean), ~(peak > 0.5), 0.5, "examples")
    assert np.allclose(table.selectivity, [2.0, np.nan, 9.0, np.nan, 1.0], equal_nan=True)
    assert table.order("index") == [0, 1, 2, 3, 4]
    assert table.order("peak") == [2, 3, 0, 4, 1]
    assert table.order("selectivity") == [2, 0, 4, 1, 3]  # undefined (mean ≤ 0) last, by index
    assert table.order("peak", dead=False) == [2, 3, 0, 4]
    with pytest.raises(InputError, match="Unknown order"):
        table.order("colour")
    assert atlas.find_channel(" channel #3 ", 5) == 3
    for text in ("x", "7", "-1"):
        with pytest.raises(InputError, match=r"[Cc]hannel"):
            atlas.find_channel(text, 5)


def test_the_table_of_a_result_equals_brute_force(result, peaks):
    for layer in LAYERS:
        table = atlas.unit_table(result, layer, eps=0.05)
        np.testing.assert_allclose(table.peak, peaks[layer].max(0), rtol=1e-5)
        np.testing.assert_allclose(table.mean, peaks[layer].mean(0), rtol=1e-5)
        expected = np.where(peaks[layer].mean(0) > 0, peaks[layer].max(0) / np.maximum(peaks[layer].mean(0), 1e-30),
                            np.nan)
        np.testing.assert_allclose(table.selectivity, expected, rtol=1e-5)
        assert np.array_equal(table.dead, peaks[layer].max(0) <= 0.05)
        by_sel = table.order("selectivity")
        values = table.selectivity[by_sel]
        assert np.all(np.diff(values[~np.isnan(values)]) <= 0)


def test_a_stats_result_gives_the_peak_and_mean_over_every_position(result, ds, demo_engine):
    stats = jobs.channel_stats(demo_engine, ds, ["features.relu7"], batch_size=8)
    table = atlas.unit_table(result, "features.relu7", stats)
    assert table.source == "stats"
    np.testing.assert_array_equal(table.peak, stats.peak["features.relu7"])
    np.testing.assert_allclose(table.selectivity, stats.peak["features.relu7"] / stats.mean["features.relu7"])


# ---------------------------------------------------------------------------- the histogram of peaks
def test_the_histogram_counts_every_image_in_the_bin_of_its_peak(result, peaks):
    for layer in LAYERS + ["features.conv3"]:
        for channel in (0, 3, 17):
            hist = result.histogram(layer, channel)
            assert hist.counts.sum() == N
            values = peaks[layer][:, channel]
            expected = {}
            for v in values:
                inside = np.flatnonzero((hist.low <= v) & (v < hist.high))
                assert inside.size == 1, (layer, channel, v)
                expected[int(inside[0])] = expected.get(int(inside[0]), 0) + 1
            assert [expected.get(i, 0) for i in range(len(hist.counts))] == hist.counts.tolist()


def test_bins_are_fixed_and_cover_every_value():
    values = np.array([0.0, 1e-9, -1e-9, 1.0, 1.0001, -3.5, 1e9, -np.inf, np.inf, np.nan, 2.0 ** 19.99])
    bins = histogram.bin_index(values)
    low, high = histogram.edges(bins)
    finite = np.isfinite(values) & (np.abs(values) < 2.0 ** histogram.HIGH)
    assert np.all((low <= values)[finite]) and np.all((values < high)[finite])
    assert bins[0] == bins[1] == bins[2] == bins[9] == histogram.SIDE  # zero, tiny and NaN
    assert bins[6] == bins[8] == histogram.WIDTH - 1 and bins[7] == 0
    a = histogram.of_peaks(np.array([[1.0, 2.0], [1.05, -2.0]]))
    b = histogram.of_peaks(np.array([[3.0, 2.0]]))
    c = histogram.of_peaks(np.array([[1.0, 2.0], [1.05, -2.0], [3.0, 2.0]]))
    for x, y in ((histogram.merged(a, b), c), (histogram.merged(b, a), c)):
        assert np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1])


def test_the_histograms_merge_law_and_save_load(result, ds, demo_engine, tmp_path):
    parts = [jobs.dataset_examples(demo_engine, ds.subset(range(a, b)), LAYERS, k=K, batch_size=8)
             for a, b in ((0, 8), (8, 16), (16, 24))]
    for merged in (jobs.merge(*parts), jobs.merge(parts[2], jobs.merge(parts[1], parts[0]))):
        for layer in LAYERS:
            for channel in range(0, 32, 5):
                x, y = merged.histogram(layer, channel), result.histogram(layer, channel)
                assert np.array_equal(x.counts, y.counts) and np.array_equal(x.low, y.low)
            np.testing.assert_allclose(merged.mean_peak(layer), result.mean_peak(layer), rtol=1e-12)
    result.save(tmp_path / "ex")
    back = jobs.load(tmp_path / "ex")
    assert back.has_histograms
    assert np.array_equal(back.histogram("features.relu7", 9).counts, result.histogram("features.relu7", 9).counts)
    np.testing.assert_array_equal(back.mean_peak("features.relu7"), result.mean_peak("features.relu7"))
    # a result saved before the histograms existed still loads; it says it has none
    path = tmp_path / "ex" / json.loads((tmp_path / "ex" / "manifest.json").read_text())["files"]["table"]
    table = pq.read_table(path)
    meta = dict(table.schema.metadata)
    state_meta = json.loads(meta[b"cnnvis.meta"])
    state_meta.pop("peaks")
    meta[b"cnnvis.meta"] = json.dumps(state_meta).encode()
    old = table.drop_columns(["peak_sum", "peak_bins", "peak_counts"]).replace_schema_metadata(meta)
    pq.write_table(old, path)
    old_result = jobs.load(tmp_path / "ex")
    assert not old_result.has_histograms and old_result.top("features.relu7", 9) == result.top("features.relu7", 9)
    with pytest.raises(jobs.JobError, match="run the job again"):
        old_result.histogram("features.relu7", 9)


# ---------------------------------------------------------------------------- maps, kernels, logits
def test_the_maps_over_the_crops_are_the_channels_own(result, ds, demo_engine):
    layer, channel = "features.relu7", 11
    before = demo_engine.counters.snapshot()[0]
    maps = atlas.unit_maps(demo_engine, result, layer, [channel])
    assert demo_engine.counters.snapshot()[0] - before == 1, "K images: one forward pass"
    examples = atlas.unit_examples(result, layer, channel, maps)
    peak = result.peak(layer)[channel]
    for item in examples:
        e = item.example
        plane = demo_engine.feature_maps(ds.open(e.path), [layer])[layer][channel]
        np.testing.assert_allclose(maps[(channel, e.id)], plane.numpy(), rtol=1e-4, atol=1e-5)
        full = F.interpolate(plane[None, None], size=(128, 128), mode="bilinear", align_corners=False)[0, 0]
        left, top, right, bottom = e.box
        np.testing.assert_allclose(item.heat, np.clip(full[top:bottom, left:right].numpy() / peak, 0, 1), atol=1e-5)
        assert item.crop.size == (right - left, bottom - top)  # the demo images are the model's input size
        assert item.heat.max() <= 1.0 and (e.activation < peak or item.heat.max() > 0.5)
    assert atlas.unit_examples(result, layer, channel)[0].heat is None  # without maps: crops only


def test_the_deconvnet_projections_are_the_reconstructions_cut_to_the_boxes(result, ds, demo_engine):
    layer, channel = "features.relu7", 6
    pictures = atlas.projections(demo_engine, result, layer, channel)
    assert len(pictures) == K
    for picture, example in zip(pictures, result.top(layer, channel)):
        whole = deconv.reconstruct(demo_engine, ds.open(example.path), layer, channel, top_only=True)
        left, top, right, bottom = example.box
        assert whole.position == example.position
        assert np.array_equal(picture, whole.rgb()[top:bottom, left:right])
        outside = whole.image.copy()
        outside[..., top:bottom, left:right] = 0
        assert np.abs(outside).max() == 0, "the projection of one unit lies inside its receptive field"


def test_kernel_slices_are_those_of_the_conv_behind_the_channel(demo_engine):
    assert atlas.source_conv(demo_engine, "features.relu7") == "features.conv7"
    assert atlas.source_conv(demo_engine, "features.bn3") == "features.conv3"
    assert atlas.source_conv(demo_engine, "features.pool2") is None
    conv, picture = atlas.kernel_slices(demo_engine, "features.relu7", 5)
    expected = filter_slices(demo_engine.model.features.conv7.weight.detach(), 5, "each", "gray", min_tile=40,
                             labels=True)
    assert conv == "features.conv7" and np.array_equal(picture, expected)
    assert atlas.kernel_slices(demo_engine, "features.pool2", 5) is None


def test_the_logit_view_is_the_classifiers_column_for_the_channel(demo_engine):
    before = demo_engine.counters.snapshot()
    weight = demo_engine.model.fc.weight.detach()
    for layer in ("features.relu7", "features"):
        for channel in (0, 42, 127):
            view = atlas.logit_view(demo_engine, layer, channel, n=3)
            column = weight[:, channel]
            top = torch.argsort(column, descending=True, stable=True)[:3].tolist()
            low = torch.argsort(column, stable=True)[:3].tolist()
            assert view.linear == "fc" and [c.index for c in view.raises] == top
            assert [c.index for c in view.lowers] == low
            assert [c.weight for c in view.raises] == pytest.approx(column[top].tolist())
            assert view.raises[0].label == demo_engine.categories[top[0]]
    whole = atlas.logit_view(demo_engine, "features.relu7", 7)  # n=5 of 8 classes: 4 each way, none twice
    assert len(whole.raises) == len(whole.lowers) == 4
    assert {c.index for c in whole.raises} | {c.index for c in whole.lowers} == set(range(8))
    for layer in ("features.conv7", "features.relu6", "gap", "fc"):
        assert atlas.logit_view(demo_engine, layer, 0) is None, layer
    assert demo_engine.counters.snapshot() == before, "the logit view reads weights only"


# ---------------------------------------------------------------------------- the static export
class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.images: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attrs = dict(attrs)
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])
        if tag in ("img", "link") and (attrs.get("src") or attrs.get("href")):
            (self.images if tag == "img" else self.links).append(attrs.get("src") or attrs["href"])


def _check_site(site: Path) -> tuple[int, int]:
    """Every relative link and picture of every page resolves, and every PNG is shown or linked;
    returns (pages, pictures)."""
    pages, pictures = 0, set()
    for page in site.rglob("*.html"):
        parser = _Links()
        parser.feed(page.read_text(encoding="utf-8"))
        pages += 1
        for ref in parser.links + parser.images:
            parts = urlsplit(ref)
            assert not parts.scheme and not parts.netloc and not ref.startswith("/"), (page, ref)
            target = (page.parent / parts.path).resolve()
            assert target.is_file() and site.resolve() in target.parents, (page, ref)
            if target.suffix == ".png":
                pictures.add(target)
    assert pictures == {p.resolve() for p in site.rglob("*.png")}, "a picture no page shows or links"
    return pages, len(pictures)


def test_a_two_layer_export_has_every_page_and_every_link_resolves(result, demo_engine, tmp_path):
    result.manifest["data"]["description"] = "<b>demo</b> & co"  # text from a result is escaped
    site = tmp_path / "site"
    before = demo_engine.counters.snapshot()[0]
    report = atlas.export(result, site, LAYERS, core=demo_engine)
    passes = demo_engine.counters.snapshot()[0] - before
    assert report.layers == tuple(LAYERS) and report.with_model
    channels = {"features.relu2": 32, "features.relu7": 128}
    for layer, count in channels.items():
        folder = site / atlas.slug(layer)
        for name in ("index.html", "by-peak.html", "by-selectivity.html"):
            assert (folder / name).is_file()
        assert sorted(p.name for p in folder.glob("unit-*.html")) == sorted(f"unit-{c}.html" for c in range(count))
        assert len(list((folder / "img").glob("c*_map.png"))) == count * K
    assert report.pages == 1 + sum(3 + c for c in channels.values())
    pages, pictures = _check_site(site)
    assert pages == report.pages and pictures == report.images
    index = (site / "index.html").read_text()
    assert "&lt;b&gt;demo&lt;/b&gt; &amp; co" in index and "<b>demo" not in index
    unit = (site / "features.relu7" / "unit-3.html").read_text()
    assert "Kernel slices of features.conv7" in unit and "Logit view" in unit and "<svg" in unit
    assert "Logit view" not in (site / "features.relu2" / "unit-3.html").read_text()
    assert passes <= 2 * -(-N // 16), "the maps: one pass per 16 distinct images per layer"
    REPORT["atlas export (2 demo layers, 160 units)"] = (f"{report.pages} pages, {report.images} pictures, "
                                                         f"{passes} passes")


def test_an_export_replaces_a_site_whole_and_a_failed_one_leaves_the_old(result, tmp_path, monkeypatch):
    site = tmp_path / "site"
    atlas.export(result, site, ["features.relu2"])
    first = sorted(p.relative_to(site) for p in site.rglob("*"))
    assert (site / "features.relu2" / "index.html").is_file() and oct(site.stat().st_mode)[-3:] == "755"

    module = importlib.import_module("cnnvis_core.atlas.export")  # the package's `export` is the function

    def fail(*_args, **_kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(module, "_write_layer_indexes", fail)
    with pytest.raises(OSError, match="disk full"):
        atlas.export(result, site, ["features.relu7"])
    assert sorted(p.relative_to(site) for p in site.rglob("*")) == first, "a failed export changed the old site"
    assert [p.name for p in tmp_path.iterdir()] == ["site"], "a temporary folder was left behind"
    monkeypatch.undo()
    atlas.export(result, site, ["features.relu7"])
    assert (site / "features.relu7" / "index.html").is_file() and not (site / "features.relu2").exists()


def test_the_command_line_exports_with_the_model_built_from_the_manifest(result, tmp_path):
    result.save(tmp_path / "ex")
    run = subprocess.run([sys.executable, "-m", "cnnvis_core.jobs", "atlas", "--result", str(tmp_path / "ex"),
                          "--out", str(tmp_path / "site"), "--layers", "features.relu2", "--device", "cpu"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "wrote 36 pages" in run.stdout
    assert "Kernel slices of features.conv2" in (tmp_path / "site" / "features.relu2" / "unit-0.html").read_text()
    _check_site(tmp_path / "site")
    bad = subprocess.run([sys.executable, "-m", "cnnvis_core.jobs", "atlas", "--result", str(tmp_path / "ex"),
                          "--out", str(tmp_path / "x"), "--layers", "nope", "--no-model"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "No layer 'nope'" in bad.stderr
