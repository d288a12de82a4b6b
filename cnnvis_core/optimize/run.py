"""What the engine calls: optimise units of a layer (or classes), with a per-unit cache."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ..core import ModelCore
from ..errors import InputError, LayerError
from ..normalization import normalization_of
from . import loop
from .cache import results_cache
from .fit import STRUCTURAL, fixed_note, image_size, native_size
from .objectives import Objective, channel, class_logit, deepdream, neuron
from .presets import preset as preset_settings
from .settings import Settings

#: objective kinds of :func:`optimize_units`
KINDS = ("channel", "neuron", "class", "deepdream")

Units = int | str | Iterable[int] | None


@dataclass(frozen=True)
class OptimizationResult:
    """Optimised images, one per unit.

    ``images[i]`` is an ``H×W×3`` uint8 array for ``units[i]``; ``activations[i]`` is the
    objective's value on exactly those pixels (no random transform). ``cancelled`` is True
    when ``on_step`` stopped the run: the images are then those reached after ``steps_done``
    of ``steps_total`` steps. ``cached`` counts units taken from the engine's cache. ``notes``
    say what the run changed on its own (a fixed-size model optimised at its native size).
    """

    units: tuple[int, ...]
    images: tuple[np.ndarray, ...]
    activations: np.ndarray
    objective: str
    layer: str | None
    settings: Settings
    seed: int
    cancelled: bool = False
    steps_done: int = 0
    steps_total: int = 0
    cached: int = 0
    notes: tuple[str, ...] = ()


def resolve_settings(preset: str | Settings, overrides: dict) -> Settings:
    base = preset if isinstance(preset, Settings) else preset_settings(preset)
    return base.updated(**overrides)


def _unit_list(units: Units, count: int | None, what: str) -> list[int]:
    if units is None:
        return [0]
    if isinstance(units, str):
        if units != "all" or count is None:
            raise InputError(f"units must be an index, a list of indices or 'all', got {units!r}.")
        return list(range(count))
    values = [units] if isinstance(units, (int, np.integer)) else list(units)
    try:
        values = [int(u) for u in values]
    except (TypeError, ValueError):
        raise InputError(f"units must be integers, got {units!r}.") from None
    if not values:
        raise InputError(f"Choose at least one {what}.")
    bad = [u for u in values if u < 0 or (count is not None and u >= count)]
    if bad:
        limit = f"0…{count - 1}" if count is not None else "0 or more"
        raise InputError(f"No {what} {', '.join(map(str, bad[:5]))}: this one has {what}s {limit}.")
    return values


def _objectives(core: ModelCore, kind: str, layer: str | None, units: Units, settings: Settings,
                position: tuple[int, int] | None) -> tuple[str | None, list[int], list[Objective]]:
    if kind not in KINDS:
        raise InputError(f"Unknown objective {kind!r}; choose one of {', '.join(KINDS)}.")
    if kind == "class":
        ids = _unit_list(units, len(core.categories), "class")
        return None, ids, [class_logit(u) for u in ids]
    if layer is None:
        raise LayerError(f"The {kind!r} objective needs a layer; engine.layers() lists them.")
    info = core.layer(layer)
    if kind == "deepdream":
        ids = _unit_list(units, None, "variant")
        return layer, ids, [deepdream(layer) for _ in ids]
    if kind == "neuron" and info.map_shape is None:
        raise LayerError(f"{layer!r} has no spatial map ({info.output_shape}); "
                         "use objective='channel' or a conv layer for a neuron.")
    ids = _unit_list(units, info.channels, "channel")
    if kind == "neuron":
        y, x = position if position is not None else (None, None)
        return layer, ids, [neuron(layer, u, y, x) for u in ids]
    return layer, ids, [channel(layer, u, border=settings.border) for u in ids]


def optimize_units(core: ModelCore, layer: str | None, units: Units, objective: str = "channel", *, seed: int = 0,
                   on_step: loop.OnStep | None = None, preset: str | Settings = "lucid",
                   position: tuple[int, int] | None = None, **overrides) -> OptimizationResult:
    """One optimised image per unit of ``layer`` (per class for ``objective="class"``).

    Units already in the engine's cache are not recomputed; the others run as one batch.
    """
    settings = resolve_settings(preset, overrides)
    layer, ids, objectives = _objectives(core, objective, layer, units, settings, position)
    cache = results_cache(core)
    keys = _cache_keys(objective, layer, ids, position, settings, seed)
    found = {u: cache.get(keys[u]) for u in dict.fromkeys(ids)}
    todo = [u for u, hit in found.items() if hit is None]
    out = None
    if todo:
        by_unit = dict(zip(ids, objectives))
        out = loop.run(core, [by_unit[u] for u in todo], todo, settings, seed,
                       normalization_of(core.transform), on_step)
        for i, u in enumerate(todo):
            found[u] = (out.images[i], float(out.scores[i]))
            if not out.cancelled:
                cache.put(keys[u], out.images[i], float(out.scores[i]))
    images = tuple(found[u][0] for u in ids)
    activations = np.array([found[u][1] for u in ids], dtype=np.float32)
    return OptimizationResult(
        units=tuple(ids), images=images, activations=activations, objective=objective, layer=layer,
        settings=settings, seed=int(seed), cancelled=bool(out and out.cancelled),
        steps_done=out.steps_done if out else settings.total_steps, steps_total=settings.total_steps,
        cached=len(ids) - len(todo), notes=out.notes if out else _structural_notes(core, settings))


def _structural_notes(core: ModelCore, settings: Settings) -> tuple[str, ...]:
    """The size note of a run whose units all came from the cache (a structurally fixed size only)."""
    input_size = (int(core.input_size[0]), int(core.input_size[-1]))
    native = native_size(core.model, input_size)
    if native is None:
        return ()
    start = image_size(settings, input_size, native)
    return (fixed_note(native, STRUCTURAL, settings, start),)


def cached_units(core: ModelCore, layer: str | None, units: Units, objective: str = "channel", *, seed: int = 0,
                 preset: str | Settings = "lucid", position: tuple[int, int] | None = None,
                 **overrides) -> tuple[int, ...]:
    """The units of an :func:`optimize_units` request (same arguments) whose images the cache
    holds already: that call runs only the others, in this order, so its ``on_step`` preview
    shows the request's units that are not listed here."""
    settings = resolve_settings(preset, overrides)
    layer, ids, _ = _objectives(core, objective, layer, units, settings, position)
    cache = results_cache(core)
    return tuple(u for u, key in _cache_keys(objective, layer, ids, position, settings, seed).items()
                 if cache.get(key) is not None)


