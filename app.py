"""cnnvis dashboard: ``streamlit run app.py``.

The navigation frame: the sidebar chooses the model and the image for every page; the page list
is Streamlit's own navigation at the top (``.streamlit/config.toml`` hides the folder-based
list of ``pages/`` that a fresh server would otherwise show until the first run ends).
"""

import streamlit as st

from cnnvis_core import CnnvisError, Engine, images
from cnnvis_core.priority import PAGE_TURNS, foreground, quick_handover
from dashboard import datasets
from dashboard.heap import freeze_startup
from dashboard.state import (
    SAMPLE_COUNT,
    ChosenData,
    ChosenImage,
    ModelChoice,
    Problem,
    architectures,
    choose,
    choose_data,
    decode_upload,
    digest,
    engine_for,
    load_error_message,
    plain,
    pretrained_status,
    sample_image,
    sample_label,
    server_factory,
    timm_architectures,
    timm_pretrained,
    unavailable_message,
)
from dashboard.widget_state import default, keep_persisted, persist

SOURCES = {"Demo model (offline)": "demo", "torchvision architecture": "torchvision",
           "Weights file": "file", "timm model": "timm", "Model file (.pt2, .onnx)": "modelfile"}
#: the sidebar's entry for the server's own model (``--model pkg.mod:build`` or ``CNNVIS_MODEL``)
FACTORY_LABEL = "Server model"


def timm_choice() -> tuple[ModelChoice, bytes | None, Problem | None]:
    """A timm model by name, pretrained (download or Hugging Face cache) or random."""
    names = timm_architectures()
    default("timm_arch", "resnet18" if "resnet18" in names else names[0])
    arch = st.selectbox("timm model", names, key="timm_arch", help="Every name timm.list_models() gives.")
    available = timm_pretrained(arch)
    default("timm_pretrained", available)
    pretrained = st.toggle("Pretrained weights (download or cache)", key="timm_pretrained",
                           help="Off: random weights, on purpose.")
    choice = ModelChoice("timm", arch, "DEFAULT" if pretrained else None)
    if pretrained and not available:
        return choice, None, Problem("warning", f"timm's pretrained weights of {arch} are not in the Hugging Face "
                                                "cache and cannot be downloaded here. Turn off *Pretrained "
                                                "weights* (random weights: structure, not knowledge).")
    return choice, None, None


def model_file_choice() -> tuple[ModelChoice, bytes | None, Problem | None]:
    """A ``torch.export`` program or an ONNX model, uploaded (recognised by content)."""
    upload = st.file_uploader("Model file (.pt2 from torch.export.save, .onnx)", type=["pt2", "onnx"],
                              key="model_file", help="Loaded without running code from the file; "
                              "ImageNet normalisation and the file's input size (else 224×224).")
    if upload is None:
        return ModelChoice("modelfile"), None, Problem("info", "Upload a .pt2 or .onnx model file in the sidebar.")
    data = upload.getvalue()
    return ModelChoice("modelfile", "", None, digest(data), upload.name), data, None


def model_choice() -> tuple[ModelChoice, bytes | None, Problem | None]:
    """The model picked in the sidebar, the bytes of an uploaded weights file, and why it cannot
    be loaded before even trying (None: try it)."""
    factory = server_factory()
    labels = ([FACTORY_LABEL] if factory else []) + list(SOURCES)
    label = st.radio("Model", labels, key="model_source")
    source = "factory" if label == FACTORY_LABEL else SOURCES[label]
    if source == "factory":
        st.caption(f"`{factory}`, named when the server was started.")
        return ModelChoice("factory", factory, None), None, None
    if source == "demo":
        return ModelChoice("demo"), None, None
    if source == "timm":
        return timm_choice()
    if source == "modelfile":
        return model_file_choice()
    archs = architectures()
    default("arch", "resnet18")
    arch = st.selectbox("Architecture", archs, key="arch")
    if source == "torchvision":
        status = pretrained_status(arch)
        # what works here is the default: pretrained where the weights can be had, else random
        default("pretrained", status.available)
        pretrained = st.toggle("Pretrained weights (download or cache)", key="pretrained",
                               help="Off: random weights, on purpose.")
        choice = ModelChoice("torchvision", arch, "DEFAULT" if pretrained else None)
        if not pretrained and not status.available:
            st.caption(f"{arch}'s pretrained weights are not in the cache and cannot be downloaded here.")
        if pretrained and not status.available:
            return choice, None, Problem("warning", unavailable_message(status))
        return choice, None, None
    upload = st.file_uploader("State dict (.pth, .pt, .safetensors)", type=["pth", "pt", "safetensors"],
                              key="weights_file")
    if upload is None:
        return ModelChoice("file", arch), None, Problem("info", f"Upload a weights file for {arch} in the sidebar.")
    data = upload.getvalue()
    return ModelChoice("file", arch, None, digest(data), upload.name), data, None


def model_section() -> tuple[Engine | None, ModelChoice, Problem | None]:
    """Choose the model: its engine (None when there is none to use), the choice, and why there
    is no engine, in words for the page."""
    choice, data, problem = model_choice()
    if problem is not None:
        problem.show()
        return None, choice, problem
    try:
        engine = engine_for(choice, data)
    except CnnvisError as error:
        message = load_error_message(error, choice)
        st.error(message, icon="⚠️")
        return None, choice, Problem("warning", f"The model ({choice.markdown_title}) could not be loaded: {message}")
    size = engine.input_size
    st.caption(f"**{choice.markdown_title}** · device: `{engine.device}` · input {size[0]}×{size[1]}")
    return engine, choice, None


