"""Class activation maps: where in the image does the network look when it decides?"""

import streamlit as st

from cnnvis_core import CnnvisError
from cnnvis_core.backprop import METHODS as SALIENCY_METHODS
from cnnvis_core.render import COLORMAPS
from dashboard import cam as glue
from dashboard.predictions import top_classes
from dashboard.state import require_engine_and_image, require_frame, show_error

require_frame()  # a page URL opened first on a fresh server: run it in app.py's frame

ANOTHER = -1
COMPARE_DEFAULT = ["cam", "gradcam", "gradcam++", "layercam"]
LABELS = {"gradient": "Gradient (Simonyan et al.)", "deconvnet": "Deconvnet (Zeiler & Fergus)",
          "guided": "Guided backprop (Springenberg et al.)", "guided_gradcam": "Guided Grad-CAM (Selvaraju et al.)"}
DEFAULT_METHODS = ["gradient", "guided", "guided_gradcam"]
VIEWS = {"magnitude": "magnitude, max over colours", "signed": "signed gradient as RGB (0 = grey)"}
RECONSTRUCT_KINDS = ("Conv2d", "ReLU")
#: every setting of this page is kept for the session, also while another page is shown
KEEP = {"persist_state": "session"}
TABS = ["Class activation map", "Deletion & insertion", "Gradients & deconvnet"]


def _keep_valid(key: str, options: list, fallback) -> None:
    """Reset a keyed widget whose stored value is not among its (model-dependent) options."""
    if st.session_state.get(key, fallback) not in options:
        st.session_state[key] = fallback


def choose_target(engine, chosen) -> int:
    """Top-5 classes to click, or any class found by name."""
    top = top_classes(engine, chosen, 5)
    options = list(range(len(top))) + [ANOTHER]
    _keep_valid("cam_target", options, 0)
    labels = {i: f"{label} · {p:.0%}" for i, (_, label, p) in enumerate(top)} | {ANOTHER: "another class…"}
    pick = st.radio("Target class (top-5 predictions)", options, format_func=labels.get, key="cam_target",
                    horizontal=True, **KEEP)
    if pick != ANOTHER:
        return top[pick][0]
    names = engine.categories
    _keep_valid("cam_class", list(range(len(names))), top[0][0])
    return st.selectbox("Any class (type to search)", range(len(names)), format_func=lambda i: f"{names[i]} ({i})",
                        key="cam_class", **KEEP)


def choose_options(method: str) -> tuple:
    """A widget per option the method declares (its label, range, default and help); the
    options that differ from the defaults, as a cache key."""
    declared = glue.option_widgets(method)
    values = {}
    for column, option in zip(st.columns(max(1, len(declared))), declared):
        key = f"cam_option_{method}_{option.name}"
        if option.choices:
            values[option.name] = column.selectbox(option.label, option.choices, key=key, help=option.help,
                                                   index=list(option.choices).index(option.default), **KEEP)
            continue
        whole = isinstance(option.default, int)
        cast = int if whole else float
        values[option.name] = cast(column.number_input(
            option.label, cast(option.low), cast(option.high), option.default, cast(option.step), key=key,
            help=f"{option.help} Default: {option.default}.", **KEEP))
    return glue.changed_options(method, values)


def confirmed(engine, method: str, layer, options: tuple) -> bool:
    """Ask before a Score-CAM-family map that needs very many forward passes.

    The button's callback records the answer before the rerun it causes, so that run draws
    neither the question nor the button: only the computation's progress bar."""
    passes = glue.masked_passes(engine, method, layer, dict(options))
    if passes <= glue.CONFIRM_PASSES:
        return True
    flag = f"cam_go_{method}_{layer}_{options}"
    if st.session_state.get(flag):
        return True
    st.warning(f"{glue.title(method)} needs about {passes:,} forward passes (one per channel and sample) on this "
               "layer; that can take minutes on a CPU.")
    st.button(f"Compute anyway ({passes:,} passes)", key="cam_confirm", on_click=_confirm, args=(flag,))
    return False


