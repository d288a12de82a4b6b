"""cnnvis dashboard: ``streamlit run app.py``.

The navigation frame: the sidebar chooses the model and the image for every page.
"""

import streamlit as st

from cnnvis_core import CnnvisError, Engine, images
from dashboard.state import (
    SAMPLE_COUNT,
    ChosenImage,
    ModelChoice,
    architectures,
    choose,
    decode_upload,
    digest,
    engine_for,
    sample_image,
    sample_label,
)

SOURCES = {"Demo model (offline)": "demo", "torchvision architecture": "torchvision",
           "Weights file": "file"}


def model_choice() -> tuple[ModelChoice, bytes | None] | None:
    label = st.radio("Model", list(SOURCES), key="model_source")
    source = SOURCES[label]
    if source == "demo":
        return ModelChoice("demo"), None
    archs = architectures()
    arch = st.selectbox("Architecture", archs, index=archs.index("resnet18"), key="arch")
    if source == "torchvision":
        pretrained = st.toggle("Pretrained weights (download or cache)", value=True, key="pretrained",
                               help="Off: random weights, on purpose.")
        return ModelChoice("torchvision", arch, "DEFAULT" if pretrained else None), None
    upload = st.file_uploader("State dict (.pth, .pt, .safetensors)", type=["pth", "pt", "safetensors"],
                              key="weights_file")
    if upload is None:
        st.info("Upload a weights file for the chosen architecture.")
        return None
    data = upload.getvalue()
    return ModelChoice("file", arch, None, digest(data), upload.name), data


def model_section() -> Engine | None:
    """Choose the model; its engine, or None when there is none to use."""
    picked = model_choice()
    if picked is None:
        return None
    choice, data = picked
    try:
        engine = engine_for(choice, data)
    except CnnvisError as error:
        st.error(str(error), icon="⚠️")
        return None
    st.caption(f"**{choice.title}** · device: `{engine.device}` · input {engine.input_size[0]}×{engine.input_size[1]}")
    return engine


def image_section() -> ChosenImage:
    """Choose the image: an upload, else a sample of the demo generator."""
    upload = st.file_uploader("Image", type=images.UPLOAD_EXTENSIONS, key="image_upload",
                              help="JPEG, PNG, WebP, BMP, GIF (first frame) or TIFF.")
    if upload is not None:
        try:
            image, notes = decode_upload(upload.file_id, upload.getvalue())
        except CnnvisError as error:
            st.error(f"{upload.name}: {error}", icon="⚠️")
        else:
            return ChosenImage(image, f"upload:{upload.file_id}", upload.name, tuple(notes))
    index = st.selectbox("Sample image", range(SAMPLE_COUNT), format_func=sample_label, key="sample_index",
                         help="Shapes from the demo model's generator, never seen in training.")
    return ChosenImage(sample_image(index)[0], f"sample:{index}", sample_label(index))


def model_passes(slot, engine: Engine | None) -> None:
    """Write into ``slot`` how many forward and backward passes the chosen model has run.

    The engine is shared by every browser session, so the figures count everyone's work; the app
    fills the slot before and again after the page runs, so they include this page's passes (a
    fragment's own reruns show at the next full run). The browser tests read it to check that
    display-only changes (an opacity slider) do not run the model.
    """
    if engine is None:
        slot.empty()
        return
    forward, backward = engine.counters.snapshot()
    slot.caption(f"Model passes so far (all sessions): {forward} forward · {backward} backward",
                 help="Cached results cost no pass; every new computation on the model adds to these.")


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
    engine = model_section()
    passes = st.empty()
    st.divider()
    chosen = image_section()
choose(engine, chosen)

model_passes(passes, engine)
navigation.run()
model_passes(passes, engine)  # again, with this page's passes
