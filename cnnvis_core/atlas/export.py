"""The static export of the atlas: a folder of HTML pages and PNG pictures that opens in any
browser without Python or a network (``index.html`` → one index per layer → one page per unit).

::

    SITE/index.html                 the layers, linked
    SITE/style.css
    SITE/images/<id>.png            each example's whole image (at most 512 px), linked from its crop
    SITE/<layer>/index.html         the layer's channels by index (also by-peak.html, by-selectivity.html)
    SITE/<layer>/unit-<c>.html      one channel: figures, top examples, histogram, kernels, logit view
    SITE/<layer>/img/…              crops, crops with the map, mosaics, kernel slices

Without a model (``core=None``) the pages hold what the stored result gives (crops, figures,
histogram); with one they add the channel's map over each crop, the kernel slices of a conv
and the logit view (weights only; the maps cost one forward pass per 16 distinct images).
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ..core import ModelCore
from ..data import Dataset
from ..jobs import ChannelStats, DatasetExamples, JobError
from ..render import to_png_bytes
from . import pages
from .crops import Images, UnitExample, mosaic, unit_examples, unit_maps
from .kernels import kernel_slices
from .logits import logit_view
from .svg import histogram_svg, logit_svg
from .units import ORDERS, UnitTable, unit_table

#: the largest side of a whole image in the export
FULL_SIDE = 512
#: ``progress(done, total)`` over the units of every layer
OnUnit = Callable[[int, int], object]


@dataclass(frozen=True)
class ExportReport:
    """What an export wrote: its folder, the layers, and the count of pages and pictures."""

    folder: Path
    layers: tuple[str, ...]
    pages: int
    images: int
    with_model: bool


def slug(name: str) -> str:
    """A folder name for a layer: letters, digits, ``.``, ``-``, ``_`` kept, the rest ``_``."""
    return "".join(ch if ch.isalnum() or ch in ".-_" else "_" for ch in name).strip(".") or "layer"


class _Writer:
    """Writes files under the export's folder and counts them."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.pages, self.images = folder, 0, 0

    def png(self, relative: str, picture: Image.Image) -> str:
        path = self.folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(to_png_bytes(picture.convert("RGB"), compress_level=1))
        self.images += 1
        return relative

    def html(self, relative: str, text: str) -> None:
        path = self.folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        self.pages += 1


