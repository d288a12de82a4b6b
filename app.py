"""cnnvis dashboard: ``streamlit run app.py``.

The navigation frame: the sidebar chooses the model and the image for every page.
"""

import streamlit as st

from dashboard.sidebar import image_section, model_section

st.set_page_config(page_title="cnnvis", page_icon="🔬", layout="wide")

pages = [
    st.Page("pages/predictions.py", title="Predictions", icon="🏷️", default=True),
]
navigation = st.navigation(pages)

with st.sidebar:
    st.title("cnnvis")
    model_section()
    st.divider()
    image_section()

navigation.run()
