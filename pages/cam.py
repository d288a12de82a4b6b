"""Class activation maps: where in the image does the network look when it decides?"""

import streamlit as st

from cnnvis_core import CnnvisError
from cnnvis_core.cam import METHODS, TITLES
from cnnvis_core.render import COLORMAPS
from dashboard import cam as glue
from dashboard.saliency_panel import saliency_panel
from dashboard.state import require_engine_and_image, require_frame, show_error

require_frame()  # a page URL opened first on a fresh server: run it in app.py's frame

ANOTHER = -1
COMPARE_DEFAULT = ["cam", "gradcam", "gradcam++", "layercam"]


def _keep_valid(key: str, options: list, fallback) -> None:
    """Reset a keyed widget whose stored value is not among its (model-dependent) options."""
    if st.session_state.get(key, fallback) not in options:
        st.session_state[key] = fallback


def choose_target(engine, chosen) -> int:
    """Top-5 classes to click, or any class found by name."""
    top = glue.top_classes(engine, chosen, 5)
    options = list(range(len(top))) + [ANOTHER]
    _keep_valid("cam_target", options, 0)
    labels = {i: f"{label} · {p:.0%}" for i, (_, label, p) in enumerate(top)} | {ANOTHER: "another class…"}
    pick = st.radio("Target class (top-5 predictions)", options, format_func=labels.get, key="cam_target",
                    horizontal=True)
    if pick != ANOTHER:
        return top[pick][0]
    names = engine.categories
    _keep_valid("cam_class", list(range(len(names))), top[0][0])
    return st.selectbox("Any class (type to search)", range(len(names)), format_func=lambda i: f"{names[i]} ({i})",
                        key="cam_class")


def choose_options(method: str) -> tuple:
    options = []
    if method in glue.PAPER_SAMPLES:
        label = "Noisy copies" if method == "smoothgradcam++" else "Samples per channel"
        n = st.number_input(label, 1, 100, glue.PAPER_SAMPLES[method], key=f"cam_samples_{method}",
                            help=f"The paper uses {glue.PAPER_SAMPLES[method]}.")
        options.append(("n_samples", int(n)))
    if method in glue.MASKED:
        fast = st.toggle("bfloat16 masked passes (faster, approximate)", key="cam_bf16",
                         help="Runs the masked inputs under bfloat16 autocast: about 2.5× faster on a CPU with "
                              "AMX (measured), faster on GPUs too; logits keep about 3 significant digits, "
                              "the map stays within about 0.001 of the float32 one.")
        if fast:
            options.append(("precision", "bfloat16"))
    return tuple(options)


def confirmed(engine, method: str, layer, options: tuple) -> bool:
    """Ask before a Score-CAM-family map that needs very many forward passes."""
    passes = glue.masked_passes(engine, method, layer, dict(options).get("n_samples"))
    if passes <= glue.CONFIRM_PASSES:
        return True
    flag = f"cam_go_{method}_{layer}_{options}"
    if st.session_state.get(flag):
        return True
    st.warning(f"{TITLES[method]} needs about {passes:,} forward passes (one per channel and sample) on this "
               "layer; that can take minutes on a CPU.")
    if st.button(f"Compute anyway ({passes:,} passes)", key="cam_confirm"):
        st.session_state[flag] = True
        return True
    return False


