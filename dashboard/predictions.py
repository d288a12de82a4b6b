"""Cached calls and figures of the predictions page (``pages/predictions.py``).

:func:`top_classes` also gives the class-activation-map page its target classes: one cache, so
the same image's top classes cost one forward pass for both pages.
"""

from __future__ import annotations

import plotly.graph_objects as go

from cnnvis_core import Engine

from .memo import cached
from .state import ChosenImage


@cached()
def top_classes(engine: Engine, chosen: ChosenImage, k: int) -> list[tuple[int, str, float]]:
    """The top-``k`` ``(index, label, probability)`` of the chosen image (cached)."""
    return [tuple(p) for p in engine.predict(chosen.image, k=k)]


def top_figure(top: list[tuple[int, str, float]]) -> go.Figure:
    """The classes as horizontal bars of their softmax probability, the most probable on top; the
    axis runs to 100 %, the labels stay horizontal."""
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
