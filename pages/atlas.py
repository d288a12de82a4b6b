"""Unit atlas: every channel of a layer, with what excites it in a data set; a page per unit."""

import streamlit as st

from cnnvis_core import CnnvisError, atlas
from dashboard import atlas as view
from dashboard import results
from dashboard.state import require_engine, require_frame, show_error

require_frame()  # a page URL opened first on a fresh server (a bookmark): run it in app.py's frame

st.header("Unit atlas")
st.caption("Each channel with the dataset images that excite it most (their receptive-field crops), how its peak "
           "is spread over the data set, its kernels and, where it feeds the classifier, the classes it raises.")
engine = require_engine()
found = view.found(engine)
if not found:
    st.info(f"No finished dataset-examples result for this model in `{results.results_root()}`. Run one on the "
            "Jobs page, or `python -m cnnvis_core.jobs examples --model demo --data demo:500 --out "
            f"{results.results_root()}/examples`.")
    st.stop()

params = st.query_params
folders = [str(folder) for folder, _ in found]
labels = {str(folder): view.label(folder, manifest) for folder, manifest in found}
wanted = params.get("result")
if wanted and (match := [f for f in folders if f.endswith("/" + wanted)]):
    st.session_state["atlas_result"] = match[0]
if st.session_state.get("atlas_result") not in folders:
    st.session_state["atlas_result"] = folders[0]


def layer_changed() -> None:
    st.query_params["layer"] = st.session_state["atlas_layer"]
    st.query_params.pop("channel", None)


def open_unit(channel: int | None) -> None:
    if channel is None:
        st.query_params.pop("channel", None)
    else:
        st.query_params["channel"] = str(channel)


def search() -> None:
    text = st.session_state.get("atlas_search", "")
    st.session_state["atlas_search_error"] = None
    if not text.strip():
        return
    try:
        open_unit(atlas.find_channel(text, st.session_state["_atlas_channels"]))
    except CnnvisError as error:
        st.session_state["atlas_search_error"] = str(error)


top = st.columns([3, 2, 1])
folder = top[0].selectbox("Dataset-examples result", folders, format_func=labels.get, key="atlas_result")
try:
    result = view.open_result(folder)
except (CnnvisError, OSError) as error:
    st.error(f"This result cannot be read: {error}", icon="⚠️")
    st.stop()
layers = result.layers
if params.get("layer") in layers:
    st.session_state["atlas_layer"] = params["layer"]
if st.session_state.get("atlas_layer") not in layers:
    st.session_state["atlas_layer"] = layers[-1]
layer = top[1].selectbox("Layer", layers, key="atlas_layer", on_change=layer_changed)
eps = top[2].number_input("Dead: peak ≤ ε", 0.0, 1e6, 0.0, format="%.4g", key="atlas_eps")
try:
    units = view.table(engine, folder, layer, float(eps))
except CnnvisError as error:
    show_error(error)
    st.stop()
st.session_state["_atlas_channels"] = units.channels

channel = params.get("channel")
channel = int(channel) if channel is not None and channel.isdigit() and int(channel) < units.channels else None


