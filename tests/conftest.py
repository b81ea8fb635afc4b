"""Shared test fixtures. Tests run on CPU with tiny models and tiny data."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from modalities.datasets.io import SHARED_DATA

# Under pytest-xdist every worker is a process of its own: one torch thread each keeps
# the 2-core CI machine from oversubscribing (tiny models gain nothing from more).
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else max(1, min(2, os.cpu_count() or 1)))



@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the checkout (real datasets for tests); fails loudly if absent."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"expected the shared data folder at {SHARED_DATA}; CI and dev machines have it beside the checkout")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def torch_single_thread():
    """One intra-op thread for a test module (restored after): training tests on a 2-core
    machine shared by two pytest workers slow down many times over with 2 threads each.
    Module-scoped so it also covers the module's fixtures that train models."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def crash_after():
    """``crash_after(step)``: a Lightning callback raising ``RuntimeError("simulated crash")``
    right after optimizer step ``step``, for the kill-and-resume tests."""
    from crash_after import CrashAfter

    return CrashAfter