def export(result: DatasetExamples, out: str | Path, layers: Sequence[str] | None = None,
           core: ModelCore | None = None, stats: ChannelStats | None = None, eps: float = 0.0,
           dataset: Dataset | None = None, progress: OnUnit | None = None) -> ExportReport:
    """Write the atlas of ``layers`` (default: every layer of the result) into ``out`` (built in a
    hidden folder beside it, then renamed into place: an existing site is replaced whole)."""
    chosen = list(layers or result.layers)
    unknown = [name for name in chosen if name not in result.layers]
    if unknown:
        raise JobError(f"No layer {', '.join(map(repr, unknown))} in this result; it has {', '.join(result.layers)}.")
    final = Path(out)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    staging.chmod(0o755)  # a site to publish: readable by the web server (mkdtemp makes it 0700)
    try:
        report = _write_site(result, chosen, _Writer(staging), core, stats, eps, dataset, progress)
        _swap_in(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dataclasses.replace(report, folder=final)


def _swap_in(staging: Path, final: Path) -> None:
    """Put the finished site at ``final`` by renames: a reader (or a crash) meets the old site or
    the new one whole, never a half-written one."""
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    staging.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def _write_site(result: DatasetExamples, chosen: list[str], writer: _Writer, core: ModelCore | None,
                stats: ChannelStats | None, eps: float, dataset: Dataset | None,
                progress: OnUnit | None) -> ExportReport:
    (writer.folder / "style.css").write_text(pages.CSS, encoding="utf-8")
    folders = _folders(chosen)
    total = sum(result.job.shapes[result.layers.index(n)][0] for n in chosen)
    done, full, images = 0, set(), Images(result, dataset)
    for name in chosen:
        table = unit_table(result, name, stats, eps)
        maps = unit_maps(core, result, name, range(table.channels), images=images) if core is not None else None
        for channel in range(table.channels):
            examples = unit_examples(result, name, channel, maps, images=images)
            _write_unit(writer, images, core, table, channel, examples, folders[name], full)
            done += 1
            if progress is not None:
                progress(done, total)
        _write_layer_indexes(writer, result, table, folders[name])
    _write_root(writer, result, chosen, folders, stats, eps, core is not None)
    return ExportReport(writer.folder, tuple(chosen), writer.pages, writer.images, core is not None)


def _folders(names: list[str]) -> dict[str, str]:
    folders: dict[str, str] = {}
    for name in names:
        base = folder = slug(name)
        n = 2
        while folder in folders.values() or folder in ("images", "style.css", "index.html"):
            folder, n = f"{base}-{n}", n + 1
        folders[name] = folder
    return folders


def _write_full(writer: _Writer, images: Images, example_id: int, path: str, full: set[int]) -> str:
    relative = f"images/{example_id}.png"
    if example_id not in full:
        image = images(path).convert("RGB")
        image.thumbnail((FULL_SIDE, FULL_SIDE))
        writer.png(relative, image)
        full.add(example_id)
    return relative


def _write_unit(writer: _Writer, images: Images, core: ModelCore | None, table: UnitTable, channel: int,
                examples: list[UnitExample], folder: str, full: set[int]) -> None:
    result = images.result
    layer = table.layer
    figures = []
    for rank, item in enumerate(examples):
        crop = writer.png(f"{folder}/img/c{channel}_{rank}.png", item.crop)
        heat = (writer.png(f"{folder}/img/c{channel}_{rank}_map.png", item.overlay(0.5))
                if item.heat is not None else None)
        whole = _write_full(writer, images, item.example.id, item.example.path, full)
        figures.append(pages.example_figure(rank, crop.removeprefix(f"{folder}/"),
                                            heat.removeprefix(f"{folder}/") if heat else None, f"../{whole}",
                                            item.example.activation, item.example.path, item.example.position))
    writer.png(f"{folder}/img/c{channel}_mosaic.png", mosaic([e.crop for e in examples]))
    sections = [_unit_header(table, channel, result), "<h2>Top dataset examples</h2>",
                '<div class="examples">' + "".join(figures) + "</div>", _histogram_section(result, table, channel)]
    if core is not None:
        sections += _model_sections(writer, core, layer, channel, folder)
    else:
        sections.append("<p><em>Exported without the model: no maps over the crops, kernels or logit view.</em></p>")
    writer.html(f"{folder}/unit-{channel}.html",
                pages.page(f"{layer} · channel {channel}", "\n".join(sections), "../"))


def _unit_header(table: UnitTable, channel: int, result: DatasetExamples) -> str:
    links = [("Atlas", "../index.html"), (f"{table.layer}", f"index.html#c{channel}")]
    if channel > 0:
        links.append((f"← channel {channel - 1}", f"unit-{channel - 1}.html"))
    if channel + 1 < table.channels:
        links.append((f"channel {channel + 1} →", f"unit-{channel + 1}.html"))
    rows = [("peak", pages.number(table.peak[channel])), ("mean", pages.number(table.mean[channel])),
            ("selectivity (peak ÷ mean)", pages.number(table.selectivity[channel])),
            ("dead", f"yes (peak ≤ {table.eps:g})" if table.dead[channel] else "no"),
            ("figures from", "channel statistics" if table.source == "stats" else "dataset examples"),
            ("data set", f"{result.manifest['data']['description']} ({result.images} images)")]
    return (pages.nav(links) + f"<h1>{pages.escape(table.layer)} · channel {channel}</h1>"
            + pages.figures_table(rows))


def _histogram_section(result: DatasetExamples, table: UnitTable, channel: int) -> str:
    if not result.has_histograms:
        return "<p>This result holds no distribution of peaks (made before it was recorded).</p>"
    svg = histogram_svg(result.histogram(table.layer, channel), table.eps, "the channel's maximum on each image")
    return "<h2>Peak activation over the data set</h2>" + svg


def _model_sections(writer: _Writer, core: ModelCore, layer: str, channel: int, folder: str) -> list[str]:
    out = []
    slices = kernel_slices(core, layer, channel, tile=12)
    if slices is not None:
        conv, picture = slices
        path = writer.png(f"{folder}/img/c{channel}_kernels.png", Image.fromarray(picture))
        out.append(f"<h2>Kernel slices of {pages.escape(conv)}, filter {channel}</h2>"
                   f'<img src="{pages.escape(path.removeprefix(folder + "/"))}" alt="kernel slices">')
    view = logit_view(core, layer, channel)
    if view is not None:
        out.append(f"<h2>Logit view (weights of {pages.escape(view.linear)})</h2>" + logit_svg(view))
    return out


def _write_layer_indexes(writer: _Writer, result: DatasetExamples, table: UnitTable, folder: str) -> None:
    files = {"index": "index.html", "peak": "by-peak.html", "selectivity": "by-selectivity.html"}
    for order in ORDERS:
        links = [("Atlas", "../index.html")] + [(f"by {o}", files[o]) for o in ORDERS if o != order]
        cells = [pages.cell(c, f"unit-{c}.html", f"img/c{c}_mosaic.png", table.peak[c], table.selectivity[c],
                            bool(table.dead[c])) for c in table.order(order)]
        dead = int(table.dead.sum())
        body = (pages.nav(links) + f"<h1>{pages.escape(table.layer)}</h1><p>{table.channels} channels by {order}; "
                f"{dead} dead (peak ≤ {table.eps:g}); top {result.k} of {result.images} images each.</p>"
                f'<div class="grid">{"".join(cells)}</div>')
        writer.html(f"{folder}/{files[order]}", pages.page(f"{table.layer} · by {order}", body, "../"))


def _write_root(writer: _Writer, result: DatasetExamples, layers: list[str], folders: dict[str, str],
                stats: ChannelStats | None, eps: float, with_model: bool) -> None:
    model = result.manifest["model"]
    items = "".join(f'<li><a href="{pages.escape(folders[n])}/index.html">{pages.escape(n)}</a> · '
                    f"{result.job.shapes[result.layers.index(n)][0]} channels</li>" for n in layers)
    body = (f"<h1>Unit atlas of {pages.escape(str(model['name']))}</h1>"
            f"<p>Data set: {pages.escape(result.manifest['data']['description'])} ({result.images} images); "
            f"weights {pages.escape(model['weights_sha256'])}; top {result.k} examples per channel."
            f"{' Figures from channel statistics.' if stats is not None else ''}"
            f"{'' if with_model else ' Exported without the model.'}</p><ul>{items}</ul>")
    writer.html("index.html", pages.page("Unit atlas", body, ""))
