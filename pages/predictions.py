"""Home page: the chosen image and the model's top-5 predictions."""

import streamlit as st

from cnnvis_core import CnnvisError
from dashboard import predictions as glue
from dashboard.state import model_caveat, plain, require_engine_and_image, require_frame, show_error

require_frame()  # a page URL opened first on a fresh server: run it in app.py's frame

st.header("Predictions")
engine, chosen = require_engine_and_image()

left, right = st.columns([1, 2])
with left:
    st.image(glue.shown_photo(chosen), width="stretch")
    st.caption(f"{plain(chosen.name)} · {chosen.image.width}×{chosen.image.height} px")
    for note in chosen.notes:
        st.info(note)
with right:
    try:
        top = glue.top_classes(engine, chosen, 5)
    except CnnvisError as error:
        show_error(error)
        st.stop()
    st.plotly_chart(glue.top_figure(top), width="stretch")
    best = top[0]
    st.markdown(f"**Top-1:** {best[1]} — {best[2]:.1%}")
    caveat = model_caveat(chosen)
    if caveat:
        st.info(caveat, icon="ℹ️")
