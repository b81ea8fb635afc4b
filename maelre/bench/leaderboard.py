"""Accuracy leaderboard: every backbone on the Long Range Arena tasks (and FSDD) under one budget.

For each task (a recipe in ``recipes/``) and each backbone, the sweep runs the task's
recipe with ``model.backbone=<name>`` and the same overrides for every backbone: the
recipe fixes width, depth, heads, MLP ratio, optimizer and schedule; ``--budget-steps``
and ``--max-minutes`` fix the training budget. The only per-backbone settings are the
recipe's own ``model.backbone_config.<name>`` entries (ECP segment size, PerceiverAR
latents, ...); the padding multiple follows the backbone (see ``maelre.recipe``).

Each finished run appends a row to the results JSON (rewritten atomically after every
run, so a sweep cut short keeps what it finished). ``--resume`` skips pairs already
done; a failing run is recorded with status ``"error"`` and its message, and the sweep
goes on. The markdown leaderboard puts the published numbers (LRA paper, ECP paper)
beside ours and marks which of our rows ran on generated data or on
stand-in data. Method and reading guide: ``docs/benchmarks/leaderboard.md``.

``--jobs N`` (N > 1) trains up to N pairs at the same time, each in a child process
(``python -m maelre.bench.leaderboard`` for that pair alone, with the same options);
the parent merges each child's row as it ends. Every row records ``concurrent_runs``,
the N it ran under, since its ``train_seconds`` were measured while N runs shared the
device.

Run ``maelre lra --help`` (or ``python benchmarks/leaderboard.py --help``).
"""
from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import math
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from maelre.bench.efficiency import TargetCheck, parse_name_list, release_memory
from maelre.bench.report import markdown_table, read_json, write_json_atomic, write_text_atomic
from maelre.engine.runner import run_recipe
from maelre.recipe import Recipe, load_recipe
from maelre.registry import get_backbone_class
from maelre.suggest import did_you_mean

Log = Callable[[str], None]

# --------------------------------------------------------------------------- tasks

PRESETS: dict[str, tuple[str, ...]] = {
    # The sCIFAR-10 setting of the ECP paper (Mahmood & Huang 2024, Table 5), which is
    # also LRA's Image architecture: 3 layers, 4 heads, dim 64, MLP 128, 1,024 pixels.
    "ecp_scifar": ("model.dim=64", "model.depth=3", "model.heads=4", "model.mlp_ratio=2.0", "data.adapter.max_len=1024"),
}
"""Named override sets (``--preset NAME``); applied before ``--set``."""

STANDIN_IMAGES = "{name: digits, size: 32, seed: 0}"
"""Data of the ``scifar_standin`` task: scikit-learn's real handwritten digits (1,797 images,
8x8 upscaled to 32x32: a 1,024-pixel sequence of 10 classes, like grayscale CIFAR-10) in place
of CIFAR-10, which cannot be downloaded on an offline machine. Learnable, unlike generated
Pathfinder images at this budget, so the run shows the sCIFAR pipeline learning; but a much
easier task than CIFAR-10, so its accuracies are no CIFAR-10 estimate."""


@dataclass(frozen=True)
class TaskSpec:
    """One leaderboard column: a recipe plus the overrides that define the task.

    Attributes:
        name: the ``--tasks`` name (``"listops"``).
        recipe: recipe file name inside ``--recipes-dir``.
        title: column header.
        published_as: key of the published numbers it compares with (``None``: none apply).
        overrides: ``KEY=VALUE`` recipe overrides that are part of the task.
        standin_for: data set the task's data stands in for; its rows are ``"standin"``.
    """

    name: str
    recipe: str
    title: str
    published_as: str | None = None
    overrides: tuple[str, ...] = ()
    standin_for: str | None = None


TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in (
        TaskSpec("listops", "lra_listops.yaml", "ListOps", "listops"),
        TaskSpec("text", "lra_text.yaml", "Text", "text"),
        TaskSpec("retrieval", "lra_retrieval.yaml", "Retrieval", "retrieval"),
        TaskSpec("image", "lra_image.yaml", "Image", "image"),
        TaskSpec("scifar10", "scifar10.yaml", "sCIFAR-10 (ECP setting)", "image", PRESETS["ecp_scifar"]),
        TaskSpec("pathfinder", "lra_pathfinder.yaml", "Pathfinder", "pathfinder"),
        TaskSpec("pathx", "lra_pathx.yaml", "Path-X", "pathx"),
        TaskSpec("fsdd", "audio_fsdd.yaml", "FSDD (audio)"),
        TaskSpec(
            "scifar_standin", "scifar10.yaml", "sCIFAR stand-in (ECP setting)", None,
            (*PRESETS["ecp_scifar"], f"data.dataset={STANDIN_IMAGES}"), standin_for="grayscale CIFAR-10",
        ),
    )
}  # fmt: skip
"""Task name -> spec, in leaderboard column order."""

