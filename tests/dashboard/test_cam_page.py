"""The class-activation-map page, driven with Streamlit's AppTest."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from tests.dashboard.apptest import open_app


def _open() -> AppTest:
    at = open_app()
    at.switch_page("pages/cam.py").run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    return at


def _ok(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, at.exception
    return at


def _passes(at: AppTest) -> tuple[int, int]:
    return at.session_state["_engine"].counters.snapshot()


def _overlay(at: AppTest) -> tuple[str, str]:
    """(caption, media url) of the main overlay; the url changes with the picture's content."""
    for image in at.get("image"):
        for img in image.proto.imgs:
            if "· layer " in img.caption:
                return img.caption, img.url
    raise AssertionError("the overlay image is missing")


def test_method_and_layer_then_opacity_and_colormap_never_run_the_model():
    at = _open()
    assert "features.relu7" in _overlay(at)[0]  # the automatic layer

    at.selectbox(key="cam_method").set_value("layercam")
    at.selectbox(key="cam_layer").set_value("features.relu6")
    _ok(at)
    caption, url = _overlay(at)
    assert "Layer-CAM" in caption and "features.relu6" in caption and "16×16" in caption
    assert [b.label for b in at.get("download_button")][:2] == ["Overlay (PNG)", "Raw map (.npy)"]
    before = _passes(at)

    seen = {url}
    for alpha in (0.0, 0.35, 1.0):
        at.slider(key="cam_alpha").set_value(alpha)
        _ok(at)
        caption_now, url = _overlay(at)
        assert caption_now == caption
        seen.add(url)
        assert _passes(at) == before, "moving the opacity slider ran the model"
    assert len(seen) == 4, "the picture did not follow the slider"
    at.selectbox(key="cam_cmap").set_value("viridis")
    _ok(at)
    assert _overlay(at)[1] not in seen
    assert _passes(at) == before, "changing the colormap ran the model"


def test_target_by_name_and_an_unfit_method_show_messages_not_tracebacks():
    at = _open()
    at.radio(key="cam_target").set_value(-1)
    _ok(at)
    at.selectbox(key="cam_class").set_value(3)
    _ok(at)
    assert "class star (3," in _overlay(at)[0]

    at.selectbox(key="cam_method").set_value("cam")
    at.selectbox(key="cam_layer").set_value("features.relu5")
    _ok(at)
    assert any("Grad-CAM" in e.value for e in at.error), [e.value for e in at.error]
    before = _passes(at)
    _ok(at)
    assert _passes(at) == before, "a refusal, once made, must not run the model again"


def test_score_cam_runs_once_under_a_progress_bar_then_comes_from_the_store():
    at = _open()
    before = _passes(at)
    at.selectbox(key="cam_method").set_value("scorecam")
    at.selectbox(key="cam_layer").set_value("features.relu5")
    _ok(at)
    caption, url = _overlay(at)
    assert "Score-CAM" in caption and "features.relu5" in caption
    after = _passes(at)
    assert after[0] - before[0] >= 2, "Score-CAM ran no masked passes"
    assert not at.get("progress"), "the progress bar must be gone once the map is there"
    at.slider(key="cam_alpha").set_value(0.9)
    _ok(at)
    assert _overlay(at)[0] == caption and _overlay(at)[1] != url
    at.selectbox(key="cam_method").set_value("gradcam")
    _ok(at)
    elsewhere = _passes(at)
    at.selectbox(key="cam_method").set_value("scorecam")
    _ok(at)
    assert _overlay(at)[0] == caption
    assert _passes(at) == elsewhere, "back on Score-CAM, its map (and its curves) must come from the store"


