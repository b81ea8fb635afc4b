"""Accuracy against cost: per task, which backbones are on the Pareto front of test accuracy
against training GPU-seconds and against peak memory (a table and a two-panel PNG).

A row's GPU-seconds are ``steps x alone_step_ms / 1000`` when every row of its task carries
``alone_step_ms`` (a train step timed with the GPU to itself), else its ``train_seconds`` when
every row has one, else the alone step time where a row has one and no GPU-seconds where it has
not: one task never mixes the two, because a lower bound timed alone and a wall time on a shared
GPU do not compare. Those were wall
time while ``concurrent_runs`` runs shared the GPU, so with more than one they overstate the
row's own cost: the table says "shared wall" and the plot draws the point hollow. Peak memory
(CUDA max allocated) is per process, so sharing does not inflate it.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maelre.bench.lra_results import DONE_STATUSES, concurrent_runs
from maelre.bench.report import atomic_path, format_number, markdown_table

MIB = 2**20
AXES = (("gpu_seconds", "train GPU-seconds"), ("peak_mib", "peak memory (MiB)"))
"""The cost axes: point attribute, axis label."""
FRONT_MARK, NO_VALUE = "★", "—"


def _number(value: Any) -> float | None:
    """``value`` as a finite float, else ``None`` (missing, NaN, not a number)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def pareto_front(points: Sequence[tuple[float | None, float | None]]) -> list[bool]:
    """For each ``(accuracy, cost)`` point, whether no other point dominates it.

    ``j`` dominates ``i`` when it is at least as accurate and at most as costly, and better
    in one of the two. Identical points do not dominate each other, so both are on the front
    (the answer does not depend on the input order). A point missing either value is off
    the front and dominates nothing.
    """
    on = [False] * len(points)
    valid = sorted((c, -a, i) for i, (a, c) in enumerate(points) if _number(a) is not None and _number(c) is not None)
    best, k = -math.inf, 0  # best accuracy among strictly cheaper points; position in ``valid``
    while k < len(valid):
        cost, top = valid[k][0], -valid[k][1]  # the most accurate of this cost comes first
        while k < len(valid) and valid[k][0] == cost:
            on[valid[k][2]] = top > best and -valid[k][1] == top
            k += 1
        best = max(best, top)
    return on


@dataclass(frozen=True)
class CostPoint:
    """One backbone's result on a task, with its costs and where they came from."""

    backbone: str
    accuracy: float
    gpu_seconds: float | None
    cost_source: str  # "alone step time", "alone" (wall, GPU to itself), "shared wall"
    peak_mib: float | None
    steps: int | None
    epochs: int | None
    shared_runs: int

    @property
    def shared_cost(self) -> bool:
        return self.cost_source == "shared wall"


def trained_step_field(row: Mapping[str, Any]) -> str:
    """The row's alone step-time field for the way the run trained: ``alone_step_ms_compiled`` if its recipe compiled
    the step (``compile``, ``trainer.compile``), else ``alone_step_ms`` (eager)."""
    return "alone_step_ms_compiled" if row.get("compile") else "alone_step_ms"


def alone_seconds(row: Mapping[str, Any], field: str | None = None) -> float | None:
    """``steps x row[field]`` (a step time in ms measured alone) in seconds, ``None`` without either.

    ``field`` defaults to the step as the run trained (``trained_step_field``).
    """
    field = field or trained_step_field(row)
    steps, alone_ms = _number(row.get("steps")), _number(row.get(field))
    return None if steps is None or alone_ms is None else steps * alone_ms / 1000


def cost_point(row: Mapping[str, Any], source: str | None = None) -> CostPoint:
    """The cost point of a leaderboard row (``accuracy`` set).

    ``source``: ``"alone"`` (the alone-measured step time, no GPU-seconds without one), ``"wall"``
    (``train_seconds``), or ``None``: the step time measured alone if the row has one, else the wall time.
    """
    runs, steps, alone = concurrent_runs(row), row.get("steps"), alone_seconds(row)
    if source == "alone" or (source is None and alone is not None):
        seconds, source = alone, "alone step time"
    else:
        seconds, source = _number(row.get("train_seconds")), "shared wall" if runs > 1 else "alone"
    memory = _number((row.get("peak_memory") or {}).get("bytes"))
    return CostPoint(
        backbone=row["backbone"], accuracy=float(row["accuracy"]), gpu_seconds=seconds, cost_source=source if seconds is not None else NO_VALUE,
        peak_mib=None if memory is None else memory / MIB, steps=steps, epochs=row.get("epochs"), shared_runs=runs,
    )  # fmt: skip


def fronts(points: Sequence[CostPoint]) -> dict[str, list[bool]]:
    """Front membership of every point, per cost axis (``AXES``)."""
    return {axis: pareto_front([(p.accuracy, getattr(p, axis)) for p in points]) for axis, _ in AXES}


def _front_cell(on: bool, value: float | None) -> str:
    return NO_VALUE if value is None else (FRONT_MARK if on else "")


