"""The ``maelre`` CLI: fit / resume / test / predict / check / info / bench, and its error handling."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from maelre import list_backbones
from maelre.cli import main
from maelre.engine import latest_checkpoint, load_model, predict_proba
from maelre.engine.checkpoint import load_weights
from maelre.engine.runner import run_recipe
from maelre.recipe import RecipeError, load_recipe
from modalities import list_adapters
from modalities.datasets import list_datasets

pytestmark = pytest.mark.usefixtures("torch_single_thread")


def test_fit_writes_the_run_artifacts(finished_run):
    results = json.loads((finished_run / "results.json").read_text())
    assert results["samples"] == {"train": 53, "val": 14, "test": 60}
    assert 0.0 <= results["metrics"]["test/acc"] <= 1.0 and results["global_step"] == 12  # ceil(53 / 16) * 3
    assert results["parameters"] > 0 and results["throughput"]["tokens_per_second"] > 0
    assert results["environment"]["torch"] == torch.__version__ and results["peak_memory"]["bytes"] > 0
    for name in ("recipe.yaml", "confusion_matrix.png", "learning_curve.png"):
        assert (finished_run / name).stat().st_size > 0
    assert (finished_run / "checkpoints" / "best" / "model.safetensors").is_file()
    assert list((finished_run / "logs").rglob("metrics.csv")) and list((finished_run / "logs").rglob("events.out.tfevents*"))
    assert yaml.safe_load((finished_run / "recipe.yaml").read_text())["trainer"]["max_epochs"] == 3


def test_test_command_reproduces_the_run_metrics(finished_run, capsys):
    assert main(["test", str(finished_run), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    results = json.loads((finished_run / "results.json").read_text())
    assert metrics["acc"] == pytest.approx(results["metrics"]["test/acc"]) and metrics["n"] == 60
    assert main(["validate", str(finished_run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["n"] == 14


def test_fit_and_test_write_the_predictions_maelre_compare_reads(finished_run, tmp_path, capsys):
    """test_predictions.json: labels and predicted classes in the test set's order, agreeing with results.json."""
    from maelre.compare import load_predictions

    written = load_predictions(finished_run)
    results = json.loads((finished_run / "results.json").read_text())
    right = sum(p == y for p, y in zip(written["predictions"], written["labels"]))
    assert len(written["labels"]) == 60 and right / 60 == pytest.approx(results["metrics"]["test/acc"])
    assert written["classes"] == results["classes"]
    assert main(["test", str(finished_run), "--predictions", str(tmp_path / "again.json")]) == 0
    again = load_predictions(tmp_path / "again.json")
    assert again["labels"] == written["labels"] and again["predictions"] == written["predictions"]  # the same weights, the same answers
    capsys.readouterr()
    assert main(["compare", str(finished_run), str(tmp_path / "again.json")]) == 0
    assert "only A 0, only B 0" in capsys.readouterr().out


def test_predict_on_npy_matches_the_python_api(finished_run, tmp_path, capsys):
    rng = np.random.default_rng(0)
    arrays = rng.standard_normal((5, 24)).astype(np.float32)
    np.save(tmp_path / "x.npy", arrays)
    out = tmp_path / "pred.json"
    assert main(["predict", str(finished_run), "--npy", str(tmp_path / "x.npy"), "--out", str(out)]) == 0
    assert "x.npy[4]" in capsys.readouterr().out
    rows = json.loads(out.read_text())
    loaded = load_model(finished_run)
    expected = predict_proba(loaded.model, list(arrays), device="cpu")
    for row, proba in zip(rows, expected):
        assert row["class"] == loaded.classes[int(proba.argmax())]
        assert list(row["probabilities"].values()) == pytest.approx(proba.tolist(), abs=1e-6)
    np.save(tmp_path / "one.npy", arrays[2])  # a .npy file argument is one sample
    assert main(["predict", str(finished_run), str(tmp_path / "one.npy"), "--out", str(tmp_path / "p.csv")]) == 0
    header, line = (tmp_path / "p.csv").read_text().splitlines()
    assert header == "input,class," + ",".join(loaded.classes)
    assert [float(v) for v in line.split(",")[2:]] == pytest.approx(expected[2].tolist(), abs=1e-5)


def test_killed_fit_resumes_to_the_same_weights(recipe_file, tmp_path, crash_after):
    reference_dir, run_dir = tmp_path / "reference", tmp_path / "killed"
    assert main(["fit", str(recipe_file), "--run-dir", str(reference_dir), "--no-progress"]) == 0  # same threads as below
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_recipe(load_recipe(recipe_file), run_dir=run_dir, callbacks=[crash_after(8)], progress=False)
    assert latest_checkpoint(run_dir).name == "step-0000006"  # checkpoints every 3 steps: mid-epoch 2 of 3
    assert main(["fit", str(recipe_file), "--run-dir", str(run_dir), "--resume", "--no-progress"]) == 0
    final, reference = latest_checkpoint(run_dir), latest_checkpoint(reference_dir)
    assert final.name == reference.name == "step-0000012"
    ours, theirs = load_weights(final / "model.safetensors"), load_weights(reference / "model.safetensors")
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["resumed_from"].endswith("step-0000006")


