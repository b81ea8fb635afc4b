"""What a leaderboard sweep runs: ``SweepConfig`` (tasks, backbones, overrides, budget) and the overrides and command of each run.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from maelre.bench.lra_results import empty_row
from maelre.bench.lra_tasks import DEFAULT_BACKBONES, DEFAULT_TASKS, PRESETS, RESERVED_KEYS, TASKS
from maelre.registry import get_backbone_class
from maelre.suggest import did_you_mean


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
