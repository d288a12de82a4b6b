"""Cached calls and figures of the predictions page (``pages/predictions.py``).

:func:`top_classes` also gives the class-activation-map page its target classes: one cache, so
the same image's top classes cost one forward pass for both pages. The page is every new
session's first page, so everything on it comes from a cache once any session has shown the same
image: the predictions, the bar chart (:func:`top_figure`) and the picture (:func:`shown_photo`).
"""

from __future__ import annotations

import functools
import io

import plotly.graph_objects as go
from PIL import Image

from cnnvis_core import Engine

from .memo import cached
from .state import ChosenImage


@cached()
def top_classes(engine: Engine, chosen: ChosenImage, k: int) -> list[tuple[int, str, float]]:
    """The top-``k`` ``(index, label, probability)`` of the chosen image (cached)."""
    return [tuple(p) for p in engine.predict(chosen.image, k=k)]


#: widest picture the page shows (Streamlit's own limit for a picture as wide as the page)
SHOWN_WIDTH = 1460


@cached()
def shown_photo(chosen: ChosenImage) -> bytes:
    """The chosen image as the page shows it: at most :data:`SHOWN_WIDTH` pixels wide, JPEG
    (quality 90), or PNG when it has transparency. Cached: given the image itself, Streamlit
    would resample and encode it again on every run of the page."""
    image = chosen.image
    if image.width > SHOWN_WIDTH:
        image = image.resize((SHOWN_WIDTH, max(1, round(image.height * SHOWN_WIDTH / image.width))),
                             Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        image.save(buffer, "PNG")
    else:
        image.convert("RGB").save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def top_figure(top: list[tuple[int, str, float]]) -> go.Figure:
    """The classes as horizontal bars of their softmax probability, the most probable on top; the
    axis runs to 100 %, the labels stay horizontal. Cached (plotly builds a figure slowly); the
    figure is shared, which is safe: ``st.plotly_chart`` copies it before it draws."""
    return _top_figure(tuple(tuple(row) for row in top))


@functools.lru_cache(maxsize=256)
def _top_figure(top: tuple[tuple[int, str, float], ...]) -> go.Figure:
    labels = [f"{label} ({index})" for index, label, _ in top][::-1]
    probs = [p for *_, p in top][::-1]
    figure = go.Figure(go.Bar(x=probs, y=labels, orientation="h", text=[f"{p:.1%}" for p in probs],
                              textposition="auto", textangle=0, insidetextanchor="end", marker_color="#4c78a8",
                              cliponaxis=False))
    ticks = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    figure.update_layout(title=f"Top-{len(top)} classes (softmax probability)",
                         xaxis=dict(range=[0, 1], tickvals=ticks, ticktext=[f"{t:.0%}" for t in ticks],
                                    showgrid=True),
                         yaxis=dict(tickangle=0, automargin=True),
                         height=320, margin=dict(l=10, r=30, t=40, b=10))
    return figure