def _confirm(flag: str) -> None:
    st.session_state[flag] = True


def cam_error(error: CnnvisError) -> None:
    """A refusal of a CAM method, naming methods as the page does."""
    st.error(glue.readable(error), icon="⚠️")


@st.fragment
def overlays(engine, chosen, method: str, layer, target: int, options: tuple) -> None:
    """Colormap and opacity recompose cached maps only: moving them never runs the model."""
    view = glue.model_view(engine, chosen)
    result = glue.cam_result(engine, chosen, method, layer, target, options)
    cmap_col, alpha_col = st.columns([1, 3])
    cmap = cmap_col.selectbox("Colormap", COLORMAPS, index=COLORMAPS.index("jet"), key="cam_cmap", **KEEP)
    alpha = alpha_col.slider("Opacity of the map", 0.0, 1.0, 0.5, 0.05, key="cam_alpha", **KEEP)
    label = engine.categories[result.target]
    what = f"{glue.title(method)} · class {label} ({result.target}, logit {result.score:.3g})"
    stem = glue.file_stem(chosen, method, result.layer)
    window = glue.photo_window(engine, chosen)
    photo = chosen.image
    on_photo = window is not None and not (window.whole and photo.size == view.size)
    left, right = st.columns([3, 2])
    if on_photo:
        left.image(glue.photo_overlay(chosen, window, result, alpha, cmap), width="stretch", output_format="JPEG",
                   caption=f"On the photo, {photo.width}×{photo.height} px: the map taken back through the model's "
                           "resize" + ("" if window.whole else " and centre crop (what the crop leaves out is "
                                       "darkened, uncoloured)"))
        left.download_button(f"Overlay on the photo (PNG, {photo.width}×{photo.height})",
                             glue.photo_overlay_file(chosen, window, result, alpha, cmap), f"{stem}_photo.png",
                             "image/png", key="cam_dl_photo", on_click="ignore")
    with right if on_photo else left:
        st.image(glue.overlay_picture(view, result, alpha, cmap), width="stretch", output_format="JPEG",
                 caption=f"{what} · layer {result.layer} ({result.raw.shape[0]}×{result.raw.shape[1]})")
    with right:
        st.markdown(f"**Model input** {view.width}×{view.height} px: the map is computed on the tensor the model "
                    "sees (after its resize and crop).")
        if window is None:
            st.caption("This model's preprocessing does more than a resize and a centre crop, so the map cannot be "
                       "laid over your photo: it is shown over the model's input only.")
        st.download_button("Overlay on the model input (PNG)" if on_photo else "Overlay (PNG)",
                           glue.overlay_file(view, result, alpha, cmap), f"{stem}.png", "image/png",
                           key="cam_dl_png", on_click="ignore")
        st.download_button("Raw map (.npy)", glue.npy_bytes(result.raw), f"{stem}_raw.npy",
                           "application/octet-stream", key="cam_dl_npy", on_click="ignore",
                           help="The method's low-resolution map, before normalisation and upsampling.")
    st.image(glue.scale_png(cmap), width=glue.SCALE_WIDTH, output_format="PNG",
             caption=f"Colour scale (raw map from {result.raw.min():.3g} to {result.raw.max():.3g}, scaled to 0–1)")
    compare(engine, chosen, view, layer, target, alpha, cmap)


