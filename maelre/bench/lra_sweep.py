"""The leaderboard sweep: train every (task, backbone) pair, here or in child processes, and rewrite the results file after each row.
"""
from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from maelre.bench.efficiency_case import release_memory
from maelre.bench.lra_children import POLL_SECONDS, ChildRun, PlannedRun
from maelre.bench.lra_config import SweepConfig
from maelre.bench.lra_results import DESCRIPTION, DONE_STATUSES, describe_row, fill_from_recipe, fill_from_results, row_key, utc_now
from maelre.bench.lra_tasks import TASKS
from maelre.bench.report import read_json, write_json_atomic
from maelre.engine.runner import run_recipe
from maelre.recipe import load_recipe

Log = Callable[[str], None]


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
        fill_from_recipe(row, spec, recipe)
        fill_from_results(row, recipe, run_recipe(recipe, progress=config.progress))
    except Exception as err:  # noqa: BLE001  (a failing run must not end the sweep)
        row["status"] = "error"
        row["message"] = f"{type(err).__name__}: {err}"[:800]
        del err  # drop the traceback (and the model it references) before freeing memory
    release_memory(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    row["wall_seconds"] = time.perf_counter() - t0
    row["date"] = utc_now()
    return row


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
            "description": DESCRIPTION,
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
