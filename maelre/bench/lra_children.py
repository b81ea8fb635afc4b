"""Concurrent leaderboard runs (``--jobs N``): one child process per (task, backbone) pair, its command, environment, log and row.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from maelre.bench.lra_config import SweepConfig
from maelre.bench.lra_results import row_key, utc_now
from maelre.bench.report import read_json


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
