"""Result files shared by the benchmarks: atomic JSON, markdown tables and line plots.

Everything here is generic over "rows" (a list of flat dicts), so the efficiency
benchmark and the accuracy leaderboard render their results the same way.
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from maelre.fileio import atomic_path, read_json, write_json_atomic, write_text_atomic  # noqa: F401  (re-exported)

Formatter = Callable[[Any], str]


def format_number(value: Any, digits: int = 3) -> str:
    """Compact human format: ints as-is, floats to ``digits`` significant digits, ``None`` as an em dash."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if value != 0 and (abs(value) >= 10**6 or abs(value) < 10**-3):
            return f"{value:.{digits - 1}e}"
        if abs(value) >= 10**digits:  # e.g. 2129.7 -> "2130", not "2.13e+03"
            return f"{value:.0f}"
        return f"{value:.{digits}g}"
    return str(value)


def markdown_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str | tuple[str, str]],
    formatters: Mapping[str, Formatter] | None = None,
) -> str:
    """Render ``rows`` as a GitHub markdown table.

    Args:
        rows: one dict per table row.
        columns: keys to show, in order; a ``(key, header)`` pair sets the header text.
        formatters: per-key ``value -> str``; other cells go through ``format_number``.
            To show a combination of fields, add a derived key to the rows first.
    """
    if not columns:
        raise ValueError("markdown_table needs at least one column")
    formatters = dict(formatters or {})
    keys = [c if isinstance(c, str) else c[0] for c in columns]
    headers = [c if isinstance(c, str) else c[1] for c in columns]

    def cell(row: Mapping[str, Any], key: str) -> str:
        text = formatters.get(key, format_number)(row.get(key))
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in keys) + " |"]
    lines += ["| " + " | ".join(cell(row, k) for k in keys) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def plot_series_grid(
    rows: Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    *,
    x: str,
    metrics: Sequence[tuple[str, str]],
    x_label: str | None = None,
    series: str,
    facet: str | None = None,
    facet_values: Sequence[Any] | None = None,
    logx: bool = True,
    logy: bool = True,
    title: str | None = None,
    include: Callable[[Mapping[str, Any]], bool] | None = None,
) -> Path:
    """Save a grid of line plots as PNG: one row of subplots per facet value, one column per metric.

    Each subplot draws ``metric`` against ``x`` with one line per distinct ``series``
    value (sorted by ``x``). Rows where ``include(row)`` is False, or where the metric
    is missing/non-positive on a log axis, are not drawn.

    Args:
        rows: flat result dicts.
        path: output ``.png``; written atomically.
        x: key of the x value (e.g. ``"seq_len"``); ``x_label`` names its axis (default: the key).
        metrics: ``(key, axis label)`` per subplot column.
        series: key that names a line (e.g. ``"backbone"``).
        facet: key splitting the rows into subplot rows (e.g. ``"mode"``); None = one row.
        facet_values: facet values in display order (default: order of first appearance).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not metrics:
        raise ValueError("plot_series_grid needs at least one (metric, label) pair")
    kept = [r for r in rows if include is None or include(r)]
    if facet is None:
        facet_values = [None]
    elif facet_values is None:
        facet_values = list(dict.fromkeys(r.get(facet) for r in kept))
    facet_values = list(facet_values) or [None]
    names = list(dict.fromkeys(r.get(series) for r in kept))

    fig, axes = plt.subplots(len(facet_values), len(metrics), figsize=(5.5 * len(metrics), 4 * len(facet_values)), squeeze=False)
    for i, fv in enumerate(facet_values):
        group = [r for r in kept if facet is None or r.get(facet) == fv]
        for j, (metric, label) in enumerate(metrics):
            ax = axes[i][j]
            for name in names:
                points = sorted(
                    (r[x], r[metric])
                    for r in group
                    if r.get(series) == name and _plottable(r.get(x), logx) and _plottable(r.get(metric), logy)
                )
                if points:
                    ax.plot(*zip(*points), marker="o", label=str(name))
            if not ax.lines:
                ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="gray")
            elif logx:
                ax.set_xscale("log", base=2)
            if ax.lines and logy:
                ax.set_yscale("log")
            ax.set_xlabel(x_label or x)
            ax.set_ylabel(label)
            ax.set_title(label if fv is None else f"{label} ({fv})")
            ax.grid(True, which="both", alpha=0.3)
            if ax.lines:
                ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return Path(path)


def _plottable(value: Any, log: bool) -> bool:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value) and (value > 0 or not log)
