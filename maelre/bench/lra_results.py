"""The leaderboard's results file: the keys every row has, filling a row from a finished run, merging results files, one-line descriptions.
"""
from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from maelre.bench.lra_tasks import GENERATED_DATASETS, TaskSpec
from maelre.recipe import Recipe
from maelre.stats import wilson_interval


DONE_STATUSES = ("ok", "time_limit")
"""Rows ``--resume`` keeps; ``time_limit``: trained until ``--max-minutes`` ran out, then tested."""
PARTIAL = "partial:"
"""How the message of a ``time_limit`` row starts when the run resumes in a later call (``lra_learn.py``, ``real_runs_summary.py``)."""
STATUSES = (*DONE_STATUSES, "error", "not_run")
ROW_KEYS = (
    "task", "backbone", "accuracy", "split", "steps", "train_seconds", "gpu", "params", "data", "dataset",
    "recipe", "command", "status", "message",
    "val_accuracy", "epochs", "samples", "full_test_split", "precision", "budget", "model", "backbone_config",
    "run_dir", "wall_seconds", "concurrent_runs", "peak_memory", "date",
)  # fmt: skip
"""Every row has all of these; ``accuracy`` and ``val_accuracy`` are percent; ``concurrent_runs``:
how many runs the sweep let share the device (``--jobs``; 1: one at a time); ``peak_memory``:
the run's ``{"kind", "bytes"}`` (CUDA max allocated, or CPU peak RSS). A row may also carry
``alone_step_ms``, a train step timed with the device to itself (``maelre.bench.lra_pareto``), and
``alone_step_ms_compiled``, the same step compiled, and ``compile``, the run's ``trainer.compile``
(which of the two is the step as it trained)."""


def accuracy_interval(row: Mapping[str, Any], confidence: float = 0.95) -> tuple[float, float] | None:
    """The Wilson interval of a row's test accuracy, in percent, from its count of test samples; ``None`` without both.

    Test sets here run from 300 (FSDD) to 25,000 examples (LRA Text): the same 1.6 points are a
    third of a standard error on one and six on another, so a table that ranks rows shows this.
    """
    n = (row.get("samples") or {}).get("test")
    accuracy = row.get("accuracy")
    if accuracy is None or not n or not 0 <= accuracy <= 100 + 1e-6:  # out of range: no interval rather than a broken page
        return None
    n = int(n)
    low, high = wilson_interval(min(round(accuracy * n / 100), n), n, confidence)
    return 100 * low, 100 * high


def interval_text(row: Mapping[str, Any]) -> str | None:
    """``accuracy_interval(row)`` as the tables print it (``"36.3-40.6"``), ``None`` without one."""
    ci = accuracy_interval(row)
    return None if ci is None else f"{ci[0]:.1f}-{ci[1]:.1f}"


DESCRIPTION = "maelre accuracy leaderboard; accuracy and val_accuracy are test/validation accuracy in percent"
"""``meta.description`` of a results file."""


def empty_row(task: str, backbone: str, *, recipe: str, command: str, status: str = "ok", message: str = "") -> dict[str, Any]:
    """A result row with every key present; measurements ``None`` until filled."""
    row: dict[str, Any] = dict.fromkeys(ROW_KEYS)
    row.update(task=task, backbone=backbone, split="test", recipe=recipe, command=command, status=status, message=message)
    return row


def row_key(row: Mapping[str, Any]) -> tuple[str, str]:
    return (row["task"], row["backbone"])


def merge_documents(documents: Sequence[Mapping[str, Any]], command: str = "") -> dict[str, Any]:
    """One results document from several (sweeps run on other machines or at other times).

    Rows are keyed by (task, backbone); a later document's row replaces an earlier one's,
    as a later sweep's row replaces an older one in its ``--out``. The sweep commands of
    every document are kept in order, then ``command`` (the merge itself), each once, where it
    ran last (a summary merged again each session would otherwise repeat).
    """
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    commands: list[str] = []
    for document in documents:
        for row in document["results"]:
            rows[row_key(row)] = dict(row)
        commands += document.get("meta", {}).get("commands", [])
    latest_first = dict.fromkeys(reversed([*commands, command]))
    meta = {"description": DESCRIPTION, "commands": list(reversed(latest_first)), "updated": utc_now()}
    return {"meta": meta, "results": list(rows.values())}


