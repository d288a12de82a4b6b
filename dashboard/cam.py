"""Cached calls and figures of the class-activation-map page (``pages/cam.py``).

Every model call is cached (:func:`dashboard.memo.cached`: one store bounded by bytes, shared by the
sessions), keyed by the engine and the image (by their keys, :data:`~dashboard.state.HASH_FUNCS`)
and the method, layer, target and options, so
moving the opacity slider or changing the colormap only recomposes pictures from cached maps
(:func:`overlay_png`), never runs the model. The Score-CAM family (one pass per channel and sample)
is kept in the same store but computed outside a cached function, so that its computation can show
a progress bar (with a Stop button); a session asking for a map another one is computing waits for
it instead of computing it again. The five methods that share one forward and one
backward pass (CAM, Grad-CAM, Grad-CAM++, XGrad-CAM, Layer-CAM) are computed together the first
time any of them is asked for. The page's third tab has the gradient maps (vanilla gradient,
deconvnet, guided backprop, guided Grad-CAM) and the deconvnet projection of one channel (Zeiler &
Fergus), cached the same way, so switching the display or going back to a method already seen
never runs the model again. Overlays go over the model's input and over the photo itself, the map
taken back through the model's resize and crop (:func:`photo_overlay`), each download with its
colour scale and named after the image, the method and the layer (:func:`file_stem`).
"""

from __future__ import annotations

import io
import itertools
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import plotly.graph_objects as go
import streamlit as st
from PIL import Image

from cnnvis_core import CnnvisError, Engine, features
from cnnvis_core import cam as cams
from cnnvis_core.backprop import Saliency
from cnnvis_core.cam import CamMethod, CamResult, Faithfulness, Option
from cnnvis_core.deconv import Reconstruction
from cnnvis_core.render import color_bar, colorize, overlay, to_png_bytes, with_color_bar
from cnnvis_core.view import Window, input_window

from . import memo
from .memo import cached
from .state import ChosenImage, engine_key, safe_stem

#: above this many masked forward passes the page asks before computing
CONFIRM_PASSES = 4096
#: session-state key: the masked maps (store keys) the user stopped, not to be started again unasked
STOPPED = "cam_stopped"
#: the longer side of the photo overlay the page shows (the download keeps the photo's own size)
PHOTO_SIDE = 1024
#: what the colour scale of an overlay says: every map is scaled to its own minimum and maximum
SCALE_LABEL = "each map scaled to its own range"
#: how wide the page draws the colour scale (pixels: drawn at the size it is shown, so its text is crisp)
SCALE_WIDTH = 480


# ---------------------------------------------------------------------------- the methods, from their declarations
def methods() -> list[CamMethod]:
    """Every registered CAM method, in the order the page lists them."""
    return list(cams.registered())


def title(name: str) -> str:
    """``Title (Paper)`` of a method."""
    return cams.method(name).label


def is_masked(name: str) -> bool:
    """Whether the method runs one masked forward pass per channel (and sample)."""
    return cams.method(name).kind == "masked"


def option_widgets(name: str) -> list[Option]:
    """The options of a method a form can set."""
    return [option for option in cams.method(name).options if option.widget]


def readable(error: CnnvisError) -> str:
    """The message of a refusal in the page's words: a method's name in quotes (``'gradcam'``,
    what a script passes) becomes the name the page lists (``Grad-CAM``)."""
    text = str(error)
    for m in methods():
        text = text.replace(f"'{m.name}'", m.title)
    return text


def left_out(engine: Engine, chosen: ChosenImage, names: list[str], layer: str | None,
             target: int | None) -> dict[str, str]:
    """The shared-pass methods among ``names`` that do not apply to ``layer`` (the bundle of
    :func:`_shared` leaves them out: CAM anywhere but the layer the final linear layer reads),
    each with the reason, in the page's words."""
    shared = [name for name in names if cams.method(name).kind == "shared"]
    if not shared:
        return {}
    bundle = _shared(engine, chosen, layer, target)
    missing = {}
    for name in shared:
        if name in bundle:
            continue
        m = cams.method(name)
        missing[name] = (f"{m.title} is left out: it reads the final linear layer, so it applies only to the "
                         "feature maps whose global average that layer takes (the automatic layer, on a model "
                         "that ends in global pooling and one linear layer)." if m.reads_head else
                         f"{m.title} is left out: it does not apply to this layer.")
    return missing


def changed_options(name: str, values: dict) -> tuple:
    """``values`` without those equal to the method's defaults, as a sorted tuple (a cache key:
    the defaults' maps are shared with the comparison row, which passes no options)."""
    defaults = cams.method(name).defaults()
    return tuple(sorted((key, value) for key, value in values.items() if defaults.get(key) != value))