LRA_TASKS = ("listops", "text", "retrieval", "image", "pathfinder", "pathx")
"""Columns shown even without runs of ours (published numbers exist for them)."""
DEFAULT_TASKS = ("listops", "pathfinder", "fsdd")
DEFAULT_BACKBONES = ("maelre", "transformer", "ecp", "perceiver_ar")
GENERATED_DATASETS = frozenset({"listops", "pathfinder", "pathx"})
"""Loaders that draw the data with our generators when no ``root`` is given."""
RESERVED_KEYS = {
    "model.backbone": "--backbones",
    "output.run_dir": "--run-root",
    "output.versioned": "--run-root",
}
"""Override keys the sweep sets itself (and the option that controls each)."""


# --------------------------------------------------------------------------- published numbers

FAIL = "FAIL"
"""A published result where the model did not learn the task (LRA's Path-X)."""


@dataclass(frozen=True)
class PublishedResult:
    """Test accuracies (percent) a paper reports for one model, keyed by ``TaskSpec.published_as``."""

    model: str
    source: str
    accuracy: Mapping[str, float | str]


PUBLISHED: tuple[PublishedResult, ...] = (
    PublishedResult(
        "Transformer", "LRA paper (Tay et al. 2020), Table 1",
        {"listops": 36.37, "text": 64.27, "retrieval": 57.46, "image": 42.44, "pathfinder": 71.40, "pathx": FAIL},
    ),
    PublishedResult("Transformer + RoPE", "ECP paper (Mahmood & Huang 2024), Table 5", {"image": 51.32}),
    PublishedResult("ECP, 3 layers (dim 64, 4 heads, MLP 128)", "ECP paper (Mahmood & Huang 2024), Table 5", {"image": 59.32}),
    PublishedResult("ECP, 12 layers", "ECP paper (Mahmood & Huang 2024), Table 5", {"image": 64.42}),
)  # fmt: skip


# --------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class AccuracyTarget:
    """Test accuracy of ``backbone`` on ``task`` must reach ``minimum`` percent.

    ``official_test``: only a run on the data set's full official test split counts.
    """

    task: str
    backbone: str
    minimum: float
    name: str
    official_test: bool = False


TARGETS: tuple[AccuracyTarget, ...] = (
    AccuracyTarget("listops", "maelre", 40.0, "ListOps (generated), maelre test accuracy"),
    AccuracyTarget("pathfinder", "maelre", 75.0, "Pathfinder-32 (generated), maelre test accuracy"),
    AccuracyTarget("fsdd", "maelre", 97.0, "FSDD, maelre on the official test split", official_test=True),
)


# --------------------------------------------------------------------------- rows

DONE_STATUSES = ("ok", "time_limit")
"""Rows ``--resume`` keeps; ``time_limit``: trained until ``--max-minutes`` ran out, then tested."""
STATUSES = (*DONE_STATUSES, "error", "not_run")
ROW_KEYS = (
    "task", "backbone", "accuracy", "split", "steps", "train_seconds", "gpu", "params", "data", "dataset",
    "recipe", "command", "status", "message",
    "val_accuracy", "epochs", "samples", "full_test_split", "precision", "budget", "model", "backbone_config",
    "run_dir", "wall_seconds", "concurrent_runs", "date",
)  # fmt: skip
"""Every row has all of these; ``accuracy`` and ``val_accuracy`` are percent; ``concurrent_runs``:
how many runs the sweep let share the device (``--jobs``; 1: one at a time)."""


def empty_row(task: str, backbone: str, *, recipe: str, command: str, status: str = "ok", message: str = "") -> dict[str, Any]:
    """A result row with every key present; measurements ``None`` until filled."""
    row: dict[str, Any] = dict.fromkeys(ROW_KEYS)
    row.update(task=task, backbone=backbone, split="test", recipe=recipe, command=command, status=status, message=message)
    return row


def row_key(row: Mapping[str, Any]) -> tuple[str, str]:
    return (row["task"], row["backbone"])


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
    """Optimizer steps the recipe's step/epoch budget allows on one device (``None``: only time bounds it)."""
    trainer = recipe.trainer
    limits = [] if trainer.max_steps is None else [trainer.max_steps]
    if trainer.max_epochs is not None:
        per_epoch = math.ceil(math.ceil(n_train / recipe.data.batch_size) / trainer.accumulate_grad_batches)
        limits.append(trainer.max_epochs * per_epoch)
    return min(limits) if limits else None


