"""benchmarks/compile_ab.py: the eager-against-compiled table (the runs themselves need a device)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def script(benchmark_script):
    return benchmark_script("compile_ab")


def _results(steady, test_acc):
    return {"global_step": 600, "fit_seconds": 40.0, "metrics": {"test/acc": test_acc, "val/best_acc": 0.3},
            "throughput": {"samples_per_second": 900.0, "steady_samples_per_second": steady},
            "peak_memory": {"bytes": 2**30}, "environment": {"device": "cuda:0"}}  # fmt: skip


def test_speedup_and_accuracy_difference_are_against_eager(script):
    rows = script.compare([script.mode_row("eager", _results(1000.0, 0.30)), script.mode_row("reduce-overhead", _results(2500.0, 0.31)),
                           script.mode_row("default", None, "exit 1: boom")])  # fmt: skip
    assert rows[0]["speedup"] == 1.0 and rows[1]["speedup"] == 2.5
    assert rows[1]["test_minus_eager"] == pytest.approx(1.0)
    text = script.table(rows, {"command": "c", "date": "d", "recipe": "r", "steps": 600, "device": "cuda:0"})
    assert "| reduce-overhead | 2500 | 2.50 |" in text and "+1.00" in text and "error: exit 1: boom" in text


def test_a_run_too_short_for_a_steady_rate_has_no_speedup(script):
    rows = script.compare([script.mode_row("eager", _results(None, 0.3)), script.mode_row("default", _results(800.0, 0.3))])
    assert rows[1]["speedup"] is None and "| default | 800 | — |" in script.table(rows, {"command": "c", "date": "d", "recipe": "r", "steps": 1, "device": "x"})


def test_each_mode_sets_its_compile_value_and_the_step_budget(script):
    eager = script.fit_command("recipes/lra_image.yaml", "eager", 600, Path("o/eager"), ["model.backbone=ecp"])
    graphs = script.fit_command("recipes/lra_image.yaml", "reduce-overhead", 600, Path("o/ro"), [])
    assert "trainer.compile=false" in eager and "trainer.max_steps=600" in eager and "model.backbone=ecp" in eager
    assert "trainer.compile=reduce-overhead" in graphs and graphs[graphs.index("--run-dir") + 1] == "o/ro"


def test_run_fit_past_its_limit_is_an_error_with_a_note(script):
    done = script.run_fit([sys.executable, "-c", "import time; print('started', flush=True); time.sleep(30)"], 1.0, "pytorch")
    assert done.returncode == -9
    assert "started" in done.stdout and "stopped after --mode-seconds 1" in done.stderr


@pytest.mark.parametrize("kernels, expected", [("pytorch", "0"), ("triton", "1")])
def test_each_kernels_choice_runs_the_fit_with_its_maelre_triton_value(script, kernels, expected):
    done = script.run_fit([sys.executable, "-c", "import os; print(os.environ['MAELRE_TRITON'])"], 30.0, kernels)
    assert done.stdout.strip() == expected


def test_rows_of_the_fused_kernels_are_named_after_them_and_eager_pytorch_is_the_baseline(script):
    assert script.row_name("eager", "pytorch") == "eager"
    assert script.row_name("reduce-overhead", "triton") == "reduce-overhead-triton"
    rows = script.compare([script.mode_row("eager-triton", _results(1100.0, 0.31)), script.mode_row("eager", _results(1000.0, 0.30))])
    assert rows[0]["speedup"] == pytest.approx(1.1) and rows[0]["test_minus_eager"] == pytest.approx(1.0)


def test_unknown_kernels_are_refused_with_the_choices(script, tmp_path, capsys):
    with pytest.raises(SystemExit):
        script.main(["recipes/scifar10.yaml", "--out", str(tmp_path), "--kernels", "cuda"])
    assert "unknown kernels cuda; use pytorch, triton" in capsys.readouterr().err