@cached("Computing the maps that share one forward and backward pass…")
def _shared(engine: Engine, chosen: ChosenImage, layer: str | None, target: int | None) -> dict[str, CamResult]:
    return engine.cams(chosen.image, None, layer, target)


@cached("Computing the class activation map…")
def _single(engine: Engine, chosen: ChosenImage, method: str, layer: str | None, target: int | None,
            options: tuple) -> CamResult | CnnvisError:
    # A refusal is cached too, so redrawing a page that shows it never runs the model again.
    try:
        return engine.cam(chosen.image, method, layer, target, **dict(options))
    except CnnvisError as error:
        return error


def cam_result(engine: Engine, chosen: ChosenImage, method: str, layer: str | None, target: int | None,
               options: tuple = (), stoppable: bool = True, show_progress: bool = True,
               progress_in=None) -> CamResult:
    """The map of ``method`` (cached; the shared-pass methods come as one bundle).

    ``stoppable=False`` inside an ``st.fragment``: Streamlit queues the reruns a fragment's own
    widgets ask for until the running script ends, so a Stop button there could stop nothing.
    ``show_progress=False`` inside a cached function, which may not draw a progress bar.
    ``progress_in``: the container the progress bar goes in (default: where the call is).
    """
    kind = cams.method(method).kind
    if kind == "shared" and not options:
        bundle = _shared(engine, chosen, layer, target)
        if method in bundle:
            return bundle[method]
    if kind == "masked":
        key = MaskedKey.of(engine, chosen, method, layer, target, options)
        found = _masked(engine, key, chosen.image, show_progress, stoppable, progress_in or st)
    else:
        found = _single(engine, chosen, method, layer, target, options)
    if isinstance(found, CnnvisError):
        raise found
    return found


def fits_in_row(engine: Engine, chosen: ChosenImage, method: str, layer: str | None, target: int | None) -> bool:
    """Whether the comparison row (a fragment, where nothing can be stopped) may show ``method``:
    any method but the masked ones, and those when their map is stored already or is quick to
    make (at most :data:`CONFIRM_PASSES` passes on a GPU or a small model)."""
    if not is_masked(method):
        return True
    key = MaskedKey.of(engine, chosen, method, layer, target, ())
    quick = masked_passes(engine, method, layer, {}) <= CONFIRM_PASSES and engine.quick_passes
    return quick or _stored(key) is not None


class MaskedKey(NamedTuple):
    """What a masked method's map depends on: its key in the shared store and the stopped set."""

    engine_key: str
    image_key: str
    method: str
    layer: str
    target: int | None
    options: tuple

    @classmethod
    def of(cls, engine: Engine, chosen: ChosenImage, method: str, layer: str | None, target: int | None,
           options: tuple) -> MaskedKey:
        """The key of ``method``'s map of the chosen image."""
        return cls(engine_key(engine), chosen.key, method, layer or "", target, options)

    def text(self) -> str:
        """The key as a widget-key suffix."""
        return "_".join(map(str, self))


def _stored(key: MaskedKey) -> CamResult | CnnvisError | None:
    """A masked method's map (or refusal) from the dashboard's shared cache, else None."""
    return memo.STORE.get(("masked map", *key))


class Stopped(Exception):
    """The user stopped this masked map while it ran; nothing of it was kept (:func:`resume` starts it again)."""

    def __init__(self, key: MaskedKey) -> None:
        super().__init__(f"{title(key.method)}: stopped")
        self.key = key


_stop_buttons = itertools.count()


def _stop(key: MaskedKey) -> None:
    st.session_state.setdefault(STOPPED, set()).add(key)


def resume(key: MaskedKey) -> None:
    """Forget that the user stopped this map: the next run computes it again."""
    st.session_state.get(STOPPED, set()).discard(key)


def _masked(engine: Engine, key: MaskedKey, image, show_progress: bool, stoppable: bool, where
            ) -> CamResult | CnnvisError:
    """A Score-CAM-family map, from the store or computed under a progress bar in ``where``
    (with a Stop button when ``stoppable``).

    Not :func:`~dashboard.memo.cached`: its one pass per channel and sample can take minutes on a
    CPU, and its progress bar belongs to the session that computes it. A refusal is stored too.
    Stop (or any other widget) makes Streamlit rerun, which interrupts the computation at the
    bar's next update: the exception leaves the engine (hooks removed, nothing stored), and the
    rerun finds the map in the session's stopped set and raises :class:`Stopped` instead of
    starting it again.
    """
    found = _stored(key)
    if found is not None:
        return found
    if key in st.session_state.get(STOPPED, set()):
        raise Stopped(key)
    waiting = where.empty()

    def build() -> CamResult | CnnvisError:
        slot = where.empty() if show_progress else None
        extra = {"progress": _progress_bar(slot, key, stoppable)} if slot is not None else {}
        try:
            return engine.cam(image, key.method, key.layer or None, key.target, **dict(key.options), **extra)
        except CnnvisError as error:
            return error
        finally:
            if slot is not None:
                slot.empty()

    def wait() -> None:
        waiting.info(f"{title(key.method)}: another session is computing this map; it shows here when done.",
                     icon="⏳")

    try:
        return memo.STORE.get_or_build(("masked map", *key), build, on_wait=wait)
    finally:
        waiting.empty()