def test_resume_rebuilds_the_backbone_the_run_started_with(tmp_path, crash_after, monkeypatch):
    """A library default that changed between two calls (here MAELRE's value_conv) must not change the resumed model."""
    from conftest import TINY_RECIPE

    from maelre.recipe import Recipe

    recipe_file = tmp_path / "tiny_maelre.yaml"
    recipe_file.write_text(yaml.safe_dump({**TINY_RECIPE, "model": {**TINY_RECIPE["model"], "backbone": "maelre", "depth": 2}}))
    run_dir = tmp_path / "run"
    with monkeypatch.context() as old_library:  # the first call: a library whose default had no value convolution
        kwargs = Recipe.backbone_kwargs
        old_library.setattr(Recipe, "backbone_kwargs", lambda self: {**kwargs(self), "value_conv": None})
        with pytest.raises(RuntimeError, match="simulated crash"):
            run_recipe(load_recipe(recipe_file), run_dir=run_dir, callbacks=[crash_after(8)], progress=False)
    assert main(["fit", str(recipe_file), "--run-dir", str(run_dir), "--resume", "--no-progress"]) == 0
    final = latest_checkpoint(run_dir)
    assert final.name == "step-0000012"
    assert json.loads((final / "model.json").read_text())["backbone_config"]["value_conv"] is None
    assert not any("value_conv" in key for key in load_weights(final / "model.safetensors"))


def test_resume_and_rerun_guards(recipe_file, finished_run, tmp_path, capsys):
    assert main(["fit", str(recipe_file), "--run-dir", str(finished_run), "--no-progress"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main(["fit", str(recipe_file), "--run-dir", str(tmp_path / "empty"), "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_check_prints_config_parameters_and_plan(recipe_file, capsys):
    assert main(["check", str(recipe_file), "--set", "model.backbone=maelre", "--set", "model.depth=3", "--length", "24"]) == 0
    out = capsys.readouterr().out
    assert "backbone: maelre" in out and "is valid" in out
    assert "plan at N=24" in out and "attention" in out
    rows = [line for line in out.splitlines() if line.startswith("│ 0 ")]
    assert rows and "24" in rows[0]
    last = [line for line in out.splitlines() if line.startswith("│ 2 ")]
    assert last and "exact" in last[0]  # the auto plan ends in exact attention


def test_check_names_the_fix_for_an_impossible_merge_plan(recipe_file, capsys):
    assert main(["check", str(recipe_file), "--set", "model.backbone=maelre"]) == 2  # 1 block cannot merge 32 tokens to 16
    err = capsys.readouterr().err
    assert "model.backbone_config.maelre" in err and "depth >= 2" in err and "switch_threshold >= 32" in err


def test_info_lists_the_registries(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for name in [*list_backbones(), *list_adapters(), *list_datasets()[:3], "audio_fsdd.yaml"]:
        assert name in out


def test_user_errors_exit_2_with_one_line(recipe_file, capsys):
    assert main(["check", str(recipe_file), "--set", "trainer.max_epoch=3"]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'max_epochs'" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert main(["check", "no/such/recipe.yaml"]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["predict", "no/such/run", "x.wav"]) == 2
    with pytest.raises(RecipeError):
        main(["--debug", "check", str(recipe_file), "--set", "trainer.max_epoch=3"])
    assert main(["bench", "speed"]) == 2
    with pytest.raises(SystemExit) as exit_info:  # argparse usage errors also exit with 2
        main(["fit"])
    assert exit_info.value.code == 2


def test_bench_delegates_to_the_efficiency_benchmark(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "efficiency", "--help"])
    assert exit_info.value.code == 0
    assert "--seq-lens" in capsys.readouterr().out


def test_lra_delegates_to_the_leaderboard(tmp_path, capsys):
    out = tmp_path / "lb.json"
    out.write_text((Path(__file__).resolve().parents[1] / "benchmarks/results/leaderboard.json").read_text())
    table = tmp_path / "lb.md"
    with pytest.raises(SystemExit) as err:
        main(["lra", "--help"])
    assert err.value.code == 0 and "--tasks" in capsys.readouterr().out
    assert main(["lra", "--report-only", "--out", str(out), "--table", str(table)]) == 0
    assert "FSDD" in table.read_text()
    with pytest.raises(SystemExit):  # other commands still reject unknown options
        main(["info", "--bogus"])


def test_a_sigterm_stop_exits_143_with_a_line(monkeypatch, capsys):
    """Lightning ends training on SIGTERM with a SystemExit of status 0; scripts need to tell it from success."""
    import maelre.cli as cli
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    def stopped(args):
        raise SIGTERMException

    def exits(args):
        raise SystemExit(3)

    monkeypatch.setattr(cli, "cmd_fit", stopped)
    assert main(["fit", "recipe.yaml"]) == 143
    assert "stopped by SIGTERM" in capsys.readouterr().err
    monkeypatch.setattr(cli, "cmd_fit", exits)
    with pytest.raises(SystemExit, match="3"):  # any other exit passes through
        main(["fit", "recipe.yaml"])
