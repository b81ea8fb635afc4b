"""End to end on real speech: ``maelre fit recipes/audio_fsdd.yaml`` on a subset of FSDD learns the digits."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from maelre.cli import main

pytestmark = pytest.mark.usefixtures("torch_single_thread")

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "audio_fsdd.yaml"


def test_tiny_fsdd_run_beats_chance(shared_data, tmp_path, capsys):
    run_dir = tmp_path / "fsdd"
    overrides = [
        f"data.dataset.root={shared_data / 'fsdd'}",
        "data.max_train_samples=300",  # stratified subsets keep all ten digits
        "data.max_eval_samples=60",
        "data.adapter.fit_max_items=100",
        "model.depth=2",
        "trainer.max_epochs=3",
        "trainer.enable_progress_bar=false",
    ]
    args = ["fit", str(RECIPE), "--run-dir", str(run_dir)]
    for item in overrides:
        args += ["--set", item]
    assert main(args) == 0
    results = json.loads((run_dir / "results.json").read_text())
    assert results["dataset"] == "fsdd" and results["backbone"] == "maelre"
    assert results["samples"] == {"train": 300, "val": 60, "test": 60}
    assert results["metrics"]["test/acc"] >= 0.30, results["metrics"]  # chance is 0.10
    confusion = results["confusion_matrix"]
    assert len(confusion) == 10 and sum(map(sum, confusion)) == 60
    assert f"{results['metrics']['test/acc']:.4f}" in capsys.readouterr().out