def _progress_bar(slot, key: MaskedKey, stoppable: bool) -> Callable[[int, int], None]:
    """Draw a progress bar in ``slot`` (with a Stop button when ``stoppable``); return the
    ``progress(done, total)`` callback that moves it and tells the time left."""
    name = title(key.method)
    with slot.container():
        bar = st.progress(0.0, text=f"{name}: masked forward passes…")
        if stoppable:
            # A key of its own each time: the same map may be computed twice in a run (another
            # session can evict it from the store between two reads).
            st.button("Stop", key=f"cam_stop_{next(_stop_buttons)}", on_click=_stop, args=(key,),
                      help="Stops the masked passes; nothing of this map is kept.")
    last = [time.perf_counter(), 0]  # time and count of the previous report

    def progress(done: int, total: int) -> None:
        # The time left from the latest batch's rate: the first batches are small (their size is
        # being tuned), so the average rate would overestimate it several times at the start.
        now = time.perf_counter()
        rate = (now - last[0]) / max(done - last[1], 1)
        last[:] = [now, done]
        left = f"about {rate * (total - done):.0f} s left" if done >= total / 10 else "estimating the time left"
        bar.progress(done / total, text=f"{name}: {done:,} of {total:,} masked forward passes · {left}")

    return progress


@cached("Deleting and inserting pixels…")
def faithfulness(engine: Engine, chosen: ChosenImage, method: str, layer: str | None, target: int | None,
                 options: tuple, steps: int = 32) -> Faithfulness:
    """Deletion and insertion curves of the current map (cached)."""
    result = cam_result(engine, chosen, method, layer, target, options, show_progress=False)
    return engine.faithfulness(chosen.image, result.map, result.target, steps)


@cached()
def model_view(engine: Engine, chosen: ChosenImage) -> Image.Image:
    """The picture of the tensor the model sees (maps are aligned with it)."""
    return engine.model_view(chosen.image)


def overlay_picture(view: Image.Image, result: CamResult, alpha: float, cmap: str) -> Image.Image:
    """The map over the model's view, ``alpha`` opaque (no model call). The page shows it as a JPEG
    (``st.image(…, output_format="JPEG")``): one encoding per slider move, where PNG bytes cost a
    slow PNG encoding and then Streamlit's own decoding and JPEG re-encoding of them."""
    return overlay(view, result.map, alpha, cmap)


def overlay_png(view: Image.Image, result: CamResult, alpha: float, cmap: str, scale: bool = False) -> bytes:
    """The map over the model's view, ``alpha`` opaque, as PNG bytes (no model call); with
    ``scale``, its colour scale under it (for the downloaded file)."""
    return _png(overlay_picture(view, result, alpha, cmap), cmap, scale)


def overlay_file(view: Image.Image, result: CamResult, alpha: float, cmap: str) -> Callable[[], bytes]:
    """The download of :func:`overlay_png` with its colour scale, made when the user clicks (a
    slider move does not encode a file nobody asked for)."""
    return lambda: overlay_png(view, result, alpha, cmap, scale=True)


def _png(picture: Image.Image, cmap: str, scale: bool) -> bytes:
    return to_png_bytes(with_color_bar(np.asarray(picture), cmap, 0.0, 1.0, SCALE_LABEL) if scale else picture)


@cached()
def scale_png(cmap: str, width: int = SCALE_WIDTH) -> bytes:
    """The colour scale of the overlays, drawn ``width`` pixels wide (the page shows it under them)."""
    return to_png_bytes(color_bar(cmap, 0.0, 1.0, width, SCALE_LABEL, text_size=14))


def photo_window(engine: Engine, chosen: ChosenImage) -> Window | None:
    """Where the model's input lies on the chosen photo (None: the transform cannot be followed;
    not cached: reading a transform costs microseconds)."""
    return input_window(engine.transform, chosen.image.size)


