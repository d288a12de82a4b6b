"""Dead feature maps: channels that never fire on a set of images, and whether removing them
changes anything."""

import streamlit as st

from cnnvis_core import CnnvisError, images
from dashboard import dead as glue
from dashboard.state import current_model_choice, require_engine, require_frame, show_error
from dashboard.widget_state import default, persist, subset_of

require_frame()  # a page URL opened first on a fresh server: run it in app.py's frame

SOURCES = {"demo": "Samples from the demo generator", "uploads": "My uploads"}

st.header("Dead channels")
st.caption("A channel is dead on a set of images when its largest |activation| over every image and "
           "position is at most ε. Examined: every conv and ReLU layer with feature maps.")
engine = require_engine()

persist("dead_source", "dead_count", "dead_eps", "dead_kinds")
default("dead_count", 16)
default("dead_eps", 0.0)
source_col, count_col, eps_col = st.columns([2, 2, 1])
source = source_col.radio("Images", list(SOURCES), format_func=SOURCES.get, key="dead_source", horizontal=True)
# ε before anything that may stop the page (no uploads yet), so that its value is always kept
eps = eps_col.number_input("ε (epsilon)", min_value=0.0, step=0.01, format="%.4f", key="dead_eps",
                           help="0: exactly zero everywhere. Larger: also channels that stay this close to zero.")
if source == "demo":
    count = count_col.slider("Number of samples", 4, 128, step=4, key="dead_count",
                             help="Held-out shapes from the demo generator (the sidebar's samples first).")
    image_set = glue.demo_images(count)
else:
    files = count_col.file_uploader("Images", type=images.UPLOAD_EXTENSIONS, accept_multiple_files=True,
                                    key="dead_uploads")
    if not files:
        st.info("Upload one or more images.")
        st.stop()
    uploads = glue.uploaded_images(files)
    for name, reason in uploads.skipped:
        st.warning(f"Skipped {name}: {reason}", icon="⚠️")
    if uploads.images is None:
        st.error("None of the uploaded files is a readable image; upload at least one.", icon="⚠️")
        st.stop()
    if uploads.skipped:
        st.caption(f"Using the other {uploads.used} of {len(files)} files.")
    image_set = uploads.images
model = current_model_choice()
stem = glue.file_stem(model.stem if model else engine.name, image_set)

try:
    peaks = glue.channel_peaks(engine, image_set)
    dead = peaks.dead(eps)
except CnnvisError as error:
    show_error(error)
    st.stop()

kinds = sorted(set(peaks.kinds))
chart_col, check_col = st.columns([3, 2])
with chart_col:
    subset_of("dead_kinds", kinds, kinds)
    shown_kinds = st.multiselect("Layer types", kinds, key="dead_kinds")
    view = glue.of_kinds(dead, shown_kinds)
    if view.layers:
        st.plotly_chart(glue.fraction_figure(view), width="stretch")
    rows = glue.dead_rows(view)
    if rows:
        st.dataframe(rows, hide_index=True, width="stretch")
    else:
        st.success(f"No dead channel in the {len(view.layers)} shown layers over {dead.images} images "
                   f"at ε = {eps:g}.")
        weakest = glue.quietest(peaks, shown_kinds)
        if weakest is not None:
            layer, channel, peak = weakest
            st.caption(f"The quietest channel, {layer} #{channel}, peaks at {peak:.3g}: ε must reach that "
                       "for any channel to count as dead.")
    csv_col, json_col = st.columns(2)
    csv_col.download_button("Dead channels (CSV)", dead.to_csv(), f"{stem}.csv", "text/csv", key="dl_dead_csv")
    json_col.download_button("Dead channels (JSON)", dead.to_json(), f"{stem}.json", "application/json",
                             key="dl_dead_json")

with check_col:
    st.subheader("Are they removable?")
    st.metric("Dead channels", f"{dead.total}", help=f"over {len(dead.layers)} examined layers")
    if dead.total == 0:
        st.info("Nothing to mask: no channel is dead at this ε.")
    else:
        try:
            check = glue.pruning_check(engine, image_set, dead)
        except CnnvisError as error:
            show_error(error)
        else:
            st.metric("Largest logit change", f"{check.max_logit_change:.3g}",
                      help=f"max over {check.images} images and all classes of |z − z′|; largest |z| is "
                           f"{check.max_abs_logit:.3g}")
            st.metric("Top-1 class changed", f"{check.changed_images} of {check.images} images",
                      help="Images whose most probable class differs once the channels are masked.")
            level, sentence = glue.verdict(check)
            getattr(st, level)(sentence)
            st.caption(f"The same {check.images} images were run again with {check.masked_channels} channels in "
                       f"{check.masked_layers} layers set to zero by a forward hook. A change near 0 means "
                       "those filters can be removed without changing the outputs.")
