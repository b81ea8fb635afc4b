"""Shared test fixtures. Tests run on CPU with tiny models and tiny data."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import yaml

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


TINY_RECIPE = {
    "name": "tiny_ts",
    "description": "ItalyPowerDemand, a tiny transformer (CLI tests)",
    "data": {"dataset": {"name": "italypowerdemand"}, "adapter": {"name": "timeseries", "max_len": 32}, "batch_size": 16,
             "val_fraction": 0.2, "max_eval_samples": 60},
    "model": {"backbone": "transformer", "dim": 16, "depth": 1, "heads": 2, "dropout": 0.1},
    "optimizer": {"lr": 0.005},
    "schedule": {"warmup_steps": 2},
    "trainer": {"max_epochs": 3, "checkpoint_every_n_steps": 3, "enable_progress_bar": False},
}
"""A recipe that trains in seconds: 12 steps (4 per epoch), checkpoints at steps 3, 4, 6, 8, 9, 12."""


@pytest.fixture(scope="module")
def recipe_file(tmp_path_factory) -> Path:
    """``TINY_RECIPE`` as a YAML file."""
    path = tmp_path_factory.mktemp("recipes") / "tiny_ts.yaml"
    path.write_text(yaml.safe_dump(TINY_RECIPE))
    return path


@pytest.fixture(scope="module")
def finished_run(recipe_file, tmp_path_factory) -> Path:
    """A complete run of ``recipe_file`` through ``maelre fit`` (once per test module)."""
    from maelre.cli import main

    run_dir = tmp_path_factory.mktemp("runs") / "full"
    assert main(["fit", str(recipe_file), "--run-dir", str(run_dir), "--no-progress"]) == 0
    return run_dir


@pytest.fixture
def crash_after():
    """``crash_after(step)``: a Lightning callback raising ``RuntimeError("simulated crash")``
    right after optimizer step ``step``, for the kill-and-resume tests."""
    from crash_after import CrashAfter

    return CrashAfter


@pytest.fixture(scope="session")
def benchmark_script():
    """``benchmark_script("compile_ab")``: a script of ``benchmarks/`` imported as a module (scripts are not a package)."""
    import importlib.util
    import sys

    def load(name: str):
        path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
        spec.loader.exec_module(module)
        return module

    return load