def _cache_keys(objective: str, layer: str | None, ids: Sequence[int], position: tuple[int, int] | None,
                settings: Settings, seed: int) -> dict[int, tuple]:
    """Each unit's key in the results cache: everything that decides its picture."""
    return {u: (objective, layer, u, position, settings, int(seed)) for u in ids}


def optimize_objectives(core: ModelCore, objectives: Sequence[Objective], keys: Sequence[int] | None = None, *,
                        seed: int = 0, on_step: loop.OnStep | None = None, preset: str | Settings = "lucid",
                        **overrides) -> OptimizationResult:
    """One image per (composed) objective; item ``b`` seeded by ``(seed, keys[b])`` (default ``b``). Not cached."""
    objectives = list(objectives)
    if not objectives or not all(isinstance(o, Objective) for o in objectives):
        raise InputError("Pass a list of objectives built with cnnvis_core.optimize (channel, neuron, …).")
    keys = list(range(len(objectives))) if keys is None else [int(k) for k in keys]
    if len(keys) != len(objectives):
        raise InputError(f"Got {len(keys)} keys for {len(objectives)} objectives; give one key per objective.")
    settings = resolve_settings(preset, overrides)
    out = loop.run(core, objectives, keys, settings, seed, normalization_of(core.transform), on_step)
    return OptimizationResult(
        units=tuple(keys), images=tuple(out.images), activations=out.scores.astype(np.float32),
        objective=" | ".join(o.name for o in objectives), layer=None, settings=settings, seed=int(seed),
        cancelled=out.cancelled, steps_done=out.steps_done, steps_total=out.steps_total, notes=out.notes)
