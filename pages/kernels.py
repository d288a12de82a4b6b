"""Kernel viewer: the weights of any convolution as pictures, a histogram and per-filter norms."""

import streamlit as st

from cnnvis_core import CnnvisError
from cnnvis_core.render import COLORMAPS, DIVERGING
from dashboard import kernels as glue
from dashboard.state import current_model_choice, require_engine, require_frame, safe_stem, show_error
from dashboard.widget_state import clamp, default, one_of, persist

require_frame()  # a page URL opened first on a fresh server: run it in app.py's frame

SCALING_LABELS = {"each": "each kernel on its own (shape)",
                  "shared": "one symmetric scale for the layer (sign and strength)"}
PER_PAGE = (64, 256, 1024)


def _shape(shape: tuple[int, ...]) -> str:
    return f"{shape[0]} filters × {shape[1]} inputs × {shape[2]}×{shape[3]}"


st.header("Kernels")
engine = require_engine()

try:
    shapes = glue.conv_shapes(engine)
except CnnvisError as error:
    show_error(error)
    st.stop()
if not shapes:
    st.info("This model has no 2-D convolution.")
    st.stop()

persist("kernel_layer", "kernel_view_rgb", "kernel_view", "kernel_scaling", "kernel_per_page", "kernel_page",
        "kernel_out", "kernel_cmap_each", "kernel_cmap_shared")
default("kernel_per_page", 256)
default("kernel_cmap_each", "gray")
one_of("kernel_layer", shapes, next(iter(shapes)))
layer = st.selectbox("Convolution", list(shapes), format_func=lambda n: f"{n} · {_shape(shapes[n])}",
                     key="kernel_layer")
shape = shapes[layer]
rgb = shape[1] == 3
views = (["RGB filters"] if rgb else []) + ["One filter, per input channel", "All kernels"]
view_col, scale_col, cmap_col = st.columns([2, 2, 1])
view = view_col.radio("View", views, key="kernel_view_rgb" if rgb else "kernel_view")
scaling = scale_col.radio("Scaling", list(SCALING_LABELS), format_func=SCALING_LABELS.get, key="kernel_scaling")
if view == "RGB filters":
    cmap = "gray"            # the tiles are the filters' own colours: no colormap to choose
elif scaling == "each":
    cmap = cmap_col.selectbox("Colormap", COLORMAPS, key="kernel_cmap_each")
else:
    cmap = cmap_col.selectbox("Colormap (diverging)", DIVERGING, key="kernel_cmap_shared")

model = current_model_choice()
stem = safe_stem(model.stem if model else engine.name, layer)
try:
    if view == "RGB filters":
        sheet = glue.rgb_picture(engine, layer, scaling)
        caption = (f"{layer} · all {shape[0]} filters as RGB tiles (inputs R, G, B as red, green, blue), "
                   f"{SCALING_LABELS[scaling]} · under each: its output channel"
                   + (", its min and max" if scaling == "each" else ""))
        name = f"{stem}_rgb.png"
    elif view == "All kernels":
        size_col, page_col = st.columns(2)
        per_page = glue.page_size(shape, size_col.selectbox("Kernels per page", PER_PAGE, key="kernel_per_page"))
        pages = -(-shape[0] * shape[1] // per_page)
        clamp("kernel_page", 1, pages)
        page = int(page_col.number_input("Page", 1, pages, key="kernel_page", help=f"{pages} page(s)"))
        sheet, shown = glue.kernel_page(engine, layer, page - 1, per_page, scaling, cmap)
        caption = (f"{layer} · kernels (filter, input) {shown.first} to {shown.last}, page {page}/{pages}; "
                   + ("rows: filters, columns: inputs" if shape[1] <= shown.ncols else
                      f"{shown.ncols} per row, each labelled with its filter and first input"))
        caption += f" · {SCALING_LABELS[scaling]}, {cmap}"
        name = f"{stem}_kernels_p{page}.png"
    else:
        clamp("kernel_out", 0, shape[0] - 1)
        out = int(st.number_input("Filter (output channel)", 0, shape[0] - 1, key="kernel_out"))
        sheet = glue.slices_picture(engine, layer, out, scaling, cmap)
        inputs = "R, G, B" if rgb else "input channel"
        caption = (f"{layer} · filter {out}: its {shape[1]} slices, one per input channel (under each: {inputs}"
                   + (", its min and max" if scaling == "each" else "") + f") · {SCALING_LABELS[scaling]}, {cmap}")
        name = f"{stem}_filter{out}.png"
    st.image(sheet.png, width=sheet.width, output_format="PNG", caption=caption)
    st.download_button("Kernels (PNG)", sheet.png, name, "image/png", key="dl_kernels")

    st.subheader("Weights and norms")
    hist_col, norm_col = st.columns(2)
    hist_col.plotly_chart(glue.histogram_figure(engine, layer), width="stretch")
    most = min(shape[0], 64)
    flag_key = f"kernel_flag:{layer}"        # per layer: its range and sensible default differ
    persist(flag_key)
    default(flag_key, min(most, max(1, shape[0] // 10)))
    clamp(flag_key, 0, most)
    flag = norm_col.slider("Flag the smallest filters", 0, most, key=flag_key,
                           help="By L1 norm, the pruning criterion of Li et al. (2017).")
    result = glue.norms(engine, layer, flag)
    norm_col.plotly_chart(glue.norms_figure(result, layer), width="stretch")
    if result.flagged:
        norm_col.caption("Smallest L1 norms: " + ", ".join(
            f"filter {o} ({result.l1[o]:.3g})" for o in result.flagged[:16])
            + (" …" if len(result.flagged) > 16 else ""))
except CnnvisError as error:
    show_error(error)