def compare(engine, chosen, view, layer, target: int, alpha: float, cmap: str) -> None:
    """The methods side by side, each scaled to its own range (one colour scale under the row).

    Only the methods that apply to the layer are drawn; a caption says why one is left out. A
    masked method computed here shows its progress bar above the list of methods, where the
    list's menu (open while the user picks) does not cover it; no Stop button: the row is a
    fragment, where Streamlit queues a click until the run ends, so Stop could stop nothing."""
    st.subheader("Methods side by side")
    busy = st.container()
    names = [m.name for m in glue.methods()]
    methods = st.multiselect("Methods to compare", names, default=[n for n in COMPARE_DEFAULT if n in names],
                             format_func=glue.title, key="cam_compare", **KEEP,
                             help="CAM, Grad-CAM, Grad-CAM++, XGrad-CAM and Layer-CAM come from one pass together.")
    try:
        missing = glue.left_out(engine, chosen, methods, layer, target)
    except CnnvisError as error:
        cam_error(error)
        return
    for reason in missing.values():
        st.caption(reason)
    methods = [name for name in methods if name not in missing]
    if not methods:
        return
    for column, name in zip(st.columns(len(methods)), methods):
        with column:
            if not glue.fits_in_row(engine, chosen, name, layer, target):
                st.caption(f"{glue.title(name)}: many masked passes on this model and layer; choose it as the method "
                           "above to compute it (there it can be stopped).")
                continue
            try:
                result = glue.cam_result(engine, chosen, name, layer, target, stoppable=False, progress_in=busy)
            except CnnvisError as error:
                st.caption(glue.title(name))
                cam_error(error)
                continue
            except glue.Stopped as stopped:
                resume_button(stopped, "compare")
                continue
            st.image(glue.overlay_picture(view, result, alpha, cmap), width="stretch", output_format="JPEG",
                     caption=glue.title(name))
    st.image(glue.scale_png(cmap), width=glue.SCALE_WIDTH, output_format="PNG", caption="Colour scale of the row")


def resume_button(stopped: glue.Stopped, where: str) -> None:
    """Say that the map was stopped, with a button that computes it again."""
    st.info(f"{stopped} before its map was complete; nothing of it was kept.")
    st.button("Compute it again", key=f"cam_resume_{where}_{stopped.key.text()}", on_click=glue.resume,
              args=(stopped.key,))


def saliency_panel(engine, chosen, target: int | None) -> None:
    """Saliency maps for class ``target`` (top-1 when None), then the deconvnet reconstruction.

    Drawn only while its tab is open; on a large model on the CPU nothing runs until the user asks."""
    st.subheader("Gradients: saliency, deconvnet, guided backpropagation")
    if not st.toggle("Compute the gradient maps (one forward and one backward pass each)", value=engine.quick_passes,
                     key="saliency_on", **KEEP):
        return
    pick, view_col, cmap_col = st.columns([3, 2, 1])
    methods = pick.multiselect("Methods", list(SALIENCY_METHODS), default=DEFAULT_METHODS, format_func=LABELS.get,
                               key="saliency_methods", **KEEP)
    view = view_col.radio("Show", list(VIEWS), format_func=VIEWS.get, key="saliency_view", horizontal=True, **KEEP)
    cmap = cmap_col.selectbox("Colormap", ("gray", "inferno", "viridis", "jet"), key="saliency_cmap",
                              disabled=view == "signed", **KEEP)
    if methods:
        _saliency_row(engine, chosen, methods, target, view, cmap)
    st.caption("∂(class logit)/∂(input pixels) at the model's input resolution; the methods differ only in "
               "how the gradient passes each ReLU backwards (vanilla: where the input was > 0; deconvnet: where "
               "the gradient is > 0; guided: both). Guided Grad-CAM multiplies guided backprop by Grad-CAM.")
    st.divider()
    reconstruction_section(engine, chosen)


def _saliency_row(engine, chosen, methods: list[str], target: int | None, view: str,
                  cmap: str) -> None:
    for column, method in zip(st.columns(len(methods)), methods):
        with column:
            try:
                result = glue.saliency(engine, chosen, method, target)
                png = glue.saliency_png(engine, chosen, method, target, view, cmap)
            except CnnvisError as error:
                show_error(error)
                continue
            label = engine.categories[result.target] if result.target < len(engine.categories) else result.target
            st.image(png, width="stretch", output_format="PNG",
                     caption=f"{LABELS[method]} · class {label} (logit {result.score:.3g})")
            for note in result.notes:
                st.caption(note)


def _set_channel(channel: int) -> None:
    st.session_state["deconv_channel"] = channel


