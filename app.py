"""cnnvis dashboard: ``streamlit run app.py``.

The navigation frame: the sidebar chooses the model and the image for every page.
"""

import streamlit as st

from dashboard.sidebar import image_section, model_passes, model_section

st.set_page_config(page_title="cnnvis", page_icon="🔬", layout="wide")

pages = [
    st.Page("pages/predictions.py", title="Predictions", icon="🏷️", default=True),
    st.Page("pages/layers.py", title="Layer browser", icon="🧅"),
    st.Page("pages/kernels.py", title="Kernels", icon="🔲"),
    st.Page("pages/dead.py", title="Dead channels", icon="💤"),
    st.Page("pages/cam.py", title="Class activation maps", icon="🔥"),
    st.Page("pages/optimize.py", title="Filter optimisation", icon="✨"),
]
navigation = st.navigation(pages)

with st.sidebar:
    st.title("cnnvis")
    model_section()
    passes = st.empty()
    st.divider()
    image_section()

model_passes(passes)
navigation.run()
model_passes(passes)  # again, with this page's passes