def photo_overlay(chosen: ChosenImage, window: Window, result: CamResult, alpha: float, cmap: str,
                  longest: int | None = PHOTO_SIDE) -> Image.Image:
    """The map over the photo itself, mapped back through the model's resize and crop (what the
    crop left out stays uncoloured), at most ``longest`` pixels on its longer side (None: the
    photo's own size)."""
    photo, factor = _photo_base(chosen, longest)
    if factor < 1.0:
        window = Window(tuple(v * factor for v in window.box), photo.size)
    return overlay(photo, window.to_photo(result.map), alpha, cmap)


@cached()
def _photo_base(chosen: ChosenImage, longest: int | None) -> tuple[Image.Image, float]:
    """The photo in RGB, shrunk to at most ``longest`` pixels on its longer side, and the factor
    (cached: a slider move blends the map over it again without resampling the photo)."""
    photo = chosen.image.convert("RGB")
    factor = 1.0 if longest is None else min(1.0, longest / max(photo.size))
    if factor < 1.0:
        photo = photo.resize((max(1, round(photo.width * factor)), max(1, round(photo.height * factor))),
                             Image.Resampling.LANCZOS)
    return photo, factor


def photo_overlay_file(chosen: ChosenImage, window: Window, result: CamResult, alpha: float, cmap: str
                       ) -> Callable[[], bytes]:
    """The download of :func:`photo_overlay` at the photo's own size, with its colour scale (made
    when the user clicks)."""
    return lambda: _png(photo_overlay(chosen, window, result, alpha, cmap, longest=None), cmap, True)


def file_stem(chosen: ChosenImage, method: str, layer: str) -> str:
    """``chelsea_gradcam_features.relu7``: the image's name (without its extension), the method
    and the layer, for the files the page offers."""
    name = "_".join(part for part in safe_stem(Path(chosen.name).stem).split("_") if part)  # "Sample 1: ring"
    return safe_stem(name, method.replace("+", "p"), layer)


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array))
    return buffer.getvalue()


def masked_passes(engine: Engine, method: str, layer: str | None, options: dict) -> int:
    """About how many masked forward passes a map costs: channels × passes per channel (0 for a
    method that runs none), from the method's declaration."""
    per_channel = cams.method(method).passes_per_channel(options)
    if not per_channel:
        return 0
    return engine.layer(layer or engine.default_cam_layer()).channels * per_channel


def curves_figure(result: Faithfulness, title: str) -> go.Figure:
    """Deletion and insertion curves with their AUCs in the legend."""
    x = result.fractions * 100
    figure = go.Figure([
        go.Scatter(x=x, y=result.deletion, mode="lines",
                   name=f"deletion · AUC {result.deletion_auc:.3f} (lower is better)", line=dict(color="#e45756")),
        go.Scatter(x=x, y=result.insertion, mode="lines", name=f"insertion · AUC {result.insertion_auc:.3f} "
                   "(higher is better)", line=dict(color="#4c78a8")),
    ])
    figure.update_layout(title=title, xaxis_title="pixels deleted / inserted, most salient first (%)",
                         yaxis_title="class probability", yaxis=dict(range=[0, 1.02]), height=360,
                         margin=dict(l=10, r=10, t=40, b=10), legend=dict(orientation="h", y=-0.25))
    return figure


# ---------------------------------------------------------------------------- gradients and deconvnet
@cached("Backpropagating…")
def saliency(engine: Engine, chosen: ChosenImage, method: str, target: int | None) -> Saliency:
    """The saliency result of ``method`` for the chosen image (cached)."""
    return engine.saliency(chosen.image, method, target)


@cached()
def saliency_png(engine: Engine, chosen: ChosenImage, method: str, target: int | None, view: str,
                 cmap: str) -> bytes:
    """The saliency map as a PNG: magnitude through ``cmap``, or the signed gradient as RGB."""
    result = saliency(engine, chosen, method, target)
    return to_png_bytes(result.rgb() if view == "signed" else colorize(result.map, cmap))


@cached("Projecting the channel to pixels…")
def reconstruction(engine: Engine, chosen: ChosenImage, layer: str, channel: int, top_only: bool
                   ) -> tuple[Reconstruction, bytes, bytes]:
    """``(result, RGB PNG, magnitude PNG)`` of the deconvnet projection (cached)."""
    result = engine.reconstruct(chosen.image, layer, channel, top_only)
    return result, to_png_bytes(result.rgb()), to_png_bytes(colorize(result.map, "inferno"))


@cached()
def strongest_channels(engine: Engine, chosen: ChosenImage, layer: str) -> tuple[int, ...]:
    """The five channels of ``layer`` with the highest maximum activation on the image (cached)."""
    maps = engine.feature_maps(chosen.image, [layer])[layer]
    return tuple(features.strongest_channels(maps, 5))
