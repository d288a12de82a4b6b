"""The one hook primitive: which call of a module a tap acts on, what it does, when it stops the forward,
and that no hook outlives its block."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnvis_core.core import ModelCache, ModelCore
from cnnvis_core.errors import LayerError
from cnnvis_core.hooks import StopForward, Tap, hook_count, record_outputs, tapped


class Shared(nn.Module):
    """One ReLU module used three times in a pass, then a head that must not run when stopped early."""

    def __init__(self) -> None:
        super().__init__()
        self.relu = nn.ReLU()
        self.head = nn.Linear(4, 2)
        self.head_runs = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.relu(x)
        b = self.relu(a - 1)
        c = self.relu(b * 3 - 0.5)
        self.head_runs += 1
        return self.head(c)


def test_a_tap_acts_on_the_last_call_of_a_shared_module_or_on_every_call():
    model, x = Shared(), torch.linspace(-2, 4, 4).view(1, 4)
    last: list[torch.Tensor] = []
    every: list[torch.Tensor] = []
    taps = [Tap(model.relu, lambda _m, _i, out: last.append(out.clone()), calls=3),
            Tap(model.relu, lambda _m, _i, out: every.append(out.clone()), every_call=True)]
    with tapped(taps):
        model(x)
        model(x)
    a = torch.relu(x)
    c = torch.relu(torch.relu(a - 1) * 3 - 0.5)
    assert len(every) == 6 and len(last) == 2  # every call of both passes; the third call of each pass
    assert torch.equal(last[0], c) and torch.equal(last[1], c) and torch.equal(every[0], a)
    assert hook_count(model) == 0


def test_a_returned_tensor_replaces_the_output_and_before_sees_the_input_first():
    model, x = Shared(), torch.ones(1, 4)
    inputs: list[torch.Tensor] = []
    zero = Tap(model.relu, lambda *_: torch.zeros(1, 4), calls=3, before=lambda _m, args: inputs.append(args[0]))
    with tapped([zero]):
        out = model(x)
    assert torch.allclose(out, model.head.bias.unsqueeze(0))  # the head saw zeros
    assert len(inputs) == 1 and torch.allclose(inputs[0], torch.relu(torch.zeros(1, 4)) * 3 - 0.5)


def test_stopping_taps_end_the_forward_once_all_have_acted_even_through_a_models_except_exception():
    class Guarded(Shared):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            try:
                return super().forward(x)
            except Exception:  # noqa: BLE001 - a model's own handler must not swallow the stop
                return torch.full((1, 2), -1.0)

    model, x = Guarded(), torch.ones(1, 4)
    record: dict[str, torch.Tensor] = {}
    after = []
    with tapped([Tap(model.relu, lambda _m, _i, out: record.setdefault("c", out), calls=3, stop=True)]):
        model(x)
        after.append("not reached")
    assert model.head_runs == 0 and "c" in record and after == []
    assert issubclass(StopForward, BaseException) and not issubclass(StopForward, Exception)
    assert hook_count(model) == 0


def test_no_hook_survives_an_error_inside_the_block_or_inside_an_action():
    model = Shared()
    with pytest.raises(RuntimeError, match="boom"), tapped([Tap(model.relu, lambda *_: None, every_call=True)]):
        assert hook_count(model) == 1
        raise RuntimeError("boom")
    assert hook_count(model) == 0

    def explode(*_: object) -> None:
        raise ValueError("inside the hook")

    with pytest.raises(ValueError, match="inside the hook"), tapped([Tap(model.head, explode, before=explode)]):
        model(torch.ones(1, 4))
    assert hook_count(model) == 0


def test_record_outputs_keeps_copies_that_later_in_place_ops_cannot_change():
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.ReLU(inplace=True))
    with torch.no_grad():  # outputs all negative: the in-place ReLU changes every one of them
        model[0].weight.fill_(1.0)
        model[0].bias.zero_()
    for clone, changed in ((True, False), (False, True)):
        with torch.no_grad(), record_outputs({"0": (model[0], 1)}, clone=clone) as outputs:
            out = model(torch.randn(1, 1, 4, 4) - 5)
        assert torch.equal(outputs["0"], out) is changed  # without a copy the ReLU overwrote it


class TwiceRelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.relu(self.relu(self.conv(x)) - 0.1)).flatten(1)


def test_core_taps_name_a_layer_and_act_on_its_last_call_from_the_catalogue():
    core = ModelCore(TwiceRelu(), input_size=(6, 6), device="cpu")
    assert core.layer("relu").calls == 2
    seen: list[torch.Tensor] = []
    x = torch.randn(1, 3, 6, 6)
    with core.session(), tapped([core.tap("relu", lambda _m, _i, out: seen.append(out))]):
        core.forward(x)
    model = core.model
    assert len(seen) == 1 and torch.equal(seen[0], torch.relu(torch.relu(model.conv(x)) - 0.1))
    with pytest.raises(LayerError, match="relu"):
        core.tap("rellu", lambda *_: None)
    assert hook_count(model) == 0


def test_the_model_cache_builds_each_value_once_and_is_per_core():
    cache = ModelCache()
    builds: list[int] = []
    first = cache.get("k", lambda: builds.append(1) or [1])
    again = cache.get("k", lambda: builds.append(2) or [2])
    assert first is again and builds == [1] and "k" in cache and "other" not in cache
    assert ModelCache().get("k", list) == []


def test_quick_calls_go_ahead_of_the_next_background_batch():
    """While a background batch holds the lock, the job's next batch queues up first and a quick call
    second; when the batch ends the quick call goes first (a plain lock serves the earlier waiter)."""
    import threading
    import time

    from cnnvis_core.core import ModelLock

    for trial in range(3):
        lock, order = ModelLock(), []

        def take(kind: str, lock: ModelLock = lock, order: list = order) -> None:
            with lock.hold(background=kind == "batch"):
                order.append(kind)

        with lock.hold(background=True):  # the batch in progress
            waiting = threading.Thread(target=take, args=("batch",))
            waiting.start()
            time.sleep(0.05)
            quick = threading.Thread(target=take, args=("quick",))
            quick.start()
            time.sleep(0.05)
            with lock.hold():  # re-entrant, whatever the kind
                pass
        waiting.join()
        quick.join()
        assert order == ["quick", "batch"], (trial, order)


def test_the_lock_is_reentrant_and_exclusive_across_threads():
    import threading

    from cnnvis_core.core import ModelLock

    lock, inside, overlaps = ModelLock(), [0], []

    def use() -> None:
        for _ in range(200):
            with lock.hold(background=threading.get_ident() % 2 == 0), lock.hold():
                inside[0] += 1
                overlaps.append(inside[0])
                inside[0] -= 1

    threads = [threading.Thread(target=use) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(overlaps) == {1} and len(overlaps) == 800