def utc_now() -> str:
    """The current UTC time as ISO 8601 to the second (row ``date``, meta ``updated``)."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def concurrent_runs(row: Mapping[str, Any]) -> int:
    """``row["concurrent_runs"]``; rows written before ``--jobs`` existed ran alone (1)."""
    return row.get("concurrent_runs") or 1


def data_provenance(task: TaskSpec, recipe: Recipe) -> str:
    """``"standin"``, ``"generated"`` (our generator, no ``root``) or ``"real"``."""
    if task.standin_for is not None:
        return "standin"
    if recipe.dataset_name() in GENERATED_DATASETS and recipe.data.dataset.get("root") is None:
        return "generated"
    return "real"


def dataset_label(task: TaskSpec, recipe: Recipe) -> str:
    """Human description of the data a run used (name, generator seed, stand-in note)."""
    settings = recipe.dataset_kwargs()
    label = recipe.dataset_name()
    if recipe.dataset_name() in GENERATED_DATASETS and settings.get("root") is None:
        label += f" (generated, seed {settings.get('seed', 0)})"
    if task.standin_for is not None:
        label += f", stand-in for {task.standin_for}"
    return label


def gpu_name(device: str) -> str:
    """``torch.cuda.get_device_name`` of a ``"cuda[:i]"`` device string, else ``"cpu"``."""
    device_ = torch.device(device)
    return torch.cuda.get_device_name(device_) if device_.type == "cuda" else "cpu"


def _percent(fraction: float | None) -> float | None:
    return None if fraction is None else 100.0 * float(fraction)


def planned_steps(recipe: Recipe, n_train: int) -> int | None:
    """Optimizer steps the recipe's step/epoch budget allows on one device (``None``: only time bounds it).

    A compiled run (``trainer.compile``) drops an epoch's last short batch (its shapes stay static), unless it is
    the only one, as ``maelre.engine.fit`` does.
    """
    trainer = recipe.trainer
    limits = [] if trainer.max_steps is None else [trainer.max_steps]
    if trainer.max_epochs is not None:
        batches = (n_train // recipe.data.batch_size or 1) if trainer.compile else math.ceil(n_train / recipe.data.batch_size)
        per_epoch = math.ceil(batches / trainer.accumulate_grad_batches)
        limits.append(trainer.max_epochs * per_epoch)
    return min(limits) if limits else None


def fill_from_recipe(row: dict[str, Any], task: TaskSpec, recipe: Recipe) -> dict[str, Any]:
    """Copy what ``recipe`` says about a run (data, precision, budget, model) into ``row``."""
    trainer = recipe.trainer
    row.update(
        data=data_provenance(task, recipe),
        dataset=dataset_label(task, recipe),
        precision=trainer.precision,
        budget={"max_steps": trainer.max_steps, "max_epochs": trainer.max_epochs, "max_time_minutes": trainer.max_time},
        model=dict(recipe.shared),
        backbone_config=recipe.model.backbone_config.get(recipe.model.backbone, {}),
    )
    return row


def fill_from_results(row: dict[str, Any], recipe: Recipe, results: Mapping[str, Any], gpu: str | None = None) -> dict[str, Any]:
    """Copy the leaderboard fields of a finished run (``run_recipe``'s ``results.json``) into ``row``.

    A run that took fewer steps than planned is ``"time_limit"`` when its training used
    up ``trainer.max_time``, else (early stopping) ``"ok"`` with a note. ``gpu`` names the
    device for results read on another machine (default: asked of this one's CUDA).
    """
    metrics, trainer = results["metrics"], recipe.trainer
    cap = recipe.data.max_eval_samples
    planned, steps = planned_steps(recipe, results["samples"]["train"]), results["global_step"]
    row.update(
        accuracy=_percent(metrics["test/acc"]),
        val_accuracy=_percent(metrics.get("val/best_acc")),
        steps=results["global_step"],
        epochs=results["epochs"],
        train_seconds=results["throughput"]["train_seconds"],
        gpu=gpu or gpu_name(results["environment"]["device"]),
        params=results["parameters"],
        samples=results["samples"],
        # A capped test set is complete only if it came out smaller than the cap.
        full_test_split=cap is None or results["samples"]["test"] < cap,
        run_dir=results["run_dir"],
        peak_memory=results.get("peak_memory"),
    )
    row["budget"] = {**(row["budget"] or {}), "planned_steps": planned}
    if planned is not None and steps < planned:
        if results.get("call_ended_early"):
            row["status"] = "time_limit"
            row["message"] = f"a call's deadline stopped it after {steps} of {planned} steps; it resumes with --resume"
        elif trainer.max_time is not None and results["fit_seconds"] >= 60 * trainer.max_time:
            row["status"] = "time_limit"
            row["message"] = f"stopped by the {trainer.max_time:g}-minute limit after {steps} of {planned} steps"
        else:
            row["message"] = f"stopped early after {steps} of {planned} steps"
    return row


def describe_row(row: Mapping[str, Any]) -> str:
    """One line: the pair, then its accuracy, steps and training time, or its status and message."""
    head = f"{row['task']} / {row['backbone']}: "
    if row["status"] not in DONE_STATUSES:
        return head + " ".join(f"{row['status']} {row['message']}".split())
    runs = concurrent_runs(row)
    shared = f" shared by {runs} runs" if runs > 1 else ""
    note = f" ({row['message']})" if row["message"] else ""
    accuracy = "not tested yet" if row.get("accuracy") is None else f"{row['accuracy']:.2f}% test accuracy"
    seconds = "training time unknown" if row.get("train_seconds") is None else f"{row['train_seconds']:.0f} s training"
    return head + f"{accuracy}, {row['steps']} steps, {seconds} on {row['gpu']}{shared}{note}"
