"""Layer browser: every channel of every layer, from one forward pass of the chosen image."""

import streamlit as st

from cnnvis_core import CnnvisError, features
from cnnvis_core.render import COLORMAPS
from dashboard import layers as glue
from dashboard.state import (
    current_model_choice,
    model_caveat,
    require_engine_and_image,
    require_frame,
    show_error,
)
from dashboard.widget_state import clamp, default, one_of, persist, subset_of

require_frame()  # a page URL opened first on a fresh server: run it in app.py's frame

SPATIAL_VIEWS = ("Channels", "One channel", "Sum & max", "All layers", "Statistics")
VECTOR_VIEWS = ("Values", "All layers", "Statistics")
PER_PAGE = (16, 32, 64, 128, 256, 512, 1024, 2048)
ORDER_LABELS = {"index": "channel index", "mean": "mean activation, strongest first"}
SCALING_LABELS = {"channel": "each channel on its own", "layer": "one scale for the layer"}


def _default_kinds(kinds: list[str]) -> list[str]:
    picked = [k for k in kinds if any(word in k for word in ("Conv", "ReLU", "Pool"))]
    return picked or kinds


def channels_view(engine, chosen, info) -> None:
    order_col, size_col, page_col, cmap_col, scale_col = st.columns([2, 1, 1, 1, 2])
    order = order_col.radio("Order", list(ORDER_LABELS), format_func=ORDER_LABELS.get, key="layer_order")
    per_page = size_col.selectbox("Per page", PER_PAGE, key="layer_per_page")
    pages = -(-info.channels // per_page)
    clamp("layer_page", 1, pages)
    page = page_col.number_input("Page", 1, pages, key="layer_page", help=f"{pages} page(s)")
    cmap = cmap_col.selectbox("Colormap", COLORMAPS, key="layer_cmap")
    scaling = scale_col.radio("Scaling", list(SCALING_LABELS), format_func=SCALING_LABELS.get, key="layer_scaling")
    shown = glue.channel_page(engine, chosen, info.name, int(page) - 1, per_page, order)
    grid = glue.grid_picture(engine, chosen, info.name, shown.channels, cmap, scaling)
    st.image(grid.png, width=grid.width, output_format="PNG",
             caption=f"{info.name} ({info.kind}) · channels {shown.start + 1}–{shown.stop} of {shown.total}, "
                     f"page {shown.page + 1}/{shown.pages}, ordered by {ORDER_LABELS[order]} · "
                     f"under each map: its channel index" + (", its min and max" if scaling == "channel" else ""))
    stem = glue.file_stem(chosen, info.name)
    npy, npz = glue.activation_files(engine, chosen, info.name, current_model_choice())
    a, b, c = st.columns(3)
    a.download_button("Grid (PNG)", grid.png, f"{stem}_p{shown.page + 1}.png", "image/png", key="dl_grid")
    b.download_button("Activations (.npy)", npy, f"{stem}.npy", "application/octet-stream", key="dl_npy")
    c.download_button("Activations (.npz)", npz, f"{stem}.npz", "application/octet-stream", key="dl_npz")


def channel_view(engine, chosen, info) -> None:
    pick_col, cmap_col = st.columns([1, 1])
    clamp("layer_channel", 0, info.channels - 1)
    channel = int(pick_col.number_input("Channel", 0, info.channels - 1, key="layer_channel"))
    cmap = cmap_col.selectbox("Colormap", COLORMAPS, key="layer_cmap")
    values = glue.channel_values(engine, chosen, info.name, channel)
    rank = int(list(glue.channel_ranking(engine, chosen, info.name)).index(channel)) + 1
    left, right = st.columns([3, 1])
    left.plotly_chart(glue.channel_heatmap(values, cmap, f"{info.name} · channel {channel}"), width="stretch")
    summary = features.summarize(values)
    right.metric("Min", f"{summary.min:.4g}")
    right.metric("Mean", f"{summary.mean:.4g}")
    right.metric("Max", f"{summary.max:.4g}")
    right.metric("Zeros", f"{summary.zeros:.1%}")
    right.caption(f"Rank {rank} of {info.channels} by mean activation; {values.shape[0]}×{values.shape[1]} map.")


def sum_max_view(engine, chosen, info) -> None:
    cmap = st.selectbox("Colormap", COLORMAPS, key="layer_cmap")
    total, peak = glue.sum_and_max(engine, chosen, info.name, cmap)
    left, right = st.columns(2)
    left.image(total.png, width=total.width, output_format="PNG",
               caption=f"{info.name} · channel sum Σ A_c (= {info.channels} × the mean): where the layer responds "
                       "in all, on its own scale")
    right.image(peak.png, width=peak.width, output_format="PNG",
                caption=f"{info.name} · maximum over channels max_c A_c: where any one channel responds strongly, "
                        "on its own scale")


def overview_view(engine, chosen, layers) -> None:
    kinds = sorted({layer.kind for layer in layers if layer.has_map})  # 1×1 maps have nothing to show
    pick_col, cols_col = st.columns([4, 1])
    subset_of("overview_kinds", kinds, _default_kinds(kinds))
    picked = pick_col.multiselect("Layer types", kinds, key="overview_kinds")
    ncols = cols_col.slider("Columns", 3, 12, key="overview_cols")
    if not picked:
        st.info("Pick at least one layer type.")
        return
    sheet = glue.overview_picture(engine, chosen, tuple(sorted(picked)), ncols)
    st.image(sheet.png, width=sheet.width, output_format="PNG",
             caption="Every chosen layer's channel mean, each scaled to its own range (printed under it), in "
                     "execution order · title = layer, type, output shape")
    st.download_button("All layers (PNG)", sheet.png, f"{glue.file_stem(chosen, 'all_layers')}.png", "image/png",
                       key="dl_overview")


def statistics_view(engine, chosen, layers) -> None:
    stats = glue.layer_statistics(engine, chosen)
    kinds = sorted({s.kind for s in stats})
    relu_like = [k for k in kinds if "ReLU" in k]
    subset_of("stats_kinds", kinds, relu_like or kinds)
    picked = st.multiselect("Layer types", kinds, key="stats_kinds",
                            help="Sparsity trends read best on activation outputs (ReLU).")
    shown = [s for s in stats if s.kind in picked]
    if not shown:
        st.info("Pick at least one layer type.")
        return
    st.plotly_chart(glue.depth_figure(shown), width="stretch")
    st.caption("A trained CNN's rectified maps usually get sparser with depth (more exact zeros). "
               f"Statistics of {len(shown)} layers for this image.")
    with st.expander("Table"):
        st.dataframe(glue.stats_rows(shown), hide_index=True, width="stretch")


def values_view(engine, chosen, info, layers) -> None:
    values = glue.vector_values(engine, chosen, info.name)
    # the colormap only colours a heat strip; bars have none to choose
    cmap = st.selectbox("Colormap", COLORMAPS, key="layer_cmap") if glue.uses_colormap(values.size) else "gray"
    names = glue.vector_names(engine, layers, info.name, values.size)
    if names is not None:
        caveat = model_caveat(chosen)
        if caveat:
            st.info(caveat, icon="ℹ️")
    what = "one value per class (logits)" if names is not None else f"{values.size} values"
    st.plotly_chart(glue.vector_figure(values, f"{info.name} ({info.kind}) · {what}", cmap, names), width="stretch")
    summary = features.summarize(values)
    st.caption(f"{info.name}: a vector output, shown value by value · min {summary.min:.4g}, "
               f"max {summary.max:.4g}, zeros {summary.zeros:.1%}")
    stem = glue.file_stem(chosen, info.name)
    npy, npz = glue.activation_files(engine, chosen, info.name, current_model_choice())
    a, b = st.columns(2)
    a.download_button("Activations (.npy)", npy, f"{stem}.npy", "application/octet-stream", key="dl_npy")
    b.download_button("Activations (.npz)", npz, f"{stem}.npz", "application/octet-stream", key="dl_npz")


st.header("Layer browser")
engine, chosen = require_engine_and_image()

try:
    layers, _ = glue.layer_capture(engine, chosen)
except CnnvisError as error:
    show_error(error)
    st.stop()

persist("layer_name", "layer_view_maps", "layer_view_vector", "layer_order", "layer_per_page", "layer_page",
        "layer_cmap", "layer_scaling", "layer_channel", "overview_cols", "overview_kinds", "stats_kinds")
default("layer_per_page", 64)
default("overview_cols", 8)
by_name = {layer.name: layer for layer in layers}
one_of("layer_name", by_name, next((layer.name for layer in layers if layer.is_spatial), layers[0].name))
name = st.selectbox("Layer", list(by_name), format_func=lambda n: by_name[n].label, key="layer_name",
                    help="Every module that outputs a tensor, in execution order: name · type · output shape.")
info = by_name[name]
has_maps = info.has_map  # 1×1 maps read as a vector
views, view_key = (SPATIAL_VIEWS, "layer_view_maps") if has_maps else (VECTOR_VIEWS, "layer_view_vector")
one_of(view_key, views, views[0])
view = st.radio("View", views, horizontal=True, key=view_key)

try:
    if view == "Channels":
        channels_view(engine, chosen, info)
    elif view == "One channel":
        channel_view(engine, chosen, info)
    elif view == "Sum & max":
        sum_max_view(engine, chosen, info)
    elif view == "Values":
        values_view(engine, chosen, info, layers)
    elif view == "All layers":
        overview_view(engine, chosen, layers)
    else:
        statistics_view(engine, chosen, layers)
except CnnvisError as error:
    show_error(error)