def grid() -> None:
    """The layer's channels, paged, each as a mosaic of its top crops."""
    a, b, c = st.columns([2, 1, 2])
    order = a.radio("Order", atlas.ORDERS, horizontal=True, key="atlas_order",
                    format_func={"index": "Index", "peak": "Peak", "selectivity": "Selectivity (peak ÷ mean)"}.get)
    hide = b.toggle("Hide dead", key="atlas_hide_dead")
    c.text_input("Jump to channel", key="atlas_search", on_change=search, placeholder="e.g. 12")
    if st.session_state.get("atlas_search_error"):
        st.error(st.session_state["atlas_search_error"], icon="⚠️")
    shown = units.order(order, dead=not hide)
    dead = int(units.dead.sum())
    st.caption(f"{units.channels} channels · {dead} dead (peak ≤ {eps:g}) · top {result.k} of {result.images} images "
               f"each · figures from {'channel statistics' if units.source == 'stats' else 'the examples'}")
    pages = max(1, -(-len(shown) // view.PER_PAGE))
    page = st.number_input(f"Page (of {pages})", 1, pages, 1, key="atlas_page") if pages > 1 else 1
    first = (int(page) - 1) * view.PER_PAGE
    cells = shown[first:first + view.PER_PAGE]
    for n, c in enumerate(cells):
        if n % view.COLUMNS == 0:  # a row of columns at a time: cells line up, and read in order
            columns = st.columns(view.COLUMNS)
        with columns[n % view.COLUMNS]:
            mark = " · 💤 dead" if units.dead[c] else ""
            st.image(view.mosaic_png(folder, layer, c), width="stretch",
                     output_format="PNG",
                     caption=f"channel {c} · peak {units.peak[c]:.3g} · sel. {units.selectivity[c]:.3g}{mark}")
            for _, image in view.cached_visualisations(engine, layer, c, 1):  # only when computed already
                st.image(image, caption="feature visualisation", width="stretch")
            st.button(f"Open {c}", key=f"atlas_open_{c}", on_click=open_unit, args=(c,), width="stretch")


def visualisations(c: int) -> None:
    """Feature visualisations: cached ones shown, others computed on demand under a progress bar."""
    st.subheader("Feature visualisations")
    seeds = st.number_input("Variants (seeds)", 1, 4, 1, key="atlas_fv_seeds")
    cached = view.cached_visualisations(engine, layer, c, int(seeds))
    if cached:
        st.image([image for _, image in cached], caption=[f"seed {s}" for s, _ in cached], width=160)
    run = view.current_visualisations(layer, c)
    idle = run is None or run.done
    if len(cached) < seeds and idle and st.button("Compute the feature visualisations", key="atlas_fv_run"):
        run = view.start_visualisations(engine, layer, c, int(seeds))
    if run is not None and not run.done:
        progress(run)
    elif run is not None and run.errors():
        st.error(run.errors()[0], icon="⚠️")


@st.fragment(run_every=1.0)
def progress(run: view.Visualisations) -> None:
    if run.done:
        st.rerun()
    fraction, text = run.progress()
    st.progress(fraction, text=text)


@st.fragment
def top_examples(c: int) -> None:
    """The top-k crops with the channel's map over them; the opacity slider redraws only this."""
    st.subheader(f"Top {result.k} dataset examples")
    alpha = st.slider("Map opacity", 0.0, 1.0, 0.5, 0.05, key="atlas_alpha")
    shown = view.examples(engine, folder, layer, c, float(alpha))
    wholes = view.whole_pngs(folder, layer, c)
    per_row = min(len(shown), 5) or 1
    for n, ((overlay, caption), whole) in enumerate(zip(shown, wholes)):
        if n % per_row == 0:
            columns = st.columns(per_row)
        with columns[n % per_row]:
            st.image(overlay, caption=caption, width="stretch")
            with st.popover("Whole image", width="stretch"):
                st.image(whole, width=320)
    if st.toggle(f"Deconvnet projection of each example ({len(shown)} passes the first time)", key="atlas_deconv"):
        pictures = view.projection_pngs(engine, folder, layer, c)
        st.image(pictures, caption=[f"deconvnet #{n + 1}" for n in range(len(pictures))], width=96)


def unit_page(c: int) -> None:
    nav = st.columns([1, 1, 1, 4])
    nav[0].button("← Grid", key="atlas_back", on_click=open_unit, args=(None,))
    nav[1].button("Previous", key="atlas_prev", on_click=open_unit, args=(max(0, c - 1),), disabled=c == 0)
    nav[2].button("Next", key="atlas_next", on_click=open_unit, args=(min(units.channels - 1, c + 1),),
                  disabled=c + 1 >= units.channels)
    st.subheader(f"{layer} · channel {c}")
    m = st.columns(4)
    m[0].metric("Peak", f"{units.peak[c]:.3g}")
    m[1].metric("Mean", f"{units.mean[c]:.3g}")
    m[2].metric("Selectivity", f"{units.selectivity[c]:.3g}")
    m[3].metric("Dead", "yes" if units.dead[c] else "no")
    visualisations(c)
    top_examples(c)
    if result.has_histograms:
        st.plotly_chart(view.histogram_figure(result, layer, c, float(eps)), key="atlas_histogram")
    else:
        st.info("This result was made before the distribution of peaks was recorded; run the job again for it.")
    slices = view.kernels(engine, layer, c)
    if slices is not None:
        st.subheader(f"Kernel slices of {slices[0]}, filter {c}")
        st.image(slices[1].png, width=slices[1].width, output_format="PNG")
    logits = view.logit_figure(engine, layer, c)
    if logits is not None:
        st.subheader("Logit view")
        st.plotly_chart(logits, key="atlas_logits")


try:
    if channel is None:
        grid()
    else:
        unit_page(channel)
except CnnvisError as error:
    show_error(error)
