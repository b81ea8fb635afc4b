"""The ``auto`` merge plan: per-merge token counts derived from the input length.

MAELRE's rule (Parag & Elgammal 2025) is to run an approximate attention while a block
sees more than ``threshold`` tokens and exact attention once merging has brought the
sequence down to it. ``AutoPlan`` makes that happen: a sequence of ``n`` real tokens
reaches ``threshold`` within the ``events`` merges that precede the first exact block,
removing tokens geometrically (the same fraction at every merge) and never more than
bipartite matching can remove (half of the unprotected tokens).

The plan depends only on a row's own length, so a sequence merges the same alone as in
a padded batch. Row targets are read from a table (``targets_table``) built on the host
once per length bound: no device value ever travels back to the host.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import torch
from torch import Tensor


class MergePlanError(ValueError):
    """The plan cannot reach the switch threshold with this depth, merge sites and length."""


def reachable(n: int, events: int, protected: int = 0) -> int:
    """Fewest tokens left after ``events`` maximal bipartite merges of ``n`` tokens (``protected`` never merge)."""
    for _ in range(events):
        removed = max(0, (n - protected) // 2)
        if removed == 0:  # nothing more can merge
            break
        n -= removed
    return n


@dataclass(frozen=True)
class AutoPlan:
    """Targets for ``events`` merges that take any length down to ``threshold``.

    Attributes:
        threshold: token count at which exact attention starts (the switch threshold).
        events: merges before the first exact-attention block.
        total_events: all merge sites of the model; merges after ``events`` keep the count.
        protected: tokens that never merge (1 for a CLS token).
        min_tokens: never go below this many tokens.
    """

    threshold: int
    events: int
    total_events: int
    protected: int = 0
    min_tokens: int = 1
    _tables: dict = field(default_factory=dict, compare=False, hash=False, repr=False)

    def targets(self, n: int) -> tuple[int, ...]:
        """Token count after each of the ``total_events`` merges for a sequence of ``n`` tokens.

        Raises:
            MergePlanError: ``n`` cannot reach ``threshold`` in ``events`` merges.
        """
        return _targets(self.threshold, self.events, self.total_events, self.protected, self.min_tokens, n)

    def feasible(self, n: int) -> bool:
        """Whether a sequence of ``n`` tokens reaches ``threshold`` within ``events`` merges."""
        return _feasible(self.threshold, self.events, self.protected, self.min_tokens, n)

    def check(self, n: int) -> None:
        """Raise ``MergePlanError`` unless a sequence of ``n`` tokens reaches the threshold in time."""
        self.targets(n)

    def targets_table(self, max_n: int, device: torch.device) -> Tensor:
        """``[max_n + 1, total_events]`` long: row ``n`` holds ``targets(n)`` (cached per device, grown on demand)."""
        key = str(device)
        table = self._tables.get(key)
        if table is None or table.shape[0] <= max_n:
            self.check(max_n)
            size = max_n + 1
            if table is not None and self.feasible(2 * table.shape[0] - 1):  # grow geometrically, never past a plannable length
                size = max(size, 2 * table.shape[0])
            rows = [self.targets(n) if n > 0 else (0,) * self.total_events for n in range(size)]
            table = torch.tensor(rows, dtype=torch.long).to(device)
            self._tables[key] = table
        return table


def _feasible(threshold: int, events: int, protected: int, min_tokens: int, n: int) -> bool:
    return n <= max(threshold, min_tokens, protected) or reachable(n, events, protected) <= threshold


@lru_cache(maxsize=4096)
def _targets(threshold: int, events: int, total: int, protected: int, min_tokens: int, n: int) -> tuple[int, ...]:
    floor = max(threshold, min_tokens, protected)
    if n <= floor:
        return (n,) * total
    if not _feasible(threshold, events, protected, min_tokens, n):
        raise MergePlanError(
            f"{n} tokens cannot reach the switch threshold {threshold} in {events} merges: bipartite matching removes at "
            f"most half the tokens per merge, so {events} merges leave at least {reachable(n, events, protected)}"
        )
    keep = (floor / n) ** (1.0 / events)  # the same fraction kept at every merge
    plan = [max(floor, math.ceil(n * keep ** (e + 1) - 1e-9)) for e in range(events)]
    plan[-1] = floor
    for e in range(events - 2, -1, -1):  # a merge keeps at least ceil((c + protected) / 2) of c tokens
        plan[e] = min(plan[e], 2 * plan[e + 1] - protected)
    out = plan + [floor] * (total - events)
    return tuple(out)


def min_events(n: int, threshold: int, protected: int = 0) -> int:
    """Fewest merges that bring ``n`` tokens down to ``threshold``."""
    events = 0
    while n > threshold:
        nxt = n - max(0, (n - protected) // 2)
        if nxt == n:
            raise MergePlanError(f"cannot merge below {n} tokens (protected={protected})")
        n, events = nxt, events + 1
    return events