def image_section() -> ChosenImage:
    """Choose the image: an upload, else a sample of the demo generator."""
    upload = st.file_uploader("Image", type=images.UPLOAD_EXTENSIONS, key="image_upload",
                              help=f"JPEG, PNG, WebP, BMP, GIF (first frame) or TIFF; up to "
                                   f"{images.MAX_BYTES // 2**20} MB.")
    if upload is not None:
        try:
            image, notes = decode_upload(upload.file_id, upload.getvalue())
        except CnnvisError as error:
            st.error(f"{plain(upload.name)}: {error}", icon="⚠️")
        else:
            return ChosenImage(image, f"upload:{upload.file_id}", upload.name, tuple(notes))
    index = st.selectbox("Sample image", range(SAMPLE_COUNT), format_func=sample_label, key="sample_index",
                         help="Shapes from the demo model's generator, never seen in training.")
    return ChosenImage(sample_image(index)[0], f"sample:{index}", sample_label(index))


def data_section() -> ChosenData:
    """Choose the data set the Jobs and Dead channels pages run over: the demo generator's samples,
    a folder or archive on the server, or an uploaded archive (kept on the server for the jobs)."""
    persist("data_source", "data_demo_count", "data_path")
    default("data_source", "demo")
    default("data_demo_count", datasets.DEFAULT_DEMO_SAMPLES)
    with st.expander("Data set"):
        source = st.radio("Data set source", list(datasets.SOURCES), format_func=datasets.SOURCES.get,
                          key="data_source", label_visibility="collapsed")
        if source == "demo":
            count = st.number_input("Samples", 1, datasets.MAX_DEMO_SAMPLES, key="data_demo_count",
                                    help="Held-out shapes of the demo generator, with their classes and masks.")
            data = datasets.demo_data(count)
        elif source == "path":
            path = st.text_input("Path on the server", key="data_path", placeholder="/data/val or /data/val.zip",
                                 help="A folder of images (recursive; sub-folders as classes) or a .zip/.tar.")
            data = datasets.path_data(path)
        else:
            upload = st.file_uploader("Archive (.zip, .tar)", type=datasets.ARCHIVE_TYPES, key="data_upload",
                                      help="Kept on the server, under the results folder, for the jobs.")
            data = (datasets.upload_data(upload.file_id, upload.name, upload.getvalue()) if upload is not None
                    else ChosenData(None, "no archive", Problem("info", "Upload a .zip or .tar archive of images "
                                                                        "in the sidebar (*Data set*).")))
    if data.dataset is not None:
        st.caption(f"Data set: {datasets.summary(data)}")
    elif data.problem.level != "info":
        data.problem.show()
    return data


def model_passes(slot, engine: Engine | None) -> None:
    """Write into ``slot`` how many forward and backward passes the chosen model has run.

    The engine is shared by every browser session, so the figures count everyone's work; the app
    fills the slot before and again after the page runs, so they include this page's passes (a
    fragment's own reruns show at the next full run). The browser tests read it to check that
    display-only changes (an opacity slider) do not run the model.
    """
    if engine is None:
        slot.empty()
        return
    forward, backward = engine.counters.snapshot()
    slot.caption(f"Model passes so far (all sessions): {forward} forward · {backward} backward",
                 help="Cached results cost no pass; every new computation on the model adds to these.")


st.set_page_config(page_title="cnnvis", page_icon="🔬", layout="wide")
freeze_startup()  # the first run freezes the libraries' objects: collecting each run's garbage is then cheap
quick_handover()  # a page's run gets the interpreter back from a job's thread within 1 ms (cnnvis_core.priority)

pages = [
    st.Page("pages/predictions.py", title="Predictions", icon="🏷️", default=True),
    st.Page("pages/layers.py", title="Layer browser", icon="🧅"),
    st.Page("pages/kernels.py", title="Kernels", icon="🔲"),
    st.Page("pages/dead.py", title="Dead channels", icon="💤"),
    st.Page("pages/cam.py", title="Class activation maps", icon="🔥"),
    st.Page("pages/optimize.py", title="Filter optimisation", icon="✨"),
    st.Page("pages/jobs.py", title="Jobs", icon="🗂️"),
    st.Page("pages/atlas.py", title="Atlas", icon="🗺️"),
]
# at the top: .streamlit/config.toml turns the sidebar's page list off (see the module docstring)
navigation = st.navigation(pages, position="top")
keep_persisted()  # every page's settings survive runs that do not draw them (dashboard.widget_state)
persist("model_source", "arch", "pretrained", "timm_arch", "timm_pretrained", "sample_index")

# While this run draws, background jobs wait before their next batch (at most a quarter second).
with foreground(), PAGE_TURNS.turn():
    with st.sidebar:
        st.title("cnnvis")
        engine, model, problem = model_section()
        passes = st.empty()
        st.divider()
        chosen = image_section()
        data_set = data_section()
    choose(engine, chosen, model, problem)
    choose_data(data_set)

    model_passes(passes, engine)
    navigation.run()
    model_passes(passes, engine)  # again, with this page's passes
