"""The efficiency targets (speed-up and memory of MAELRE against full attention) checked against result rows.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from maelre.bench.efficiency_config import FULL_ATTENTION
from maelre.bench.targets import TargetCheck


def _lookup(rows: Iterable[Mapping[str, Any]], name: str, seq_len: int, mode: str) -> Mapping[str, Any] | None:
    return next((r for r in rows if r["backbone"] == name and r["seq_len"] == seq_len and r["mode"] == mode), None)


def _outcome(row: Mapping[str, Any] | None) -> str:
    """``"ok"``, ``"oom"`` (measured, or implied by a smaller N's OOM) or ``"missing"``."""
    if row is None:
        return "missing"
    if row["status"] == "ok":
        return "ok"
    if row["status"] in ("oom", "skipped_after_oom"):
        return "oom"
    return "missing"


def _oom_text(row: Mapping[str, Any]) -> str:
    return "OOM" if row["status"] == "oom" else f"OOM ({row['message']})"


def _speedup_check(
    name: str, goal: str, fast: Mapping[str, Any] | None, slow: Mapping[str, Any] | None, min_ratio: float, *, slow_oom_passes: bool
) -> TargetCheck:
    """``fast`` tokens/s over ``slow`` tokens/s >= ``min_ratio``; an OOM of ``fast`` misses."""
    outcome = (_outcome(fast), _outcome(slow))
    if outcome[0] == "oom":
        return TargetCheck(name, goal, "MISS", f"{fast['backbone']} {_oom_text(fast)} at N={fast['seq_len']}")
    if outcome == ("ok", "ok"):
        ratio = fast["tokens_per_s"] / slow["tokens_per_s"]
        detail = f"{ratio:.2f}x ({fast['tokens_per_s']:.3g} vs {slow['tokens_per_s']:.3g} tok/s)"
        return TargetCheck(name, goal, "PASS" if ratio >= min_ratio else "MISS", detail)
    if outcome == ("ok", "oom") and slow_oom_passes:
        detail = f"{slow['backbone']} {_oom_text(slow)}; {fast['backbone']} ran at {fast['tokens_per_s']:.3g} tok/s"
        return TargetCheck(name, goal, "PASS", detail)
    return TargetCheck(name, goal, "not measured", "needs a measured run of both cases")


def _memory_check(
    name: str, goal: str, main: Mapping[str, Any] | None, base: Mapping[str, Any] | None, max_ratio: float, gpu_memory_gib: float | None
) -> TargetCheck:
    """``main`` peak memory over ``base`` peak memory <= ``max_ratio``.

    If ``base`` ran out of memory its peak exceeded the GPU's memory, so
    ``main / gpu_memory_gib`` bounds the ratio from above: below ``max_ratio`` it passes,
    otherwise the ratio is unknown.
    """
    outcome = (_outcome(main), _outcome(base))
    mem_main = main.get("peak_mem_gib") if main else None
    mem_base = base.get("peak_mem_gib") if base else None
    if outcome[0] == "oom":
        return TargetCheck(name, goal, "MISS", f"{main['backbone']} {_oom_text(main)}")
    if outcome == ("ok", "ok") and mem_main is not None and mem_base:
        ratio = mem_main / mem_base
        return TargetCheck(name, goal, "PASS" if ratio <= max_ratio else "MISS", f"{ratio:.2f}x ({mem_main:.2f} vs {mem_base:.2f} GiB)")
    if outcome == ("ok", "oom") and mem_main is not None and gpu_memory_gib:
        bound = mem_main / gpu_memory_gib
        detail = f"{base['backbone']} {_oom_text(base)} on {gpu_memory_gib:.0f} GiB, {main['backbone']} used {mem_main:.2f} GiB: ratio < {bound:.2f}x"
        return TargetCheck(name, goal, "PASS" if bound <= max_ratio else "not measured", detail)
    return TargetCheck(name, goal, "not measured", "needs the peak memory of both cases")


def evaluate_targets(
    rows: Sequence[Mapping[str, Any]],
    *,
    main: str = "maelre",
    baseline: str = FULL_ATTENTION,
    gpu_memory_gib: float | None = None,
    mode: str = "train",
) -> list[TargetCheck]:
    """Check the efficiency targets against result rows (of ``mode``).

    1. ``main`` / ``baseline`` tokens/s at N=16K >= 3x (a baseline OOM passes);
    2. their peak-memory ratio at 16K <= 0.35x;
    3. ``main`` tokens/s at 64K over its own at 4K >= 0.6;
    4. at 64K the baseline runs out of memory or is >= 8x slower than ``main``.

    A target lacking the data it needs is ``"not measured"``, never a pass; an OOM of
    ``main`` is a miss. A ``skipped_after_oom`` row counts as out of memory (that
    backbone already ran out of memory at a smaller N with no more tokens per step).
    """

    def find(name: str, seq_len: int) -> Mapping[str, Any] | None:
        return _lookup(rows, name, seq_len, mode)

    return [
        _speedup_check(f"{mode} tokens/s at N=16K, {main} / {baseline}", ">= 3x", find(main, 16384), find(baseline, 16384), 3.0, slow_oom_passes=True),
        _memory_check(f"{mode} peak memory at N=16K, {main} / {baseline}", "<= 0.35x", find(main, 16384), find(baseline, 16384), 0.35, gpu_memory_gib),
        _speedup_check(f"{mode} tokens/s of {main}, N=64K / N=4K", ">= 0.6", find(main, 65536), find(main, 4096), 0.6, slow_oom_passes=False),
        _speedup_check(
            f"{mode} at N=64K: {baseline} OOM or >= 8x slower than {main}", "OOM or >= 8x", find(main, 65536), find(baseline, 65536), 8.0, slow_oom_passes=True
        ),
    ]
