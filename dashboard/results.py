"""Where the dashboard keeps finished data set jobs, and which of them belong to the chosen model.

One results folder per server (``CNNVIS_RESULTS``, default ``results/`` beside ``app.py``): the Jobs
page writes each job into a sub-folder of it, the Dead channels and Atlas pages read from it. Put it
on shared storage to let several replicas, or the command line (``python -m cnnvis_core.jobs … --out``),
share one set of results. No widgets here.
"""

from __future__ import annotations

import os
from pathlib import Path

from cnnvis_core import Engine, jobs
from cnnvis_core.jobs.files import sweep_temporaries

#: the environment variable that moves the results folder
RESULTS_ENV = "CNNVIS_RESULTS"
DEFAULT_ROOT = Path(__file__).resolve().parents[1] / "results"


def results_root() -> Path:
    """The server's results folder (made when missing)."""
    root = Path(os.environ.get(RESULTS_ENV) or DEFAULT_ROOT).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def finished(engine: Engine, kind: str | None = None) -> list[tuple[Path, dict]]:
    """``[(folder, manifest)]`` of the finished results of ``engine``'s model (same weights hash),
    newest first; with ``kind`` (``"dataset_examples"``, ``"channel_stats"``, ``"cam_quality"``) only those.
    The temporary files a killed write left in those folders are swept on the way."""
    found = jobs.find(results_root(), weights=jobs.weights_hash(engine))
    for folder, _manifest in found:
        sweep_temporaries(folder)
    return [(folder, manifest) for folder, manifest in found if kind is None or manifest.get("kind") == kind]
