"""Shared fixtures, and the report line that prints the demo model's held-out accuracy."""

from __future__ import annotations

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
