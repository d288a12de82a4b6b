"""Saliency panel: vanilla gradient, deconvnet, guided backprop and guided Grad-CAM side by side,
and the deconvnet reconstruction of one channel (Zeiler & Fergus).

Every model call is cached with ``st.cache_data`` under plain keys (model, image, method,
target; layer, channel, top-only), so switching the display or going back to a method already
seen never runs the model again.
"""

from __future__ import annotations

import streamlit as st

from cnnvis_core import CnnvisError, Engine
from cnnvis_core.backprop import METHODS, Saliency
from cnnvis_core.deconv import Reconstruction
from cnnvis_core.render import colorize, to_png_bytes

from .state import ChosenImage, model_key, show_error

LABELS = {"gradient": "Gradient (Simonyan et al.)", "deconvnet": "Deconvnet (Zeiler & Fergus)",
          "guided": "Guided backprop (Springenberg et al.)", "guided_gradcam": "Guided Grad-CAM (Selvaraju et al.)"}
DEFAULT_METHODS = ["gradient", "guided", "guided_gradcam"]
VIEWS = {"magnitude": "magnitude, max over colours", "signed": "signed gradient as RGB (0 = grey)"}
RECONSTRUCT_KINDS = ("Conv2d", "ReLU")


# ---------------------------------------------------------------------------- cached model calls
@st.cache_data(max_entries=128, show_spinner="Backpropagating…")
def _saliency(_engine: Engine, engine_key: str, _image, image_key: str, method: str,
              target: int | None) -> Saliency:
    return _engine.saliency(_image, method, target)


@st.cache_data(max_entries=128, show_spinner=False)
def _saliency_png(_engine: Engine, engine_key: str, _image, image_key: str, method: str, target: int | None,
                  view: str, cmap: str) -> bytes:
    result = _saliency(_engine, engine_key, _image, image_key, method, target)
    return to_png_bytes(result.rgb() if view == "signed" else colorize(result.map, cmap))


def saliency(engine: Engine, chosen: ChosenImage, method: str, target: int | None) -> Saliency:
    """The saliency result of ``method`` for the chosen image (cached)."""
    return _saliency(engine, model_key(), chosen.image, chosen.key, method, target)


def saliency_png(engine: Engine, chosen: ChosenImage, method: str, target: int | None, view: str,
                 cmap: str) -> bytes:
    """The saliency map as a PNG: magnitude through ``cmap``, or the signed gradient as RGB."""
    return _saliency_png(engine, model_key(), chosen.image, chosen.key, method, target, view, cmap)


@st.cache_data(max_entries=64, show_spinner="Projecting the channel to pixels…")
def _reconstruction(_engine: Engine, engine_key: str, _image, image_key: str, layer: str, channel: int,
                    top_only: bool) -> tuple[Reconstruction, bytes, bytes]:
    result = _engine.reconstruct(_image, layer, channel, top_only)
    return result, to_png_bytes(result.rgb()), to_png_bytes(colorize(result.map, "inferno"))


def reconstruction(engine: Engine, chosen: ChosenImage, layer: str, channel: int, top_only: bool
                   ) -> tuple[Reconstruction, bytes, bytes]:
    """``(result, RGB PNG, magnitude PNG)`` of the deconvnet projection (cached)."""
    return _reconstruction(engine, model_key(), chosen.image, chosen.key, layer, channel, top_only)


@st.cache_data(max_entries=64, show_spinner=False)
def _strongest(_engine: Engine, engine_key: str, _image, image_key: str, layer: str) -> tuple[int, ...]:
    maps = _engine.feature_maps(_image, [layer])[layer]
    return tuple(int(c) for c in maps.flatten(1).amax(1).argsort(descending=True)[:5])


def strongest_channels(engine: Engine, chosen: ChosenImage, layer: str) -> tuple[int, ...]:
    """The five channels of ``layer`` with the highest maximum activation on the image (cached)."""
    return _strongest(engine, model_key(), chosen.image, chosen.key, layer)


