"""Filter optimisation: the image a channel, a neuron, a class or a whole layer responds to most."""

import streamlit as st

from cnnvis_core import CnnvisError
from cnnvis_core.optimize import DESCRIPTIONS, PRESETS
from dashboard import optimize as view
from dashboard.state import engine_key, require_engine, require_frame, show_error

require_frame()  # a page URL opened first on a fresh server: run it in app.py's frame

#: every setting of this page is kept for the session, also while another page is shown
KEEP = {"persist_state": "session"}

st.header("Filter optimisation")
st.caption("Start from noise and follow the gradient of a unit's activation with respect to the image "
           "(activation maximisation). All chosen units run as one batch; the forward stops at the layer.")
engine = require_engine()

kind = st.radio("Objective", list(view.KIND_LABELS), format_func=view.KIND_LABELS.get, horizontal=True,
                key="opt_kind", **KEEP)
layer, info, position = None, None, None
if kind != "class":
    layers = view.layer_choices(engine, kind)
    names = [i.name for i in layers]
    if st.session_state.get("opt_layer") not in names:
        st.session_state["opt_layer"] = names[view.default_layer_index(layers)]
    layer = st.selectbox("Layer", names, format_func=lambda n: layers[names.index(n)].label, key="opt_layer", **KEEP)
    info = layers[names.index(layer)]

