"""Home page: the chosen image and the model's top-5 predictions."""

import plotly.graph_objects as go
import streamlit as st

from cnnvis_core import CnnvisError
from dashboard.state import model_key, require_engine_and_image, require_frame, show_error

require_frame()  # a page URL opened first on a fresh server: run it in app.py's frame


@st.cache_data(max_entries=256, show_spinner=False)
def _top5(_engine, engine_key: str, _image, image_key: str) -> list[tuple[int, str, float]]:
    return [tuple(p) for p in _engine.predict(_image, k=5)]


st.header("Predictions")
engine, chosen = require_engine_and_image()

left, right = st.columns([1, 2])
with left:
    st.image(chosen.image, width="stretch")
    st.caption(f"{chosen.name} · {chosen.image.width}×{chosen.image.height} px")
    for note in chosen.notes:
        st.info(note)
with right:
    try:
        top = _top5(engine, model_key(), chosen.image, chosen.key)
    except CnnvisError as error:
        show_error(error)
        st.stop()
    labels = [f"{label} ({index})" for index, label, _ in top][::-1]
    probs = [p for *_, p in top][::-1]
    figure = go.Figure(go.Bar(x=probs, y=labels, orientation="h", text=[f"{p:.1%}" for p in probs],
                              textposition="auto", marker_color="#4c78a8"))
    figure.update_layout(title="Top-5 classes (softmax probability)", xaxis=dict(range=[0, 1], tickformat=".0%"),
                         height=320, margin=dict(l=10, r=10, t=40, b=10))
    st.plotly_chart(figure, width="stretch")
    best = top[0]
    st.markdown(f"**Top-1:** {best[1]} — {best[2]:.1%}")
