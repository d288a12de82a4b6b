"""Layer browser: every channel of every layer, from one forward pass of the chosen image."""

import streamlit as st

from cnnvis_core import CnnvisError, features
from cnnvis_core.render import COLORMAPS
from dashboard import layers as glue
from dashboard.state import require_engine_and_image, require_frame, show_error
from dashboard.widget_state import clamp, default, persist

require_frame()  # a page URL opened first on a fresh server: run it in app.py's frame

SPATIAL_VIEWS = ("Channels", "One channel", "Mean & sum", "All layers", "Statistics")
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
    png = glue.grid_png(engine, chosen, info.name, shown.channels, cmap, scaling)
    st.image(png, width="content",
             caption=f"{info.name} ({info.kind}) · channels {shown.start + 1}–{shown.stop} of {shown.total}, "
                     f"page {shown.page + 1}/{shown.pages}, ordered by {ORDER_LABELS[order]} · "
                     f"number under each map = channel index")
    stem = glue.file_stem(chosen, info.name)
    npy, npz = glue.activation_files(engine, chosen, info.name)
    a, b, c = st.columns(3)
    a.download_button("Grid (PNG)", png, f"{stem}_p{shown.page + 1}.png", "image/png", key="dl_grid")
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
    right.metric("Mean", f"{summary.mean:.4g}")
    right.metric("Max", f"{summary.max:.4g}")
    right.metric("Zeros", f"{summary.zeros:.1%}")
    right.caption(f"Rank {rank} of {info.channels} by mean activation; {values.shape[0]}×{values.shape[1]} map.")


def summary_view(engine, chosen, info) -> None:
    cmap = st.selectbox("Colormap (sum)", COLORMAPS, key="layer_cmap")
    mean_png, sum_png = glue.summary_pngs(engine, chosen, info.name, cmap)
    left, right = st.columns(2)
    left.image(mean_png, width="stretch", caption=f"{info.name} · channel mean (1/C)·Σ A_c, grayscale")
    right.image(sum_png, width="stretch", caption=f"{info.name} · channel sum Σ A_c, {cmap}")


def overview_view(engine, chosen, layers) -> None:
    kinds = sorted({layer.kind for layer in layers if layer.has_map})  # 1×1 maps have nothing to show
    pick_col, cols_col = st.columns([4, 1])
    picked = pick_col.multiselect("Layer types", kinds, default=_default_kinds(kinds), key="overview_kinds")
    ncols = cols_col.slider("Columns", 3, 12, key="overview_cols")
    if not picked:
        st.info("Pick at least one layer type.")
        return
    png = glue.overview_png(engine, chosen, tuple(sorted(picked)), ncols)
    st.image(png, width="content", caption="Every chosen layer's channel mean, each scaled to its own range, "
                                           "in execution order · title = layer, type, output shape")
    st.download_button("All layers (PNG)", png, f"{glue.file_stem(chosen, 'all_layers')}.png", "image/png",
                       key="dl_overview")


def statistics_view(engine, chosen, layers) -> None:
    stats = glue.layer_statistics(engine, chosen)
    kinds = sorted({s.kind for s in stats})
    relu_like = [k for k in kinds if "ReLU" in k]
    picked = st.multiselect("Layer types", kinds, default=relu_like or kinds, key="stats_kinds",
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


def values_view(engine, chosen, info) -> None:
    cmap = st.selectbox("Colormap", COLORMAPS, key="layer_cmap")
    values = glue.vector_values(engine, chosen, info.name)
    st.plotly_chart(glue.vector_figure(values, f"{info.name} ({info.kind}) · {values.size} values", cmap),
                    width="stretch")
    summary = features.summarize(values)
    st.caption(f"{info.name}: a vector output, shown value by value · min {summary.min:.4g}, "
               f"max {summary.max:.4g}, zeros {summary.zeros:.1%}")
    stem = glue.file_stem(chosen, info.name)
    npy, npz = glue.activation_files(engine, chosen, info.name)
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

persist("layer_view_maps", "layer_view_vector", "layer_order", "layer_per_page", "layer_page", "layer_cmap",
        "layer_scaling", "layer_channel", "overview_cols")
default("layer_per_page", 64)
default("overview_cols", 8)
by_name = {layer.name: layer for layer in layers}
if st.session_state.get("layer_name") not in by_name:
    st.session_state["layer_name"] = next((layer.name for layer in layers if layer.is_spatial), layers[0].name)
name = st.selectbox("Layer", list(by_name), format_func=lambda n: by_name[n].label, key="layer_name",
                    help="Every module that outputs a tensor, in execution order: name · type · output shape.")
info = by_name[name]
has_maps = info.has_map  # 1×1 maps read as a vector
view = st.radio("View", SPATIAL_VIEWS if has_maps else VECTOR_VIEWS, horizontal=True,
                key="layer_view_maps" if has_maps else "layer_view_vector")

try:
    if view == "Channels":
        channels_view(engine, chosen, info)
    elif view == "One channel":
        channel_view(engine, chosen, info)
    elif view == "Mean & sum":
        summary_view(engine, chosen, info)
    elif view == "Values":
        values_view(engine, chosen, info)
    elif view == "All layers":
        overview_view(engine, chosen, layers)
    else:
        statistics_view(engine, chosen, layers)
except CnnvisError as error:
    show_error(error)
