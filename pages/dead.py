"""Dead feature maps: channels that never fire on a set of images, and whether removing them
changes anything."""

import streamlit as st

from cnnvis_core import CnnvisError, images
from dashboard import dead as glue
from dashboard.state import current_model_choice, plain, require_engine, require_frame, safe_stem, show_error
from dashboard.widget_state import default, one_of, persist, subset_of

require_frame()  # a page URL opened first on a fresh server: run it in app.py's frame

SOURCES = {"demo": "Samples from the demo generator", "uploads": "My uploads", "job": "A finished statistics job"}

st.header("Dead channels")
st.caption("A channel is dead on a set of images when its largest |activation| over every image and "
           "position is at most ε. Examined: every conv and ReLU layer with feature maps.")
engine = require_engine()

persist("dead_source", "dead_count", "dead_eps", "dead_kinds", "dead_job", "dead_job_check")
default("dead_count", 16)
default("dead_eps", 0.0)
source_col, count_col, eps_col = st.columns([2, 2, 1])
source = source_col.radio("Images", list(SOURCES), format_func=SOURCES.get, key="dead_source", horizontal=True)
# ε before anything that may stop the page (no uploads yet), so that its value is always kept
eps = eps_col.number_input("ε (epsilon)", min_value=0.0, step=0.01, format="%.4f", key="dead_eps",
                           help="0: exactly zero everywhere. Larger: also channels that stay this close to zero.")
model = current_model_choice()
peaks = item = None
if source == "demo":
    count = count_col.slider("Number of samples", 4, 128, step=4, key="dead_count",
                             help="Held-out shapes from the demo generator (the sidebar's samples first).")
    image_set = glue.demo_images(count)
elif source == "uploads":
    files = count_col.file_uploader("Images", type=images.UPLOAD_EXTENSIONS, accept_multiple_files=True,
                                    key="dead_uploads")
    if not files:
        st.info("Upload one or more images.")
        st.stop()
    uploads = glue.uploaded_images(files)
    for name, reason in uploads.skipped:
        st.warning(f"Skipped {plain(name)}: {reason}", icon="⚠️")
    if uploads.images is None:
        st.error("None of the uploaded files is a readable image; upload at least one.", icon="⚠️")
        st.stop()
    if uploads.skipped:
        st.caption(f"Using the other {uploads.used} of {len(files)} files.")
    image_set = uploads.images
else:  # the peaks of a finished statistics job: read, not computed
    results = glue.stats_results(engine)
    if not results:
        st.info("No finished statistics job for this model yet: start one (*Channel statistics*) on the Jobs page.")
        st.page_link("pages/jobs.py", label="Jobs", icon="🗂️")
        st.stop()
    titles = {str(result.folder): result.title for result in results}
    one_of("dead_job", list(titles), next(iter(titles)))
    chosen_job = count_col.selectbox("Statistics job", list(titles), format_func=titles.get, key="dead_job")
    item = results[list(titles).index(chosen_job)]
    try:
        peaks = glue.stored_stats(item).peaks()
    except (CnnvisError, OSError, ValueError, KeyError) as error:
        st.error(f"This result cannot be read: {plain(error)}", icon="⚠️")
        st.stop()
    image_set = glue.job_images(item)
stem = (safe_stem(model.stem if model else engine.name, "dead_channels", f"job{item.manifest['data']['fingerprint']}")
        if item is not None else glue.file_stem(model.stem if model else engine.name, image_set))

try:
    peaks = peaks if peaks is not None else glue.channel_peaks(engine, image_set)
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
    elif item is not None and image_set is None:
        st.info("The check runs images again, with the channels masked, and this job's data set cannot be opened "
                "here (moved, changed since, or an upload no longer kept). The chart and the list need no image.")
    elif item is not None and not st.toggle(f"Check on the first {glue.JOB_CHECK_IMAGES} images of its data set",
                                            key="dead_job_check",
                                            help="Runs the model twice per batch; the statistics themselves ran none."):
        st.caption("The chart and the list come from the job's statistics: no model pass. The check needs images: "
                   "turn it on to run them through the model, plain and masked.")
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
