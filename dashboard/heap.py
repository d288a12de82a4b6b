"""The server's heap: what was alive at startup is frozen, so collecting each run's garbage is cheap.

Each script run leaves reference cycles behind (a page's module dictionary and the functions it
defines, Streamlit's element tree, exceptions with their frames) that hold what the run computed:
maps, tensors, pictures. Reference counting cannot free a cycle; only the cyclic collector can, and
it runs a full collection only after enough *objects* were allocated, not bytes: a few large
tensors per run never trigger it. Without a full collection after each run, a soak of 400
interactions grew the server by 800 MB beyond its page cache (`bench/load_server.py --soak`).

Streamlit's own remedy, a full ``gc.collect(2)`` after every run (``runner.postScriptGC``), walked
the whole heap — torch, plotly and Streamlit's modules, about 420,000 objects — in 0.2–0.5 s
holding the interpreter. :func:`freeze_startup` moves everything alive at the first run into the
collector's permanent generation (``gc.freeze``), which collections skip: a full collection then
walks only what the sessions made since, a few thousand objects, in 1–4 ms, and
``.streamlit/config.toml`` turns ``postScriptGC`` back on.
"""

from __future__ import annotations

import gc
import threading

_lock = threading.Lock()
_frozen = False


def freeze_startup() -> bool:
    """Collect, then freeze every object alive now (once per process); True on the call that froze."""
    global _frozen
    with _lock:
        if _frozen:
            return False
        gc.collect()
        gc.freeze()
        _frozen = True
        return True

