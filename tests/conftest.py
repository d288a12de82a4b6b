"""Shared fixtures, the report line that prints the demo model's held-out accuracy, and the
``slow`` marker's switch: slow tests (long sweeps) are skipped unless asked for."""

from __future__ import annotations

import os
import re

import pytest
import torch

from cnnvis_core import Engine
from cnnvis_core.demo import HELD_OUT_SEED_START, sample

torch.set_num_threads(2)

#: figures a test measured, printed at the end of the run (see pytest_terminal_summary)
REPORT: dict[str, str] = {}

#: seeds for tests: held out from training and from the training script's own evaluation
TEST_SEED_START = HELD_OUT_SEED_START + 10_000_000


@pytest.fixture(scope="session")
def demo_engine() -> Engine:
    return Engine.demo(device="cpu")


@pytest.fixture(scope="session")
def demo_images() -> list:
    return [sample(TEST_SEED_START + i)[0] for i in range(8)]


def pytest_terminal_summary(terminalreporter) -> None:
    if REPORT:
        terminalreporter.section("cnnvis figures")
        for key, value in REPORT.items():
            terminalreporter.write_line(f"{key}: {value}")


def pytest_addoption(parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False,
                     help="also run the tests marked slow (long sweeps); or set CNNVIS_SLOW=1, or select them with -m")


def _slow_wanted(config) -> bool:
    """Slow tests run with --runslow, with CNNVIS_SLOW=1, or when the -m expression names the marker
    (``-m slow``, ``-m "e2e and slow"``; with ``-m "not slow"`` pytest deselects them anyway)."""
    return (config.getoption("--runslow") or os.environ.get("CNNVIS_SLOW") == "1"
            or re.search(r"\bslow\b", config.getoption("markexpr") or "") is not None)


def pytest_collection_modifyitems(config, items) -> None:
    if _slow_wanted(config):
        return
    skip = pytest.mark.skip(reason="slow: run with -m slow, --runslow or CNNVIS_SLOW=1")
    for item in items:
        if item.get_closest_marker("slow") is not None:
            item.add_marker(skip)
