"""HTML of the static export: a page frame, the layer grid's cells and the unit page's sections.
Every text taken from the result, the model or the data set goes through :func:`html.escape`;
links are relative, so the folder works anywhere (a file:// URL, any web server)."""

from __future__ import annotations

import math
from html import escape

CSS = """body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222;max-width:1200px}
a{color:#1f5fa8}nav{margin-bottom:1rem}nav a{margin-right:1rem}
.grid{display:flex;flex-wrap:wrap;gap:10px}.cell{width:160px;font-size:12px;text-align:center}
.cell img{width:146px;height:auto;image-rendering:pixelated;border:1px solid #ccc}
.dead{opacity:.45}.dead .mark{color:#d62728;font-weight:bold}
.examples{display:flex;flex-wrap:wrap;gap:12px}.examples figure{margin:0;width:200px;font-size:12px}
.examples img{width:96px;height:96px;image-rendering:pixelated;border:1px solid #ccc}
table{border-collapse:collapse}td,th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:left}
"""


def page(title: str, body: str, root: str) -> str:
    """A whole page: ``root`` is the relative path to the export's top folder (``""`` or ``"../"``)."""
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f'<link rel="stylesheet" href="{root}style.css"></head><body>\n{body}\n</body></html>\n')


def number(value: float) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3g}"


def cell(channel: int, href: str, img: str, peak: float, selectivity: float, dead: bool) -> str:
    """One channel in a layer's grid: its mosaic, linked to its page."""
    mark = ' <span class="mark">dead</span>' if dead else ""
    return (f'<div class="cell{" dead" if dead else ""}" id="c{channel}"><a href="{escape(href)}">'
            f'<img src="{escape(img)}" alt="channel {channel}"><br>channel {channel}</a>{mark}<br>'
            f'peak {number(peak)} · sel. {number(selectivity)}</div>')


def figures_table(rows: list[tuple[str, str]]) -> str:
    return "<table>" + "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows) + "</table>"


def example_figure(rank: int, crop: str, heat: str | None, full: str, activation: float, path: str,
                   position: tuple[int, int]) -> str:
    """A top example: the crop (and the map over it), linked to the whole image."""
    pictures = f'<a href="{escape(full)}"><img src="{escape(crop)}" alt="example {rank + 1}"></a>'
    if heat is not None:
        pictures += f' <img src="{escape(heat)}" alt="example {rank + 1} with the channel\'s map">'
    return (f'<figure>{pictures}<figcaption>#{rank + 1} · activation {activation:.3g} at {position}<br>'
            f'{escape(path)}</figcaption></figure>')


def nav(links: list[tuple[str, str]]) -> str:
    return "<nav>" + "".join(f'<a href="{escape(href)}">{escape(text)}</a>' for text, href in links) + "</nav>"