# ---------------------------------------------------------------------------- the panel
def saliency_panel(engine: Engine, chosen: ChosenImage, target: int | None) -> None:
    """Saliency maps for class ``target`` (top-1 when None), then the deconvnet reconstruction.

    On a large model on the CPU nothing runs until the user asks (a page's tabs all execute)."""
    st.subheader("Gradients: saliency, deconvnet, guided backpropagation")
    if not st.toggle("Compute the gradient maps (one forward and one backward pass each)", value=engine.quick_passes,
                     key="saliency_on"):
        return
    pick, view_col, cmap_col = st.columns([3, 2, 1])
    methods = pick.multiselect("Methods", list(METHODS), default=DEFAULT_METHODS, format_func=LABELS.get,
                               key="saliency_methods")
    view = view_col.radio("Show", list(VIEWS), format_func=VIEWS.get, key="saliency_view", horizontal=True)
    cmap = cmap_col.selectbox("Colormap", ("gray", "inferno", "viridis", "jet"), key="saliency_cmap",
                              disabled=view == "signed")
    if methods:
        _saliency_row(engine, chosen, methods, target, view, cmap)
    st.caption("∂(class logit)/∂(input pixels) at the model's input resolution; the methods differ only in "
               "how the gradient passes each ReLU backwards (vanilla: where the input was > 0; deconvnet: where "
               "the gradient is > 0; guided: both). Guided Grad-CAM multiplies guided backprop by Grad-CAM.")
    st.divider()
    reconstruction_section(engine, chosen)


def _saliency_row(engine: Engine, chosen: ChosenImage, methods: list[str], target: int | None, view: str,
                  cmap: str) -> None:
    for column, method in zip(st.columns(len(methods)), methods):
        with column:
            try:
                result = saliency(engine, chosen, method, target)
                png = saliency_png(engine, chosen, method, target, view, cmap)
            except CnnvisError as error:
                show_error(error)
                continue
            label = engine.categories[result.target] if result.target < len(engine.categories) else result.target
            st.image(png, width="stretch", caption=f"{LABELS[method]} · class {label} (logit {result.score:.3g})")
            for note in result.notes:
                st.caption(note)


def _set_channel(channel: int) -> None:
    st.session_state["deconv_channel"] = channel


def reconstruction_section(engine: Engine, chosen: ChosenImage) -> None:
    """Layer, channel and top-only choice; the projection as RGB and as magnitude."""
    st.subheader("Deconvnet: one channel projected back to pixels")
    layers = [info for info in engine.layers() if info.is_spatial]
    choices = [info for info in layers if info.kind in RECONSTRUCT_KINDS] or layers
    if not choices:
        st.info("This model has no layer with feature maps to project.")
        return
    names = [info.name for info in choices]
    relus = [i for i, info in enumerate(choices) if info.kind == "ReLU"]
    left, mid, right = st.columns([3, 1, 2])
    name = left.selectbox("Layer", names, index=relus[-1] if relus else len(names) - 1,
                          format_func=lambda n: choices[names.index(n)].label, key="deconv_layer")
    info = choices[names.index(name)]
    if not 0 <= st.session_state.get("deconv_channel", 0) < info.channels:
        st.session_state["deconv_channel"] = 0
    try:
        best = strongest_channels(engine, chosen, name)
    except CnnvisError as error:
        show_error(error)
        return
    channel = int(mid.number_input("Channel", 0, info.channels - 1, key="deconv_channel"))
    mid.button("Strongest", on_click=_set_channel, args=(best[0],), key="deconv_strongest",
               help=f"Channels with the highest activation here: {', '.join(map(str, best))}")
    top_only = right.toggle("Only the strongest position", key="deconv_top_only",
                            help="Zeiler & Fergus's figures: keep the channel's single largest activation.")
    try:
        result, rgb_png, map_png = reconstruction(engine, chosen, name, channel, bool(top_only))
    except CnnvisError as error:
        show_error(error)
        return
    a, b = st.columns(2)
    a.image(rgb_png, width="stretch", caption=f"{name} · channel {channel} · projection (0 = grey)")
    b.image(map_png, width="stretch", caption=f"magnitude · strongest activation {result.activation:.3g} "
                                              f"at row {result.position[0]}, column {result.position[1]}")
    how = "max-pool switches" if result.mechanism == "switches" else "the deconvnet ReLU rule"
    st.caption(f"Projected with {how}: unpool, rectify, transposed convolution, down to the input. "
               f"Strongest channels on this image: {', '.join(map(str, best))}.")
    for note in result.notes:
        st.info(note)