count = len(engine.categories) if kind == "class" else info.channels
units_col, extra_col = st.columns([2, 1])
try:
    if kind == "deepdream":
        n = units_col.number_input("Variants (different noise)", 1, 16, 1, key="opt_variants", **KEEP)
        units = tuple(range(int(n)))
    else:
        what = "classes" if kind == "class" else "channels"
        mode = units_col.radio("Units", ["One", "List", "All"], horizontal=True, key="opt_mode",
                               format_func=lambda m: f"All {count} {what}" if m == "All" else m, **KEEP)
        if mode == "One" and kind == "class":
            units = (units_col.selectbox("Class", range(count), format_func=lambda i: f"{i}: {engine.categories[i]}",
                                         key="opt_class", **KEEP),)
        elif mode == "One":
            units = (int(units_col.number_input("Channel", 0, count - 1, 0, key="opt_unit", **KEEP)),)
        elif mode == "List":
            units = view.parse_units(units_col.text_input(f"{what.capitalize()} (e.g. 0, 3, 7-9)", "0-3",
                                                          key="opt_list", **KEEP), count)
        else:
            units = tuple(range(count))
    if kind == "neuron":
        h, w = info.output_shape[1:]
        y = extra_col.number_input("Row y", 0, h - 1, h // 2, key="opt_y", **KEEP)
        x = extra_col.number_input("Column x", 0, w - 1, w // 2, key="opt_x", **KEEP)
        position = (int(y), int(x))
except CnnvisError as error:
    show_error(error)
    st.stop()

preset = st.selectbox("Recipe", list(PRESETS), format_func=DESCRIPTIONS.get, key="opt_preset", **KEEP)
base = view.preset_defaults(preset, engine)
# A key and a tracked state: the panel stays as the user left it while the widgets above change.
with st.expander("Custom settings", key="opt_custom", on_change="rerun"):
    a, b, c, d = st.columns(4)
    steps = a.number_input("Steps" + (" per scale" if base.upscale_steps > 1 else ""), 0, 4096, base.steps,
                           key=f"opt_steps_{preset}", **KEEP)
    lr = b.number_input("Learning rate", 1e-4, 100.0, float(base.lr), format="%.4g", key=f"opt_lr_{preset}", **KEEP)
    size = c.number_input("Image size" + (" (start)" if base.upscale_steps > 1 else ""), 16, 512, int(base.size),
                          key=f"opt_size_{preset}", **KEEP)
    seed = d.number_input("Seed", 0, 2**31 - 1, 0, key="opt_seed", **KEEP)
    a, b, c, d = st.columns(4)
    jitter = a.number_input("Jitter (px)", 0, 64, base.jitter, key=f"opt_jitter_{preset}", **KEEP)
    degrees = b.number_input("Rotation (± degrees)", 0.0, 45.0, float(base.degrees), key=f"opt_deg_{preset}", **KEEP)
    scale = c.slider("Scale range", 0.5, 1.5, base.scale, 0.05, key=f"opt_scale_{preset}", **KEEP)
    tv = d.number_input("Total-variation penalty", 0.0, 100.0, float(base.tv), key=f"opt_tv_{preset}", **KEEP)
overrides = (("steps", int(steps)), ("lr", float(lr)), ("size", int(size)), ("jitter", int(jitter)),
             ("degrees", float(degrees)), ("scale", tuple(scale)), ("tv", float(tv)))
request = view.Request(layer, tuple(int(u) for u in units), kind, preset, overrides, int(seed), position,
                       engine.name)

if st.button(f"Optimise {len(units)} image(s)", type="primary", key="opt_run"):
    try:
        view.start_job(engine, request, engine_key(engine))
    except CnnvisError as error:
        show_error(error)

job = view.current_job()
if job is None:
    st.info("Choose what to visualise and press *Optimise*.")
    st.stop()
running = not job.done


def cancel(job: view.Job) -> None:
    """Stop the run and wait for it to hand back its images, so this click's rerun shows them."""
    view.cancel_job(job)


# Polled once a second while a run goes on: each poll is a script run that holds the interpreter
# the optimisation needs (see dashboard/optimize.py).
@st.fragment(run_every=view.POLL_SECONDS if running else None)
def job_panel() -> None:
    job = view.current_job()
    st.caption(job.request.label)
    if not job.done:
        step, total, _ = job.progress()
        st.progress(step / total if total else 0.0, text=job.status())
        tiles = job.preview_tiles(engine.categories)
        if tiles:
            pictures, captions = zip(*tiles)
            st.image(list(pictures), caption=list(captions), width=96)
            count = len(job.request.units)
            st.caption("Live preview" + (f" of {len(tiles)} of the {count} units (the others are in the cache "
                                         f"already, or beyond the first {view.PREVIEW_ITEMS})"
                                         if len(tiles) < count else ""))
        return
    if running:  # it finished since this page last ran: redraw the page without the timer
        st.rerun()
    if job.error:
        st.error(job.error, icon="⚠️")
        return
    result = job.result
    took = view.duration(job.elapsed)
    st.progress(1.0 if not result.cancelled else result.steps_done / max(result.steps_total, 1),
                text=(f"Cancelled after {result.steps_done} of {result.steps_total} steps ({took}): the images so far"
                      if result.cancelled else f"Done: {result.steps_total} steps in {job.elapsed:.1f} s"
                      + (f" · {result.cached} from cache" if result.cached else "")))
    for note in result.notes:  # e.g. a vision transformer optimised at its native input size
        st.caption(note)
    pages = -(-len(result.units) // view.PER_PAGE)
    page = st.number_input("Page", 1, pages, 1, key="opt_page") if pages > 1 else 1
    first = (int(page) - 1) * view.PER_PAGE
    shown = range(first, min(first + view.PER_PAGE, len(result.units)))
    columns = st.columns(4)
    for n, i in enumerate(shown):
        with columns[n % 4]:
            st.image(result.images[i], caption=view.unit_caption(result, i, engine.categories), width="stretch")
            st.download_button("PNG", job.png(i), job.file_name(result.units[i], "png"), "image/png",
                               key=f"opt_png_{i}", on_click="ignore")
    st.download_button(f"All {len(result.units)} images (ZIP)", job.zip(), job.file_name(None, "zip"),
                       "application/zip", key="opt_zip", on_click="ignore")


job_panel()
if running:  # outside the fragment: its click reruns the whole page at once, which then draws the result
    st.button("Cancel", key="opt_cancel", on_click=cancel, args=(job,))
