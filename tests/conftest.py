"""Suite-wide settings: the tests' models are tiny, so one intra-op thread is fastest and steadiest.

On a 2-core machine that is also running other work, torch's thread pool oversubscribes the cores and
tiny-model calls slow down by an order of magnitude; subprocesses (notebooks, the app, accelerate)
inherit the same limit through the environment.
"""

import os

import pytest
import torch

os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def one_thread():
    """Every test starts on one torch thread, whatever an earlier test set; the count is restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # noqa: ANN001, ARG001
    """Print the fuzz suite's coverage figure (tests/scripts/test_fuzz.py) when it ran: classes that held / registered."""
    import sys

    fuzz = sys.modules.get("tests.helpers.fuzz")
    if fuzz is not None and fuzz.COVERED:
        terminalreporter.write_line(
            f"fuzz: {len(fuzz.COVERED)} of {len(fuzz.REGISTRY)} bad-input classes raised a TypeError/ValueError naming the argument"
        )