def test_a_stopped_masked_map_is_not_started_again_until_asked(monkeypatch):
    """The state the Stop button leaves (its key in the session's stopped set): the page says the
    map was stopped, shows none, runs nothing on reruns; "Compute it again" computes it. (The
    interruption itself, mid-run, is a browser test: AppTest cannot click while a script runs.)"""
    from dashboard import cam as glue
    from dashboard import memo

    asked: list[tuple] = []

    def forgetful(key: glue.MaskedKey) -> None:  # keeps nothing: only the stopped set can prevent a computation
        asked.append(key)

    monkeypatch.setattr(glue, "_stored", forgetful)
    memo.STORE.clear(lambda key: key[0] == "masked map")  # maps earlier tests left
    keep = memo.STORE.put
    monkeypatch.setattr(memo.STORE, "put", lambda key, value, size=None: None if key[0] == "masked map"
                        else keep(key, value, size))
    at = _open()
    at.selectbox(key="cam_method").set_value("scorecam")
    at.selectbox(key="cam_layer").set_value("features.relu5")
    _ok(at)
    assert "Score-CAM" in _overlay(at)[0]
    at.session_state[glue.STOPPED] = {asked[-1]}  # what the Stop button's callback leaves
    before = _passes(at)
    for _ in range(2):
        _ok(at)
        assert any("Score-CAM (Wang et al. 2020): stopped before its map was complete" in i.value for i in at.info)
        assert not any("· layer " in img.caption for image in at.get("image") for img in image.proto.imgs)
        assert _passes(at) == before, "a stopped map was started again without being asked"

    [again] = [b for b in at.button if b.label == "Compute it again"]
    again.click()
    _ok(at)
    assert "Score-CAM" in _overlay(at)[0]
    assert _passes(at)[0] > before[0]
    assert not any("stopped" in i.value for i in at.info)


def test_the_comparison_row_leaves_long_masked_maps_to_the_stoppable_main_view(monkeypatch):
    """The row runs in a fragment, where no Stop can act: on a model where masked passes are slow
    it shows a note instead of starting Score-CAM, until the map exists (computed as the method above)."""
    from cnnvis_core import Engine
    monkeypatch.setattr(Engine, "quick_passes", property(lambda engine: False))  # as for resnet50 on a CPU
    at = _open()
    at.multiselect(key="cam_compare").set_value(["gradcam", "scorecam"])
    at.selectbox(key="cam_layer").set_value("features.relu6")
    _ok(at)
    before = _passes(at)
    assert any("Score-CAM (Wang et al. 2020): many masked passes" in c.value for c in at.caption)
    _ok(at)
    assert _passes(at) == before, "the comparison row started a long masked map"

    at.selectbox(key="cam_method").set_value("scorecam")
    _ok(at)
    assert _passes(at)[0] > before[0]
    assert not any("many masked passes" in c.value for c in at.caption)
    row = [img.caption for image in at.get("image") for img in image.proto.imgs]
    assert "Score-CAM (Wang et al. 2020)" in row, row


def _toy_map(shared):
    """A toy method: the layer's channel maximum, scaled by the ``power`` option, per target."""
    return shared.A.amax(0).expand(len(shared.run.targets), *shared.A.shape[1:])


def test_a_method_declared_once_appears_on_the_page_with_its_options():
    """One ``register`` call: the page lists the method by its title, draws its option from the
    declaration (label, range, default) and shows its map; nothing else in the dashboard names it."""
    from cnnvis_core.cam import CamMethod, Option, register, unregister

    def sampled(core, x, layer, targets, top, repeats):
        from cnnvis_core.cam.base import layer_pass, results
        run = layer_pass(core, x.repeat(repeats, 1, 1, 1), layer, targets, top, gradients=False)
        raw = run.activation.mean(0).amax(0).expand(len(run.targets), *run.activation.shape[-2:])
        return results(raw, tuple(x.shape[-2:]), run.targets, layer, "toysampled", run.scores)

    register(CamMethod("toysampled", "Toy-CAM", "Nobody 2026", "sampled", "max_k A_k of repeated inputs",
                       compute=sampled, gradients=False,
                       options=(Option("repeats", 3, "Repeats", "Copies of the input in the batch.", 1, 9, 1),)))
    try:
        at = _open()
        method = at.selectbox(key="cam_method")
        assert "toysampled" in method.options or "Toy-CAM (Nobody 2026)" in method.options
        method.set_value("toysampled")
        _ok(at)
        repeats = at.number_input(key="cam_option_toysampled_repeats")
        assert repeats.label == "Repeats" and repeats.value == 3 and repeats.max == 9
        caption, _ = _overlay(at)
        assert caption.startswith("Toy-CAM (Nobody 2026)")
        forward = _passes(at)[0]
        repeats.set_value(5)
        _ok(at)
        assert _passes(at)[0] > forward  # a new option value is a new map
        assert "Toy-CAM (Nobody 2026)" in _overlay(at)[0]
    finally:
        unregister("toysampled")