def pareto_table(points: Sequence[CostPoint]) -> str:
    """Markdown table: one row per backbone, its costs, how they were measured, front marks."""
    on = fronts(points)
    rows = [
        {
            "backbone": p.backbone, "acc": f"{p.accuracy:.2f}", "gpu_s": p.gpu_seconds, "source": p.cost_source,
            "mib": None if p.peak_mib is None else round(p.peak_mib), "steps": p.steps, "epochs": p.epochs,
            "gpu": f"shared ({p.shared_runs} runs)" if p.shared_runs > 1 else "alone",
            "front_s": _front_cell(on["gpu_seconds"][i], p.gpu_seconds), "front_mib": _front_cell(on["peak_mib"][i], p.peak_mib),
        }
        for i, p in enumerate(points)
    ]  # fmt: skip
    columns = [
        ("backbone", "backbone"), ("acc", "test acc %"), ("gpu_s", "train GPU-s"), ("source", "GPU-s from"),
        ("mib", "peak MiB"), ("steps", "steps"), ("epochs", "epochs"), ("gpu", "on the GPU"),
        ("front_s", "front: GPU-s"), ("front_mib", "front: memory"),
    ]  # fmt: skip
    return markdown_table(rows, columns, {"gpu_s": lambda v: format_number(None if v is None else round(v))})


def plot_pareto(points: Sequence[CostPoint], path: str | Path, title: str) -> Path:
    """Two panels (accuracy against GPU-seconds, against peak memory) as a PNG, written atomically.

    Front points are coloured and joined in cost order; every point carries its backbone's
    name; points whose GPU-seconds are shared wall time are hollow. Points missing a cost
    are listed under the panel instead.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    on = fronts(points)
    fig, axes = plt.subplots(1, len(AXES), figsize=(11, 4.6))
    for ax, (axis, label) in zip(axes, AXES):
        _draw_panel(ax, points, axis, on[axis])
        ax.set_xlabel(label)
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    notes = _footnotes(points)
    fig.tight_layout(rect=(0, 0.05 * len(notes), 1, 1))
    for i, note in enumerate(notes):
        fig.text(0.01, 0.05 * (len(notes) - 1 - i) + 0.01, note, fontsize=8, color="dimgray")
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return Path(path)


def _draw_panel(ax: Any, points: Sequence[CostPoint], axis: str, on: Sequence[bool]) -> None:
    drawn = [(p, front) for p, front in zip(points, on) if getattr(p, axis) is not None]
    if not drawn:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="gray")
        ax.set_xticks([])
        ax.set_yticks([])
        return
    line = sorted((getattr(p, axis), p.accuracy) for p, front in drawn if front)
    ax.plot(*zip(*line), "-", color="tab:blue", alpha=0.6, zorder=1)
    for k, (p, front) in enumerate(sorted(drawn, key=lambda d: getattr(d[0], axis))):
        color = "tab:blue" if front else "gray"
        hollow = axis == "gpu_seconds" and p.shared_cost
        ax.scatter(getattr(p, axis), p.accuracy, s=70 if front else 40, zorder=2, edgecolors=color, facecolors="none" if hollow else color)
        # labels alternate above and below so that neighbours in cost do not overprint
        ax.annotate(p.backbone, (getattr(p, axis), p.accuracy), textcoords="offset points", xytext=(5, 5 if k % 2 else -11), fontsize=8)
    ax.margins(0.15)  # room for the labels of the outermost points
    values = [getattr(p, axis) for p, _ in drawn]
    if min(values) > 0 and max(values) / min(values) > 20:
        ax.set_xscale("log")


def _footnotes(points: Sequence[CostPoint]) -> list[str]:
    notes = ["blue, joined: on the Pareto front (no other backbone is at least as accurate for less)."]
    shared = sorted({p.shared_runs for p in points if p.shared_cost})
    if shared:
        runs = "/".join(map(str, shared))
        notes.append(f"hollow: GPU-seconds are wall time while {runs} runs shared the GPU (inflated; the cost alone is lower).")
    for axis, label in AXES:
        missing = [p.backbone for p in points if getattr(p, axis) is None]
        if missing:
            notes.append(f"no {label}, not plotted: {', '.join(missing)}.")
    return notes


def task_points(rows: Sequence[Mapping[str, Any]]) -> list[CostPoint]:
    """Cost points of one task's rows, all on one cost source (never mixed): alone step times if every row has
    one, else wall times if every row has one, else alone step times where measured (the rest get no GPU-seconds)."""
    timed = [alone_seconds(r) is not None for r in rows]
    walled = all(_number(r.get("train_seconds")) is not None for r in rows)
    source = "alone" if all(timed) or (any(timed) and not walled) else "wall"
    return [cost_point(row, source) for row in rows]


def points_by_task(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[CostPoint]]:
    """Cost points of the finished rows that have a test accuracy, per task in row order."""
    tasks: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        if row.get("status") in DONE_STATUSES and _number(row.get("accuracy")) is not None:
            tasks.setdefault(row["task"], []).append(row)
    return {task: task_points(group) for task, group in tasks.items()}


def plot_name(task: str) -> str:
    """File name of a task's plot, written beside the leaderboard page."""
    return f"pareto_{task}.png"


def write_task_plots(rows: Sequence[Mapping[str, Any]], folder: str | Path, titles: Mapping[str, str] | None = None) -> list[Path]:
    """``pareto_<task>.png`` in ``folder`` for every task with results; returns the paths."""
    titles = titles or {}
    return [
        plot_pareto(points, Path(folder) / plot_name(task), f"{titles.get(task, task)}: accuracy against cost")
        for task, points in points_by_task(rows).items()
    ]
