"""Sidebar of the navigation frame: model choice, device, image choice."""

from __future__ import annotations

import streamlit as st

from cnnvis_core import CnnvisError, images
from cnnvis_core.zoo import list_architectures

from .state import (
    SAMPLE_COUNT, ChosenImage, ModelChoice, decode_upload, digest, engine_for, sample_image,
    sample_label,
)

SOURCES = {"Demo model (offline)": "demo", "torchvision architecture": "torchvision",
           "Weights file": "file"}


@st.cache_data(show_spinner=False)
def _architectures() -> list[str]:
    return list_architectures()


def _model_choice() -> tuple[ModelChoice, bytes | None] | None:
    label = st.radio("Model", list(SOURCES), key="model_source")
    source = SOURCES[label]
    if source == "demo":
        return ModelChoice("demo"), None
    archs = _architectures()
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


def model_section() -> None:
    """Choose the model; stores the engine (or None) in the session."""
    st.session_state["_engine"] = None
    picked = _model_choice()
    if picked is None:
        return
    choice, data = picked
    st.session_state["_model_choice"] = choice
    try:
        engine = engine_for(choice, data)
    except CnnvisError as error:
        st.error(str(error), icon="⚠️")
        return
    st.session_state["_engine"] = engine
    st.caption(f"**{choice.title}** · device: `{engine.device}` · input {engine.input_size[0]}×{engine.input_size[1]}")


def image_section() -> None:
    """Choose the image: an upload, else a sample of the demo generator."""
    st.session_state["_image"] = None
    upload = st.file_uploader("Image", type=images.UPLOAD_EXTENSIONS, key="image_upload",
                              help="JPEG, PNG, WebP, BMP, GIF (first frame) or TIFF.")
    if upload is not None:
        try:
            image, notes = decode_upload(upload.file_id, upload.getvalue())
        except CnnvisError as error:
            st.error(f"{upload.name}: {error}", icon="⚠️")
        else:
            st.session_state["_image"] = ChosenImage(image, f"upload:{upload.file_id}", upload.name, tuple(notes))
            return
    index = st.selectbox("Sample image", range(SAMPLE_COUNT), format_func=sample_label, key="sample_index",
                         help="Shapes from the demo model's generator, never seen in training.")
    image = sample_image(index)[0]
    st.session_state["_image"] = ChosenImage(image, f"sample:{index}", sample_label(index))


def model_passes(slot) -> None:
    """Write into ``slot`` how many forward and backward passes the chosen model has run.

    The engine is shared by every browser session, so the figures count everyone's work; the app
    fills the slot before and again after the page runs, so they include this page's passes (a
    fragment's own reruns show at the next full run). The browser tests read it to check that
    display-only changes (an opacity slider) do not run the model.
    """
    engine = st.session_state.get("_engine")
    if engine is None:
        slot.empty()
        return
    forward, backward = engine.counters.snapshot()
    slot.caption(f"Model passes so far (all sessions): {forward} forward · {backward} backward",
                 help="Cached results cost no pass; every new computation on the model adds to these.")
