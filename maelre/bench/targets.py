"""A benchmark target's verdict, shared by the efficiency benchmark and the leaderboard.

Each tool owns its targets: ``maelre.bench.efficiency_targets`` and ``maelre.bench.lra_targets``.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TargetCheck:
    """One efficiency target: ``verdict`` is ``"PASS"``, ``"MISS"`` or ``"not measured"``."""

    name: str
    goal: str
    verdict: str
    detail: str
