"""Jobs: analyses over the whole data set chosen in the sidebar, run in the background on the server,
and the finished results of the chosen model."""

import streamlit as st

from cnnvis_core import CnnvisError
from dashboard import jobs as glue
from dashboard.results import results_root
from dashboard.state import current_data, current_model_choice, plain, require_engine, require_frame, show_error
from dashboard.widget_state import default, persist, subset_of
from dashboard.workers import CANCELLED, DONE, DatasetJob

require_frame()  # a page URL opened first on a fresh server: run it in app.py's frame

st.header("Jobs")
st.caption("Analyses over a whole data set (the sidebar's *Data set*), run in the background on the server: "
           f"at most {glue.pool().workers} at a time, the others wait. Leaving the page does not stop them. "
           f"Results go to {plain(results_root())}.")
engine = require_engine()
model = current_model_choice()
data = current_data()

persist("job_kind", "job_layers", "job_k", "job_methods", "job_steps")
default("job_kind", "channel_stats")
default("job_k", 9)
default("job_steps", 32)
default("job_methods", ["gradcam"])
kind = st.radio("Job", list(glue.KINDS), format_func=glue.KINDS.get, horizontal=True, key="job_kind")
settings = {}
if kind == "cam_quality":
    methods_col, steps_col = st.columns([3, 1])
    subset_of("job_methods", glue.method_options(), ["gradcam"])
    settings["methods"] = methods_col.multiselect(
        "CAM methods", glue.method_options(), key="job_methods",
        help="Per image, the map for its class (its label, else the top-1 class); the mean deletion and insertion "
             "AUCs with 95 % intervals, and the pointing game when the data set has masks (the demo's do).")
    settings["steps"] = int(steps_col.number_input("Steps per curve", 2, 256, key="job_steps",
                                                   help="Points of each deletion and insertion curve."))
else:
    layers_col, k_col = st.columns([3, 1])
    options = glue.layer_options(engine)
    subset_of("job_layers", options, [])
    settings["layers"] = layers_col.multiselect("Layers", options, key="job_layers",
                                                placeholder="Every conv and ReLU layer")
    if kind == "dataset_examples":
        settings["k"] = int(k_col.number_input("Images per channel (k)", 1, 100, key="job_k"))

usable = data is not None and data.dataset is not None
if usable:
    st.caption(f"Over **{plain(data.name)}** ({len(data.dataset):,} images) with "
               f"**{plain(model.title if model else engine.name)}**.")
elif data is not None and data.problem is not None:
    data.problem.show()
if st.button("Start", type="primary", key="job_start", disabled=not usable):
    try:
        request = glue.make_request(engine, model.title if model else engine.name, data, kind, **settings)
        job, attached = glue.start(engine, data, request)
    except CnnvisError as error:
        show_error(error)
    else:
        if attached:
            st.info("The same job (same model, data set and settings) is running already: here is its progress.")

running = any(job.active for job in glue.jobs_of(engine))


def show_job(job: DatasetJob) -> None:
    """One job: what it is, its progress or how it ended, and its Cancel button."""
    request = job.request
    st.markdown(f"**{glue.KINDS[request.kind]}** · {plain(request.data_name)} · {plain(glue.settings_text(request))}")
    if job.active:
        st.progress(glue.fraction(job), text=plain(glue.status_line(job)))
        st.button("Cancel", key=f"job_cancel_{job.folder.name}", on_click=job.cancel, disabled=job.cancelling)
    elif job.status == DONE:
        st.success(plain(glue.status_line(job)))
    elif job.status == CANCELLED:
        st.info(plain(glue.status_line(job)))
    else:
        st.error(plain(glue.status_line(job)), icon="⚠️")


# Polled once a second while a job runs: a poll reads the jobs' progress, nothing else.
@st.fragment(run_every=glue.POLL_SECONDS if running else None)
def jobs_panel() -> None:
    jobs = glue.jobs_of(engine)
    if jobs:
        st.subheader("Running and recent")
    for job in jobs:
        with st.container(border=True):
            show_job(job)
    if running and not any(job.active for job in jobs):
        st.rerun()  # one ended since the page last ran: list its result, stop polling


jobs_panel()


def show_result(item: glue.Finished) -> None:
    """A finished result: where it is, its summary, its folder as a ZIP."""
    st.caption(f"Folder: {plain(item.folder)}")
    if item.kind == "channel_stats":
        rows = glue.stats_rows(item)
        dead = sum(row["dead (ε = 0)"] for row in rows)
        st.markdown(f"{dead} dead channels (ε = 0) in {len(rows)} layers. The *Dead channels* page reads this "
                    "result (images: *A finished statistics job*) for any ε.")
        st.dataframe(rows, hide_index=True, width="stretch")
    elif item.kind == "cam_quality":
        st.dataframe(glue.quality_rows(item.manifest), hide_index=True, width="stretch")
    else:
        st.markdown(plain(glue.examples_text(item.manifest)))
    st.download_button("Folder (ZIP)", lambda: glue.folder_zip(item.folder), f"{item.folder.name}.zip",
                       "application/zip", key=f"job_zip_{item.folder.name}", on_click="ignore")


st.subheader("Finished results for this model")
results = glue.finished_results(engine)
if not results:
    st.info("None yet: start a job above.")
for n, item in enumerate(results[:glue.SHOWN_RESULTS]):
    with st.expander(plain(item.title), expanded=n == 0):
        try:
            show_result(item)
        except (CnnvisError, OSError, ValueError) as error:
            st.error(f"This result cannot be read: {plain(error)}", icon="⚠️")
if len(results) > glue.SHOWN_RESULTS:
    st.caption(f"… and {len(results) - glue.SHOWN_RESULTS} older results in {plain(results_root())}.")
