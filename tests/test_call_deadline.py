"""Ending one call of a long run on time: ``trainer.stop_at``, ``stop_after_minutes`` counted from the call's start, SIGTERM."""
from __future__ import annotations

import copy
import json
import os
import signal
import time

import pytest
import torch
from lightning.pytorch.callbacks import Callback

import maelre.engine.runner as runner
from maelre.engine.callbacks import StepCheckpoint
from maelre.engine.checkpoint import latest_checkpoint, load_weights
from maelre.engine.fit_types import TrainerConfig
from maelre.recipe import parse_recipe

pytestmark = pytest.mark.usefixtures("torch_single_thread")

SETUP_SECONDS = 1.0
RECIPE = {  # 2 steps an epoch
    "data": {"dataset": {"name": "pathfinder", "n_train": 8, "n_val": 4, "n_test": 4}, "adapter": {"name": "pixels", "max_len": 1024},
             "batch_size": 4},
    "model": {"backbone": "transformer", "dim": 16, "depth": 1, "heads": 2},
    "trainer": {"max_epochs": 2, "enable_progress_bar": False, "accelerator": "cpu", "checkpoint_every_n_steps": 1000},
}


def _recipe(**trainer) -> dict:
    raw = copy.deepcopy(RECIPE)
    raw["trainer"] |= trainer
    return raw


@pytest.fixture
def slow_setup(monkeypatch):
    """Loading the data takes ``SETUP_SECONDS`` (as 96,000 ListOps rows did on the GPU machine)."""
    load = runner.load_run_data

    def slow_load(recipe):
        time.sleep(SETUP_SECONDS)
        return load(recipe)

    monkeypatch.setattr(runner, "load_run_data", slow_load)


def _same_weights(a, b) -> bool:
    ours, theirs = (load_weights(latest_checkpoint(d) / "model.safetensors") for d in (a, b))
    return ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in theirs)


def test_call_deadline_is_the_earlier_of_stop_at_and_stop_after_minutes():
    assert TrainerConfig().call_deadline(100.0) is None
    assert TrainerConfig(stop_after_minutes=2).call_deadline(100.0) == 220.0
    assert TrainerConfig(stop_at=150.0, stop_after_minutes=2).call_deadline(100.0) == 150.0
    assert TrainerConfig(stop_at=500.0, stop_after_minutes=2).call_deadline(100.0) == 220.0
    with pytest.raises(ValueError, match="stop_at"):
        TrainerConfig(stop_at=0)


def _assert_resume_matches_an_uninterrupted_run(tmp_path) -> None:
    """Resuming ``tmp_path/chunks`` to the end gives the weights of one uninterrupted run."""
    raw = _recipe()
    rest = runner.run_recipe(parse_recipe(raw), run_dir=tmp_path / "chunks", resume=True, progress=False)
    whole = runner.run_recipe(parse_recipe(raw), run_dir=tmp_path / "whole", progress=False)
    assert rest["global_step"] == whole["global_step"] == 4
    assert _same_weights(tmp_path / "chunks", tmp_path / "whole")


@pytest.mark.parametrize("limit", ["stop_at", "stop_after_minutes"])
def test_slow_setup_counts_so_the_call_stops_by_its_deadline_and_resumes_exactly(tmp_path, slow_setup, limit):
    deadline = time.time() + SETUP_SECONDS / 2  # passes while the data is still loading
    setting = {"stop_at": deadline} if limit == "stop_at" else {"stop_after_minutes": SETUP_SECONDS / 2 / 60}
    first = runner.run_recipe(parse_recipe(_recipe(**setting)), run_dir=tmp_path / "chunks", progress=False)
    # one step (every call makes progress), then a checkpoint and the stop; timed from the call's start,
    # not from the first step, so the slow setup used the budget up
    assert first["global_step"] == 1 and first["metrics"]["test/acc"] is not None
    assert latest_checkpoint(tmp_path / "chunks").name == "step-0000001"

    _assert_resume_matches_an_uninterrupted_run(tmp_path)