def reconstruction_section(engine, chosen) -> None:
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
                          format_func=lambda n: choices[names.index(n)].label, key="deconv_layer", **KEEP)
    info = choices[names.index(name)]
    if not 0 <= st.session_state.get("deconv_channel", 0) < info.channels:
        st.session_state["deconv_channel"] = 0
    try:
        best = glue.strongest_channels(engine, chosen, name)
    except CnnvisError as error:
        show_error(error)
        return
    channel = int(mid.number_input("Channel", 0, info.channels - 1, key="deconv_channel", **KEEP))
    mid.button("Strongest", on_click=_set_channel, args=(best[0],), key="deconv_strongest",
               help=f"Channels with the highest activation here: {', '.join(map(str, best))}")
    top_only = right.toggle("Only the strongest position", key="deconv_top_only", **KEEP,
                            help="Zeiler & Fergus's figures: keep the channel's single largest activation.")
    try:
        result, rgb_png, map_png = glue.reconstruction(engine, chosen, name, channel, bool(top_only))
    except CnnvisError as error:
        show_error(error)
        return
    a, b = st.columns(2)
    a.image(rgb_png, width="stretch", output_format="PNG",
            caption=f"{name} · channel {channel} · projection (0 = grey)")
    b.image(map_png, width="stretch", output_format="PNG",
            caption=f"magnitude · strongest activation {result.activation:.3g} "
                    f"at row {result.position[0]}, column {result.position[1]}")
    how = "max-pool switches" if result.mechanism == "switches" else "the deconvnet ReLU rule"
    st.caption(f"Projected with {how}: unpool, rectify, transposed convolution, down to the input. "
               f"Strongest channels on this image: {', '.join(map(str, best))}.")
    for note in result.notes:
        st.info(note)


st.header("Class activation maps")
engine, chosen = require_engine_and_image()

try:
    layers = [info.name for info in engine.cam_layers()]
    auto = engine.default_cam_layer()
except CnnvisError as error:
    show_error(error)
    st.stop()

method_col, layer_col = st.columns([2, 3])
names = [m.name for m in glue.methods()]
st.session_state.setdefault("cam_method", "gradcam")
_keep_valid("cam_method", names, "gradcam")
method = method_col.selectbox("Method", names, format_func=glue.title, key="cam_method", **KEEP)
_keep_valid("cam_layer", ["auto", *layers], "auto")
picked = layer_col.selectbox("Layer", ["auto", *layers], key="cam_layer", **KEEP,
                             format_func=lambda n: f"auto ({auto})" if n == "auto" else n,
                             help="Any layer with feature maps; auto = the last one before global pooling.")
layer = None if picked == "auto" else picked
target = choose_target(engine, chosen)
options = choose_options(method)

ready = confirmed(engine, method, layer, options)
# Tabs that track which one is open: a hidden tab's content is not computed (Streamlit runs every
# tab's code otherwise, so the curves would cost 66 passes at every change of method or target).
cam_tab, faith_tab, grad_tab = st.tabs(TABS, key="cam_tab", on_change="rerun")
with cam_tab:
    if cam_tab.open and ready:
        try:
            glue.cam_result(engine, chosen, method, layer, target, options)
        except CnnvisError as error:
            cam_error(error)
        except glue.Stopped as stopped:
            resume_button(stopped, "main")
        else:
            overlays(engine, chosen, method, layer, target, options)
with faith_tab:
    st.caption("Petsiuk et al. (RISE): delete the most salient pixels first (to the input's zero, the mean colour) "
               "and the class probability should fall fast; insert them into a blurred copy and it should rise fast.")
    if faith_tab.open and st.toggle("Compute the curves (2 × 33 forward passes)", value=engine.quick_passes,
                                    key="cam_faith", **KEEP):
        try:
            if ready:
                curves = glue.faithfulness(engine, chosen, method, layer, target, options)
                st.plotly_chart(glue.curves_figure(curves, f"{glue.title(method)} · class "
                                                           f"{engine.categories[curves.target]}"), width="stretch")
        except CnnvisError as error:
            cam_error(error)
        except glue.Stopped:
            st.caption("The map was stopped before it was complete; compute it again to see its curves.")
with grad_tab:
    if grad_tab.open:
        saliency_panel(engine, chosen, target)