@st.fragment
def overlays(engine, chosen, method: str, layer, target: int, options: tuple) -> None:
    """Colormap and opacity recompose cached maps only: moving them never runs the model."""
    view = glue.model_view(engine, chosen)
    result = glue.cam_result(engine, chosen, method, layer, target, options)
    cmap_col, alpha_col = st.columns([1, 3])
    cmap = cmap_col.selectbox("Colormap", COLORMAPS, index=COLORMAPS.index("jet"), key="cam_cmap")
    alpha = alpha_col.slider("Opacity of the map", 0.0, 1.0, 0.5, 0.05, key="cam_alpha")
    png = glue.overlay_png(view, result, alpha, cmap)
    left, right = st.columns([3, 2])
    label = engine.categories[result.target]
    left.image(png, width="stretch",
               caption=f"{TITLES[method]} · class {label} ({result.target}, logit {result.score:.3g}) · "
                       f"layer {result.layer} ({result.raw.shape[0]}×{result.raw.shape[1]})")
    with right:
        st.markdown(f"**Model input** {view.width}×{view.height} px: the map is computed on the tensor the model "
                    "sees (after its resize and crop), so it is drawn over that picture.")
        stem = f"{method}_{result.layer}_class{result.target}".replace("+", "p")
        st.download_button("Overlay (PNG)", png, f"{stem}.png", "image/png", key="cam_dl_png")
        st.download_button("Raw map (.npy)", glue.npy_bytes(result.raw), f"{stem}_raw.npy",
                           "application/octet-stream", key="cam_dl_npy",
                           help="The method's low-resolution map, before normalisation and upsampling.")
    compare(engine, chosen, view, layer, target, alpha, cmap)


def compare(engine, chosen, view, layer, target: int, alpha: float, cmap: str) -> None:
    st.subheader("Methods side by side")
    methods = st.multiselect("Methods to compare", METHODS, default=COMPARE_DEFAULT, format_func=TITLES.get,
                             key="cam_compare",
                             help="CAM, Grad-CAM, Grad-CAM++, XGrad-CAM and Layer-CAM come from one pass together.")
    if not methods:
        return
    for column, name in zip(st.columns(len(methods)), methods):
        with column:
            if not glue.fits_in_row(engine, chosen, name, layer, target):
                st.caption(f"{TITLES[name]}: many masked passes on this model and layer; choose it as the method "
                           "above to compute it (there it can be stopped).")
                continue
            try:
                result = glue.cam_result(engine, chosen, name, layer, target, stoppable=False)
            except CnnvisError as error:
                st.caption(TITLES[name])
                show_error(error)
                continue
            except glue.Stopped as stopped:
                glue.resume_button(stopped, "compare")
                continue
            st.image(glue.overlay_png(view, result, alpha, cmap), width="stretch", caption=TITLES[name])


st.header("Class activation maps")
engine, chosen = require_engine_and_image()

try:
    layers = [info.name for info in engine.cam_layers()]
    auto = engine.default_cam_layer()
except CnnvisError as error:
    show_error(error)
    st.stop()

method_col, layer_col = st.columns([2, 3])
method = method_col.selectbox("Method", METHODS, index=METHODS.index("gradcam"), format_func=TITLES.get,
                              key="cam_method")
_keep_valid("cam_layer", ["auto", *layers], "auto")
picked = layer_col.selectbox("Layer", ["auto", *layers], key="cam_layer",
                             format_func=lambda n: f"auto ({auto})" if n == "auto" else n,
                             help="Any layer with feature maps; auto = the last one before global pooling.")
layer = None if picked == "auto" else picked
target = choose_target(engine, chosen)
options = choose_options(method)

ready = confirmed(engine, method, layer, options)
cam_tab, faith_tab, grad_tab = st.tabs(["Class activation map", "Deletion & insertion", "Gradients & deconvnet"])
with cam_tab:
    if ready:
        try:
            glue.cam_result(engine, chosen, method, layer, target, options)
        except CnnvisError as error:
            show_error(error)
        except glue.Stopped as stopped:
            glue.resume_button(stopped, "main")
        else:
            overlays(engine, chosen, method, layer, target, options)
with faith_tab:
    st.caption("Petsiuk et al. (RISE): delete the most salient pixels first (to the input's zero, the mean colour) "
               "and the class probability should fall fast; insert them into a blurred copy and it should rise fast.")
    if st.toggle("Compute the curves (2 × 33 forward passes)", value=engine.quick_passes, key="cam_faith"):
        try:
            if ready:
                curves = glue.faithfulness(engine, chosen, method, layer, target, options)
                st.plotly_chart(glue.curves_figure(curves, f"{TITLES[method]} · class "
                                                           f"{engine.categories[curves.target]}"), width="stretch")
        except CnnvisError as error:
            show_error(error)
        except glue.Stopped:
            st.caption("The map was stopped before it was complete; compute it again to see its curves.")
with grad_tab:
    saliency_panel(engine, chosen, target)