def test_a_cut_call_skips_the_test_when_test_partial_is_off_and_the_call_that_completes_the_budget_tests(tmp_path):
    run = tmp_path / "chunks"
    first = runner.run_recipe(parse_recipe(_recipe(stop_at=time.time() - 1, test_partial=False)), run_dir=run, progress=False)
    assert first["call_ended_early"] and first["global_step"] == 1  # one step, then the passed deadline stops it
    assert first["tested"] is False and first["metrics"]["test/acc"] is None and first["confusion_matrix"] is None
    # no epoch finished: the validation Lightning adds after the cut is not an epoch's and is not counted
    assert first["history"] == [] and first["metrics"]["val/best_acc"] is None
    assert not (run / "confusion_matrix.png").exists() and (run / "results.json").is_file()

    rest = runner.run_recipe(parse_recipe(_recipe(test_partial=False)), run_dir=run, resume=True, progress=False)
    assert rest["global_step"] == 4 and not rest["call_ended_early"]
    assert rest["tested"] is True and 0.0 <= rest["metrics"]["test/acc"] <= 1.0 and (run / "confusion_matrix.png").is_file()


class _SigtermAt(Callback):
    """Sends this process SIGTERM at the end of optimizer step ``step`` (as `kill -TERM PID` would)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_saves_a_checkpoint_that_resume_continues_exactly(tmp_path):
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)  # never let the signal end pytest itself
    try:
        with pytest.raises(SystemExit):  # Lightning's SIGTERMException ends the process after the step
            runner.run_recipe(parse_recipe(_recipe()), run_dir=tmp_path / "chunks", callbacks=[_SigtermAt(3)], progress=False)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert latest_checkpoint(tmp_path / "chunks").name == "step-0000003"  # mid-epoch, not only the epoch end's step 2
    _assert_resume_matches_an_uninterrupted_run(tmp_path)


def test_a_saved_recipe_keeps_no_deadline_for_a_later_call(tmp_path):
    import yaml

    runner.run_recipe(parse_recipe(_recipe(stop_at=time.time() + 600, max_epochs=1)), run_dir=tmp_path / "run", progress=False)
    saved = yaml.safe_load((tmp_path / "run" / "recipe.yaml").read_text())
    assert "stop_at" not in saved["trainer"] and parse_recipe(saved).trainer.stop_at is None


def test_results_say_when_the_calls_deadline_cut_the_budget_short(tmp_path):
    """An epoch the deadline cut counts as started, so 'epochs' alone would call a cut run finished."""
    cut = runner.run_recipe(parse_recipe(_recipe(stop_at=time.time() + 0.001)), run_dir=tmp_path / "cut", progress=False)
    assert cut["call_ended_early"] is True and cut["global_step"] == 1
    whole = runner.run_recipe(parse_recipe(_recipe()), run_dir=tmp_path / "whole", progress=False)
    assert whole["call_ended_early"] is False and whole["global_step"] == 4


class _DeadlineAt(Callback):
    """Moves the run's call deadline into the past at the end of optimizer step ``step`` (a cut at a chosen step)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            (step_ckpt,) = [cb for cb in trainer.callbacks if isinstance(cb, StepCheckpoint)]
            step_ckpt.deadline = 0.0


def _curve(result: dict) -> list[tuple]:
    return [(row["epoch"], row["step"], row.get("val/acc"), row.get("val/loss")) for row in result["history"]]


@pytest.mark.parametrize("cut", [1, 2, 3])  # mid-epoch, the first epoch's last step, mid-epoch of the second
def test_a_run_split_into_calls_keeps_the_curve_and_best_checkpoint_of_an_uninterrupted_run(tmp_path, cut):
    """The validation Lightning adds after a cut lands mid-epoch and the resumed call forgets it (the
    checkpoint precedes it); it used to be recorded and could become ``best``, replaced after the resume
    by a worse epoch's weights. Now neither the curve nor ``best`` depends on where the calls end."""
    raw = _recipe(max_epochs=3)
    whole = runner.run_recipe(parse_recipe(raw), run_dir=tmp_path / "whole", progress=False)
    first = runner.run_recipe(parse_recipe(raw), run_dir=tmp_path / "chunks", callbacks=[_DeadlineAt(cut)], progress=False)
    assert first["call_ended_early"] and first["global_step"] == cut
    assert _curve(first) == _curve(whole)[: cut // 2]  # only the epochs the cut call finished
    rest = runner.run_recipe(parse_recipe(raw), run_dir=tmp_path / "chunks", resume=True, progress=False)
    assert rest["global_step"] == whole["global_step"] == 6
    assert _curve(rest) == _curve(whole)
    best = [json.loads((tmp_path / run / "checkpoints" / "best" / "meta.json").read_text()) for run in ("chunks", "whole")]
    assert best[0]["global_step"] == best[1]["global_step"] and best[0]["metrics"]["val/acc"] == best[1]["metrics"]["val/acc"]
    assert rest["metrics"]["test/acc"] == whole["metrics"]["test/acc"] and _same_weights(tmp_path / "chunks", tmp_path / "whole")