def fill_from_results(row: dict[str, Any], recipe: Recipe, results: Mapping[str, Any]) -> dict[str, Any]:
    """Copy the leaderboard fields of a finished run (``run_recipe``'s ``results.json``) into ``row``.

    A run that took fewer steps than planned is ``"time_limit"`` when its training used
    up ``trainer.max_time``, else (early stopping) ``"ok"`` with a note.
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
        gpu=gpu_name(results["environment"]["device"]),
        params=results["parameters"],
        samples=results["samples"],
        # A capped test set is complete only if it came out smaller than the cap.
        full_test_split=cap is None or results["samples"]["test"] < cap,
        run_dir=results["run_dir"],
    )
    row["budget"] = {**(row["budget"] or {}), "planned_steps": planned}
    if planned is not None and steps < planned:
        if trainer.max_time is not None and results["fit_seconds"] >= 60 * trainer.max_time:
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
    return head + f"{row['accuracy']:.2f}% test accuracy, {row['steps']} steps, {row['train_seconds']:.0f} s training on {row['gpu']}{shared}{note}"


# --------------------------------------------------------------------------- the sweep


@dataclass
class SweepConfig:
    """What to run and under which budget.

    Attributes:
        tasks: ``TASKS`` names, run in this order (all backbones of a task, then the next task).
        backbones: registry names.
        overrides: ``KEY=VALUE`` recipe overrides for every run (``--set``), after the task's own.
        preset: a ``PRESETS`` name applied to every run, before ``overrides``.
        budget_steps: optimizer steps of every run (sets ``trainer.max_steps``, clears ``max_epochs``).
        max_minutes: wall-clock limit of one run's training (``trainer.max_time``).
        sweep_minutes: start a run only if it can finish (at ``max_minutes``) within this many
            minutes of the sweep's start; the others are written as ``"not_run"``.
        recipes_dir: folder of the task recipes.
        run_root: run directories go to ``run_root/<task>/<backbone>/version_N``.
        progress: show Lightning's progress bars.
    """

    tasks: list[str] = field(default_factory=lambda: list(DEFAULT_TASKS))
    backbones: list[str] = field(default_factory=lambda: list(DEFAULT_BACKBONES))
    overrides: list[str] = field(default_factory=list)
    preset: str | None = None
    budget_steps: int | None = None
    max_minutes: float | None = None
    sweep_minutes: float | None = None
    recipes_dir: str = "recipes"
    run_root: str = "runs/leaderboard"
    progress: bool = False

    def __post_init__(self) -> None:
        if not self.tasks:
            raise ValueError(f"no tasks given; choose from {', '.join(TASKS)}")
        for name in self.tasks:
            if name not in TASKS:
                raise ValueError(f"unknown task {name!r}{did_you_mean(name, TASKS)} Available: {', '.join(TASKS)}")
        if not self.backbones:
            raise ValueError("no backbones given; pass --backbones, e.g. maelre,transformer")
        for name in self.backbones:
            get_backbone_class(name)  # unknown names raise with a suggestion
        for what, names in (("tasks", self.tasks), ("backbones", self.backbones)):
            if len(set(names)) != len(names):
                raise ValueError(f"{what} listed twice: {names}")
        if self.preset is not None and self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; available: {', '.join(PRESETS)}")
        if self.budget_steps is not None and self.budget_steps < 1:
            raise ValueError(f"--budget-steps must be >= 1, got {self.budget_steps}")
        for name in ("max_minutes", "sweep_minutes"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be positive, got {value}")
        set_keys = {item.partition("=")[0].strip() for item in self.overrides}
        for key, option in RESERVED_KEYS.items():
            if key in set_keys:
                raise ValueError(f"--set {key}=... is set by the sweep; use {option} instead")
        budget_keys = {"trainer.max_steps": "budget_steps", "trainer.max_epochs": "budget_steps", "trainer.max_time": "max_minutes"}
        for key, option in budget_keys.items():
            if key in set_keys and getattr(self, option) is not None:
                raise ValueError(f"--set {key}=... conflicts with --{option.replace('_', '-')}; give the budget once")

    def recipe_path(self, task: str) -> Path:
        return Path(self.recipes_dir) / TASKS[task].recipe

    def run_overrides(self, task: str, backbone: str) -> list[str]:
        """The full override list of one run; identical for every backbone except ``model.backbone``.

        Order (later wins): the task's own, the preset, ``--set``, the budget, then the
        keys the sweep owns (backbone and run directory).
        """
        items = [*TASKS[task].overrides, *(PRESETS[self.preset] if self.preset else ()), *self.overrides]
        if self.budget_steps is not None:
            items += [f"trainer.max_steps={self.budget_steps}", "trainer.max_epochs=null"]
        if self.max_minutes is not None:
            items.append(f"trainer.max_time={self.max_minutes:g}")
        run_dir = Path(self.run_root) / task / backbone
        return [*items, f"model.backbone={backbone}", f"output.run_dir={run_dir.as_posix()}", "output.versioned=true"]

    def fit_command(self, task: str, backbone: str) -> str:
        """The ``maelre fit`` command that reproduces one run on its own."""
        parts = ["maelre", "fit", str(self.recipe_path(task))]
        for item in self.run_overrides(task, backbone):
            parts += ["--set", item]
        return shlex.join(parts)

    def blank_row(
        self, task: str, backbone: str, *, status: str = "ok", message: str = ""
    ) -> dict[str, Any]:
        """``empty_row`` of one pair of this sweep, with its recipe and ``maelre fit`` command."""
        return empty_row(
            task,
            backbone,
            recipe=str(self.recipe_path(task)),
            command=self.fit_command(task, backbone),
            status=status,
            message=message,
        )

    def cli_args(self) -> list[str]:
        """The ``maelre lra`` options that give this configuration back (``config_from_args``)."""
        args = ["--tasks", ",".join(self.tasks)]
        args += ["--backbones", ",".join(self.backbones)]
        for item in self.overrides:
            args += ["--set", item]
        optional = {
            "--preset": self.preset,
            "--budget-steps": self.budget_steps,
            "--max-minutes": self.max_minutes,
            "--sweep-minutes": self.sweep_minutes,
        }
        for option, value in optional.items():
            if value is not None:
                args += [option, str(value)]
        args += ["--recipes-dir", self.recipes_dir, "--run-root", self.run_root]
        return [*args, "--progress"] if self.progress else args


@contextmanager
def reuse_dataset_loads() -> Iterator[dict[str, Any]]:
    """Within the block, ``modalities.datasets.load_dataset`` calls with equal arguments load once.

    Every backbone of a task trains on the same data, and drawing a generated set
    (ListOps, Pathfinder) takes minutes, so the sweep loads it once per task instead of
    once per run. The engine looks ``load_dataset`` up when it loads a run's data, so the
    module attribute is swapped for a memoising wrapper for the block and restored after.
    Yields the cache (``"name|settings" -> DatasetSplits``).
    """
    import modalities.datasets as datasets

    original = datasets.load_dataset
    cache: dict[str, Any] = {}

    def load_once(name: str, /, **kwargs: Any) -> Any:
        key = f"{name.lower()}|{json.dumps(kwargs, sort_keys=True, default=repr)}"
        if key not in cache:
            cache[key] = original(name, **kwargs)
        return cache[key]

    datasets.load_dataset = load_once
    try:
        yield cache
    finally:
        datasets.load_dataset = original


def run_one(config: SweepConfig, task: str, backbone: str) -> dict[str, Any]:
    """Train and test one (task, backbone) pair; any exception becomes an ``"error"`` row."""
    spec = TASKS[task]
    row = config.blank_row(task, backbone)
    t0 = time.perf_counter()
    try:
        recipe = load_recipe(config.recipe_path(task), config.run_overrides(task, backbone))
        trainer = recipe.trainer
        row.update(
            data=data_provenance(spec, recipe),
            dataset=dataset_label(spec, recipe),
            precision=trainer.precision,
            budget={"max_steps": trainer.max_steps, "max_epochs": trainer.max_epochs, "max_time_minutes": trainer.max_time},
            model=dict(recipe.shared),
            backbone_config=recipe.model.backbone_config.get(backbone, {}),
        )
        fill_from_results(row, recipe, run_recipe(recipe, progress=config.progress))
    except Exception as err:  # noqa: BLE001  (a failing run must not end the sweep)
        row["status"] = "error"
        row["message"] = f"{type(err).__name__}: {err}"[:800]
        del err  # drop the traceback (and the model it references) before freeing memory
    release_memory(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    row["wall_seconds"] = time.perf_counter() - t0
    row["date"] = utc_now()
    return row


@dataclass(frozen=True)
class PlannedRun:
    """A (task, backbone) pair the sweep is about to train, number ``index`` of ``total``."""

    index: int
    total: int
    task: str
    backbone: str

    @property
    def pair(self) -> tuple[str, str]:
        return (self.task, self.backbone)

    @property
    def position(self) -> str:
        return f"[{self.index}/{self.total}]"

    @property
    def label(self) -> str:
        return f"{self.position} {self.task} / {self.backbone}"


CHILD_FILES = "sweep_run"
"""Stem of a child run's results JSON, page and log (``.json``, ``.md``, ``.log``), written
to ``RUN_ROOT/<task>/<backbone>/`` beside the pair's ``version_N`` run folders."""
POLL_SECONDS = 0.5
"""How often a concurrent sweep looks for child runs that have ended."""


