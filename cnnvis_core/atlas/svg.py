"""Charts of the static export as inline SVG (no script, no network): the distribution of a
channel's peaks and its logit view. Every text is escaped."""

from __future__ import annotations

from html import escape

import numpy as np

from ..jobs import PeakHistogram
from .logits import LogitView

WIDTH, HEIGHT, PAD = 520, 200, 36


def _x(value: float, low: float, high: float) -> float:
    return PAD + (value - low) / (high - low) * (WIDTH - 2 * PAD) if high > low else WIDTH / 2


def histogram_svg(hist: PeakHistogram, eps: float | None = None, title: str = "") -> str:
    """Bars of the non-empty bins on a linear axis (each bar as wide as its bin), the count axis
    from 0, and the dead-channel threshold ``eps`` as a dashed red line."""
    if not len(hist.counts):
        return "<p>No images.</p>"
    low, high = float(hist.low.min()), float(hist.high.max())
    if eps is not None:
        low, high = min(low, eps), max(high, eps)
    top = float(hist.counts.max())
    plot = HEIGHT - 2 * PAD
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" role="img" '
             f'aria-label="{escape(title or "histogram of peaks")}">']
    for a, b, n in zip(hist.low, hist.high, hist.counts):
        x0, x1 = _x(float(a), low, high), _x(float(b), low, high)
        h = plot * float(n) / top
        parts.append(f'<rect x="{x0:.1f}" y="{PAD + plot - h:.1f}" width="{max(x1 - x0, 1.5):.1f}" height="{h:.1f}" '
                     f'fill="#4c78a8"><title>{n} image(s): {a:.3g} to {b:.3g}</title></rect>')
    base = PAD + plot
    parts.append(f'<line x1="{PAD}" y1="{base}" x2="{WIDTH - PAD}" y2="{base}" stroke="#333"/>')
    for value in np.linspace(low, high, 5):
        x = _x(float(value), low, high)
        parts.append(f'<text x="{x:.1f}" y="{base + 14}" font-size="11" text-anchor="middle">{value:.3g}</text>')
    parts.append(f'<text x="{PAD}" y="{PAD - 8}" font-size="11">{int(top)} images (tallest bar)</text>')
    if eps is not None:
        x = _x(eps, low, high)
        parts.append(f'<line x1="{x:.1f}" y1="{PAD}" x2="{x:.1f}" y2="{base}" stroke="#d62728" '
                     f'stroke-dasharray="4 3"/><text x="{x + 3:.1f}" y="{PAD + 10}" font-size="11" '
                     f'fill="#d62728">dead ≤ {eps:.3g}</text>')
    parts.append(f'<text x="{WIDTH / 2}" y="{HEIGHT - 4}" font-size="11" text-anchor="middle">'
                 f'{escape(title or "peak activation per image")}</text></svg>')
    return "".join(parts)


def logit_svg(view: LogitView) -> str:
    """Horizontal bars of the classes raised (blue, right) and lowered (orange, left)."""
    rows = list(view.raises) + list(view.lowers)
    bound = max(abs(r.weight) for r in rows) or 1.0
    line, mid, half = 18, WIDTH / 2 + 60, WIDTH / 2 - 90
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH + 120}" height="{line * len(rows) + 10}" '
             f'role="img" aria-label="logit view">']
    for i, row in enumerate(rows):
        y = 5 + i * line
        length = half * abs(row.weight) / bound
        x = mid if row.weight >= 0 else mid - length
        colour = "#4c78a8" if row.weight >= 0 else "#f58518"
        parts.append(f'<text x="{mid - half - 6:.1f}" y="{y + 12}" font-size="12" text-anchor="end">'
                     f'{escape(row.label)}</text><rect x="{x:.1f}" y="{y + 2}" width="{max(length, 1):.1f}" '
                     f'height="{line - 5}" fill="{colour}"/><text x="{mid + half + 6:.1f}" y="{y + 12}" '
                     f'font-size="11">{row.weight:+.3g}</text>')
    parts.append(f'<line x1="{mid}" y1="0" x2="{mid}" y2="{line * len(rows) + 10}" stroke="#333"/></svg>')
    return "".join(parts)