def child_command(
    config: SweepConfig, task: str, backbone: str, out: Path, table: Path
) -> list[str]:
    """The command of one child run: this sweep's options for ``task`` x ``backbone`` alone.

    The parent keeps the sweep's time budget, so the child gets no ``--sweep-minutes``;
    its run is the one a serial sweep makes (same overrides, run folder and command).
    """
    alone = replace(config, tasks=[task], backbones=[backbone], sweep_minutes=None)
    module = [sys.executable, "-m", "maelre.bench.leaderboard"]
    return [*module, *alone.cli_args(), "--out", str(out), "--table", str(table)]


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def child_environment(jobs: int, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment of a child run: the CPU cores split evenly between ``jobs`` children.

    Every PyTorch process otherwise takes one intra-op thread per core; ``jobs`` of them
    (plus their data loaders) oversubscribe the CPU and starve CPU-side work such as
    audio features: on a 16-core H100 machine, four concurrent FSDD runs next to two
    Pathfinder runs made 47 steps in 2 minutes where one run alone makes 456 in 31 s.
    Thread counts the caller set are kept.
    """
    env = dict(os.environ if environ is None else environ)
    share = str(max(1, (os.cpu_count() or 1) // jobs))
    for name in THREAD_VARIABLES:
        env.setdefault(name, share)
    env["PYTHONUNBUFFERED"] = "1"  # keep the log in order
    return env


def log_tail(path: Path, lines: int = 6, chars: int = 600) -> str:
    """The last ``lines`` non-blank lines of a log file, at most ``chars`` characters."""
    text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
    kept = [line.rstrip() for line in text.splitlines() if line.strip()][-lines:]
    return "\n".join(kept)[-chars:] or "(empty)"


def describe_exit(code: int) -> str:
    """``"exited with code N"``, or ``"was killed by signal N"`` for a negative code."""
    return f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"


@dataclass
class ChildRun:
    """One pair training in a child process: its results JSON, its log and the process."""

    run: PlannedRun
    out: Path
    log_path: Path
    process: subprocess.Popen[bytes]
    started: float

    @classmethod
    def start(cls, config: SweepConfig, run: PlannedRun, jobs: int) -> ChildRun:
        """Start the child of ``run`` (removing a child result an older sweep left)."""
        folder = Path(config.run_root) / run.task / run.backbone
        folder.mkdir(parents=True, exist_ok=True)
        stem = folder / CHILD_FILES
        out, table, log_path = (stem.with_suffix(s) for s in (".json", ".md", ".log"))
        out.unlink(missing_ok=True)
        command = child_command(config, run.task, run.backbone, out, table)
        env = child_environment(jobs)
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        return cls(run, out, log_path, process, time.perf_counter())

    def finished(self) -> bool:
        return self.process.poll() is not None

    def result_row(self, config: SweepConfig) -> dict[str, Any]:
        """The row the child wrote, or an ``"error"`` row ending with its log if it wrote none."""
        row = self._written_row()
        if row is None:
            ended = describe_exit(self.process.returncode)
            message = f"the run's process {ended} without a result; its log ends:\n{log_tail(self.log_path)}"
            row = config.blank_row(*self.run.pair, status="error", message=message)
            row.update(wall_seconds=time.perf_counter() - self.started, date=utc_now())
        return row

    def _written_row(self) -> dict[str, Any] | None:
        try:
            rows = read_json(self.out)["results"]
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return None
        return next((row for row in rows if row_key(row) == self.run.pair), None)

    def stop(self) -> None:
        """End the child if it still runs (the sweep was interrupted)."""
        if self.finished():
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@dataclass
class Sweep:
    """One ``run_sweep`` call: its results document, the pairs due, and how they run.

    The document starts from ``out`` (rows of other pairs are kept) and is rewritten
    atomically after every row; ``clock`` (seconds) times ``sweep_minutes``.
    """

    config: SweepConfig
    out: Path
    command: str = ""
    resume: bool = False
    jobs: int = 1
    on_update: Callable[[dict[str, Any]], None] | None = None
    log: Log = print
    clock: Callable[[], float] = time.monotonic
    rows: dict[tuple[str, str], dict[str, Any]] = field(init=False)
    document: dict[str, Any] = field(init=False)
    start: float = field(init=False)

    def __post_init__(self) -> None:
        exists = self.out.exists()
        previous = read_json(self.out) if exists else {"meta": {}, "results": []}
        self.rows = {row_key(r): r for r in previous.get("results", [])}
        meta = {
            "description": "maelre accuracy leaderboard; accuracy and val_accuracy are test/validation accuracy in percent",
            "commands": [*previous.get("meta", {}).get("commands", []), self.command],
            "updated": utc_now(),
        }
        self.document = {"meta": meta, "results": list(self.rows.values())}
        self.start = self.clock()

    def due(self) -> Iterator[PlannedRun]:
        """The pairs to train, in order; each is checked only when the caller asks for it.

        With ``resume``, pairs done before are skipped. A pair that could not end (at
        ``max_minutes``) within ``sweep_minutes`` gets a ``"not_run"`` row, or keeps
        its older row. Callers ask for the next pair when it can start, so the time
        check sees the time it would start at.
        """
        pairs = list(itertools.product(self.config.tasks, self.config.backbones))
        for index, (task, backbone) in enumerate(pairs, 1):
            run = PlannedRun(index, len(pairs), task, backbone)
            old = self.rows.get((task, backbone))
            if self.resume and old is not None and old["status"] in DONE_STATUSES:
                self.log(f"{run.label}: done before, kept")
            elif self._time_left():
                yield run
            elif old is not None:  # an older result beats a "not run" placeholder
                self.log(f"{run.label}: no time left, older row kept")
            else:
                self.record(run, self._not_run_row(run))

    def _time_left(self) -> bool:
        """Whether a run started now can end (at ``max_minutes``) within ``sweep_minutes``."""
        elapsed_minutes = (self.clock() - self.start) / 60
        limit, run_minutes = self.config.sweep_minutes, self.config.max_minutes or 0
        return limit is None or elapsed_minutes + run_minutes <= limit

    def _not_run_row(self, run: PlannedRun) -> dict[str, Any]:
        """The placeholder row of a pair the sweep's time budget leaves out."""
        message = f"sweep time budget of {self.config.sweep_minutes:g} min used up"
        return self.config.blank_row(*run.pair, status="not_run", message=message)

    def record(self, run: PlannedRun, row: dict[str, Any], note: str = "") -> None:
        """Store ``row`` (with ``concurrent_runs``), rewrite ``out``, log one line, call ``on_update``."""
        row["concurrent_runs"] = self.jobs
        self.rows[row_key(row)] = row
        self.document["results"] = list(self.rows.values())
        write_json_atomic(self.out, self.document)
        self.log(f"{run.position} {describe_row(row)}{note}")
        if self.on_update is not None:
            self.on_update(self.document)

    def run_serially(self) -> None:
        """Train the due pairs one after another in this process, loading each task's data once."""
        for _task, runs in itertools.groupby(self.due(), key=lambda run: run.task):
            with reuse_dataset_loads():
                for run in runs:
                    self.log(f"{run.label}: training ...")
                    self.record(run, run_one(self.config, run.task, run.backbone))

    def run_concurrently(self) -> None:
        """Train up to ``jobs`` due pairs at a time, each in a child process (``ChildRun``).

        The next pair is taken (and its time budget checked) only when a slot is free.
        Children still running when the sweep is interrupted are ended.
        """
        running: list[ChildRun] = []
        try:
            for run in self.due():
                child = ChildRun.start(self.config, run, self.jobs)
                self.log(f"{run.label}: training in a child, log {child.log_path}")
                running.append(child)
                while len(running) >= self.jobs:
                    running = self._collect_ended(running)
            while running:
                running = self._collect_ended(running)
        finally:
            for child in running:
                child.stop()

    def _collect_ended(self, running: list[ChildRun]) -> list[ChildRun]:
        """Wait until a child ends, record the rows of all that ended; return the others."""
        while not any(child.finished() for child in running):
            time.sleep(POLL_SECONDS)
        ended = [child for child in running if child.finished()]
        for child in ended:
            row = child.result_row(self.config)
            self.record(child.run, row, note=f" (log: {child.log_path})")
        return [child for child in running if child not in ended]


def run_sweep(
    config: SweepConfig,
    out: str | Path,
    *,
    command: str = "",
    resume: bool = False,
    jobs: int = 1,
    on_update: Callable[[dict[str, Any]], None] | None = None,
    log: Log = print,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Run every (task, backbone) pair, rewriting ``out`` atomically after each row.

    Rows of other pairs already in ``out`` are kept (the file accumulates the
    leaderboard across sweeps). A pair being run replaces its old row, except with
    ``resume=True``, which skips pairs whose row is done (``DONE_STATUSES``). Once
    ``sweep_minutes`` is used up, pairs not yet run get a ``"not_run"`` row (or keep
    their older row). ``on_update(document)`` is called after each row is saved;
    ``clock`` (seconds) times the sweep budget.

    ``jobs=1`` trains the pairs one after another in this process; ``jobs > 1`` trains
    up to ``jobs`` at a time, each in a child process (its data loaded there), and
    records each row as its child ends. Every row gets ``concurrent_runs=jobs``.

    Returns the document ``{"meta": {...}, "results": [...]}`` as written.
    """
    if jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {jobs}")
    sweep = Sweep(
        config, Path(out), command=command, resume=resume, jobs=jobs,
        on_update=on_update, log=log, clock=clock,
    )  # fmt: skip
    if jobs == 1:
        sweep.run_serially()
    else:
        sweep.run_concurrently()
    return sweep.document


# --------------------------------------------------------------------------- targets and report


def evaluate_targets(rows: Sequence[Mapping[str, Any]], targets: Sequence[AccuracyTarget] = TARGETS) -> list[TargetCheck]:
    """PASS/MISS per target from the result rows; ``"not run"`` when no usable run exists.

    A run counts only if it is done (``DONE_STATUSES``), not on stand-in data,
    and, for ``official_test`` targets, tested on the full test split.
    """
    by_key = {row_key(r): r for r in rows}
    checks = []
    for target in targets:
        row = by_key.get((target.task, target.backbone))
        if row is None:
            verdict, detail = "not run", f"no {target.backbone} run on {target.task} in the results"
        elif row["status"] not in DONE_STATUSES:
            verdict, detail = "not run", f"the run's status is {row['status']}: {row['message']}"[:240]
        elif row["data"] == "standin":
            verdict, detail = "not run", "the run used stand-in data, not the task's data"
        elif target.official_test and not row["full_test_split"]:
            verdict, detail = "not run", f"tested on a capped subset ({row['samples']['test']} samples, data.max_eval_samples), not the official test split"
        else:
            verdict = "PASS" if row["accuracy"] >= target.minimum else "MISS"
            detail = f"{row['accuracy']:.2f}% on {row['data']} data ({row['samples']['test']} test samples, {row['steps']} steps, {row['gpu']})"
        checks.append(TargetCheck(target.name, f">= {target.minimum:g}%", verdict, detail))
    return checks


DATA_MARKS = {"real": "", "generated": "†", "standin": "‡"}
TIME_LIMIT_MARK = "§"
BEGIN_MARKER = "<!-- leaderboard:begin (generated by `maelre lra`; anything up to the end marker is overwritten) -->"
END_MARKER = "<!-- leaderboard:end -->"


def _columns(rows: Sequence[Mapping[str, Any]]) -> list[TaskSpec]:
    ran = {r["task"] for r in rows}
    return [t for t in TASKS.values() if t.name in LRA_TASKS or t.name in ran]


def _our_cell(row: Mapping[str, Any] | None) -> str:
    if row is None:
        return "—"
    if row["status"] not in DONE_STATUSES:
        return row["status"].replace("_", " ")
    cell = f"{row['accuracy']:.2f}{DATA_MARKS[row['data']]}"
    return cell + (f" {TIME_LIMIT_MARK}" if row["status"] == "time_limit" else "")


def _published_cell(result: PublishedResult, task: TaskSpec) -> str:
    value = result.accuracy.get(task.published_as) if task.published_as else None
    if value is None:
        return "—"
    return value if isinstance(value, str) else f"{value:.2f}"


def _setup_text(row: Mapping[str, Any]) -> str:
    """Shared shape; the backbone's own keys; budget and precision."""
    if not row.get("model"):
        return "—"
    m = row["model"]
    parts = [f"dim {m.get('dim')}, depth {m.get('depth')}, heads {m.get('heads')}, MLP ratio {m.get('mlp_ratio')}"]
    if row.get("backbone_config"):
        parts.append(", ".join(f"{k}={v}" for k, v in row["backbone_config"].items()))
    budget = row.get("budget") or {}
    limits = [text.format(budget[key]) for key, text in BUDGET_TEXT.items() if budget.get(key) is not None]
    if row.get("precision"):
        limits.append(f"precision {row['precision']}")
    parts.append(", ".join(limits))
    return "; ".join(p for p in parts if p)


BUDGET_TEXT = {"max_steps": "max {} steps", "max_epochs": "max {} epochs", "max_time_minutes": "max {:g} min"}


def render_markdown(document: Mapping[str, Any], targets: Sequence[TargetCheck]) -> str:
    """The generated part of the leaderboard page: table with published numbers, targets, runs, commands."""
    meta, results = document.get("meta", {}), document["results"]
    # default backbones first, then others as they appear; rows in task, then backbone order
    backbones = list(dict.fromkeys([*(b for b in DEFAULT_BACKBONES if any(r["backbone"] == b for r in results)), *(r["backbone"] for r in results)]))
    tasks = list(TASKS)
    rows = sorted(results, key=lambda r: (tasks.index(r["task"]) if r["task"] in tasks else len(tasks), backbones.index(r["backbone"])))
    columns = _columns(rows)
    by_key = {row_key(r): r for r in rows}
    board = [{"model": p.model, "source": p.source, **{t.name: _published_cell(p, t) for t in columns}} for p in PUBLISHED]
    board += [
        {"model": f"**{b}** (ours)", "source": "this repository (runs below)", **{t.name: _our_cell(by_key.get((t.name, b))) for t in columns}}
        for b in backbones
    ]
    done = [r for r in rows if r["status"] in DONE_STATUSES]
    hardware = ", ".join(sorted({r["gpu"] for r in done})) or "—"
    dates = sorted(r["date"][:10] for r in done if r.get("date"))
    when = f"{dates[0]} to {dates[-1]}" if dates and dates[0] != dates[-1] else (dates[0] if dates else "—")
    run_rows = [
        {
            **r,
            "acc": None if r["accuracy"] is None else f"{r['accuracy']:.2f}",
            "train_s": None if r["train_seconds"] is None else f"{r['train_seconds']:.0f}",
            "shared": concurrent_runs(r),
            "state": r["status"] if not r["message"] else f"{r['status']}: {r['message'][:160]}",
            "setup": _setup_text(r),
            "day": (r.get("date") or "")[:10] or None,
        }
        for r in rows
    ]
    lines = [
        BEGIN_MARKER,
        "",
        "## Results",
        "",
        f"Test accuracy in percent. Our runs: {hardware}, {when}; results file updated {meta.get('updated', '—')}.",
        "Published numbers are copied from the papers (their data, budgets and hardware). Marks on our numbers:",
        f"{DATA_MARKS['generated']} generated data (our implementation of the published generator, seeded);",
        f"{DATA_MARKS['standin']} stand-in data, **not** the benchmark's data set and not comparable with published numbers;",
        f"no mark: the real data set; {TIME_LIMIT_MARK} training stopped by the time limit before its step budget.",
        "",
        markdown_table(board, [("model", "model"), ("source", "source"), *((t.name, t.title) for t in columns)]),
        "### Targets",
        "",
        markdown_table([vars(t) for t in targets], [("name", "target"), ("goal", "goal"), ("verdict", "result"), ("detail", "numbers")]),
        "### Runs",
        "",
        "train s: training time without validation; runs at once: how many runs the sweep let share the GPU (`maelre lra --jobs`).",
        "Train seconds of rows with more than 1 run at once were measured under that contention and can be longer than the run alone would take.",
        "",
        markdown_table(
            run_rows,
            [
                ("task", "task"), ("backbone", "backbone"), ("acc", "test acc %"), ("state", "status"), ("steps", "steps"),
                ("train_s", "train s"), ("shared", "runs at once"), ("params", "params"), ("data", "data"), ("dataset", "dataset"),
                ("setup", "model and budget"), ("gpu", "hardware"), ("day", "date"),
            ],
        ),  # fmt: skip
        "### Commands",
        "",
        "Each run on its own (`maelre fit`, same overrides the sweep applied):",
        "",
        *(f"- {r['task']} / {r['backbone']}: `{r['command']}`" for r in rows),
        "",
        "Sweeps that wrote the results file:",
        "",
        *(f"- `{c}`" for c in meta.get("commands", []) if c),
        "",
        END_MARKER,
    ]
    return "\n".join(lines) + "\n"


def splice_generated(text: str, block: str) -> str:
    """Put ``block`` between the markers of ``text`` (keeping the hand-written rest), or append it."""
    has_begin, has_end = BEGIN_MARKER in text, END_MARKER in text
    if has_begin != has_end:
        raise ValueError(f"the leaderboard page has only one of the markers {BEGIN_MARKER!r} / {END_MARKER!r}; restore the other or remove both")
    if not has_begin:
        return text.rstrip("\n") + "\n\n" + block
    head, rest = text.split(BEGIN_MARKER, 1)
    return head + block + rest.split(END_MARKER, 1)[1].lstrip("\n")


def write_report(document: Mapping[str, Any], table: str | Path) -> list[TargetCheck]:
    """Render the generated part into ``table`` (created if missing); return the target checks."""
    targets = evaluate_targets(document["results"])
    table = Path(table)
    text = table.read_text(encoding="utf-8") if table.exists() else "# Accuracy leaderboard\n"
    write_text_atomic(table, splice_generated(text, render_markdown(document, targets)))
    return targets


# --------------------------------------------------------------------------- command line

DEFAULT_OUT = "benchmarks/results/leaderboard.json"
DEFAULT_TABLE = "docs/benchmarks/leaderboard.md"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the leaderboard options on ``parser`` (used by ``maelre lra``)."""
    what = parser.add_argument_group("what to run")
    what.add_argument("--tasks", default=",".join(DEFAULT_TASKS), help=f"comma-separated tasks out of {', '.join(TASKS)} (default: %(default)s)")
    what.add_argument("--backbones", default=",".join(DEFAULT_BACKBONES), help="comma-separated registry names (default: %(default)s)")
    what.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="recipe override for every run (YAML value), repeatable")
    what.add_argument("--preset", choices=sorted(PRESETS), default=None, help="named override set for every run, applied before --set")
    what.add_argument("--recipes-dir", default="recipes", help="folder of the task recipes (default: %(default)s)")
    budget = parser.add_argument_group("budget (the same for every backbone)")
    budget.add_argument("--budget-steps", type=int, default=None, help="optimizer steps per run (default: the recipe's budget)")
    budget.add_argument("--max-minutes", type=float, default=None, help="training time limit per run, minutes (trainer.max_time)")
    budget.add_argument("--sweep-minutes", type=float, default=None, help="start a run only if it can end (at --max-minutes) within this many minutes")
    budget.add_argument(
        "--jobs", type=int, default=1, metavar="N",
        help="train up to N pairs at the same time, each in a child process (default: %(default)s, one after another in this process); "
        "their train seconds are then measured while they share the device",
    )  # fmt: skip
    files = parser.add_argument_group("output")
    files.add_argument("--out", default=DEFAULT_OUT, help="results JSON, rewritten after every run (default: %(default)s)")
    files.add_argument("--table", default=DEFAULT_TABLE, help="markdown page whose generated part is rewritten (default: %(default)s)")
    files.add_argument("--run-root", default="runs/leaderboard", help="run directories: RUN_ROOT/<task>/<backbone>/version_N (default: %(default)s)")
    files.add_argument("--resume", action="store_true", help="skip (task, backbone) pairs already done in --out")
    files.add_argument("--report-only", action="store_true", help="only re-render --table from --out")
    files.add_argument("--progress", action="store_true", help="show training progress bars")


def config_from_args(args: argparse.Namespace) -> SweepConfig:
    """Build a ``SweepConfig`` from parsed options (``ValueError`` on bad values)."""
    return SweepConfig(
        tasks=parse_name_list(args.tasks),
        backbones=parse_name_list(args.backbones),
        overrides=list(args.set),
        preset=args.preset,
        budget_steps=args.budget_steps,
        max_minutes=args.max_minutes,
        sweep_minutes=args.sweep_minutes,
        recipes_dir=args.recipes_dir,
        run_root=args.run_root,
        progress=args.progress,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the sweep (or ``--report-only``), write JSON and markdown; print target verdicts."""
    parser = argparse.ArgumentParser(
        prog="maelre lra",
        description="Accuracy leaderboard: every backbone on the LRA tasks (and FSDD) under the same budget, beside the published numbers.",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    # Recorded in the results; `python -m` is equivalent to benchmarks/leaderboard.py and `maelre lra`.
    command = shlex.join(["python", "-m", "maelre.bench.leaderboard", *sys.argv[1:]] if argv is None else ["maelre", "lra", *argv])
    try:
        if args.report_only:
            document = read_json(args.out)
        else:
            config = config_from_args(args)
            print(f"leaderboard: {', '.join(config.tasks)} x {', '.join(config.backbones)}", flush=True)
            document = run_sweep(
                config, args.out, command=command, resume=args.resume, jobs=args.jobs,
                on_update=lambda doc: write_report(doc, args.table), log=lambda s: print(s, flush=True),
            )  # fmt: skip
        targets = write_report(document, args.table)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    counts = {s: sum(r["status"] == s for r in document["results"]) for s in STATUSES}
    print("runs: " + (", ".join(f"{n} {s}" for s, n in counts.items() if n) or "none"))
    for t in targets:
        print(f"{t.verdict:>8}  {t.name} (goal {t.goal}): {t.detail}")
    print(f"results: {args.out}\ntable: {args.table}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
