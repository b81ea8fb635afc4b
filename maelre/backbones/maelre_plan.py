"""MAELRE's merge schedule per block: ``MergeStep`` (tokens one merge site removes), ``merge_steps``, and the
switch threshold a data-sized model can reach (``reachable_threshold``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from maelre.backbones.maelre_config import MAELREConfig
from maelre.layers.merge_plan import AutoPlan, reachable


def reachable_threshold(kwargs: dict, seq_len: int) -> dict:
    """``kwargs`` of a MAELRE whose ``"auto"`` plan is feasible for ``seq_len`` tokens.

    If the config leaves ``switch_threshold`` unset and its depth cannot bring ``seq_len``
    tokens down to ``dim`` in time, the threshold is raised to the fewest tokens the
    merges can reach, so the last ``exact_blocks`` blocks still run exact attention. For
    callers that size the model from data (the scikit-learn estimator); recipes and the
    Python API keep the strict rule and raise ``MergePlanError`` instead.
    """
    config = MAELREConfig(**kwargs)
    if config.merge_schedule != "auto" or config.switch_threshold is not None:
        return kwargs
    plan = config.auto_plan()
    n = seq_len + plan.protected
    reach = reachable(n, plan.events, plan.protected)
    return kwargs if reach <= config.threshold else {**kwargs, "switch_threshold": reach}


@dataclass(frozen=True)
class MergeStep:
    """How many tokens one merge site removes from a sequence of ``n`` real tokens: ``r(n)``.

    ``"fraction"``: ``floor(value * n)``; ``"target"``: ``ceil((n - value) / remaining)``
    (``remaining`` merge sites left in the stage, this one included), 0 below the target;
    ``"auto"``: ``n - plan.targets(length)[event]``, where ``length`` is the row's token
    count before any merge. All are capped at ``floor((n - protected) / 2)`` (what
    bipartite matching can remove) and ``n - min_tokens``. ``r`` is non-decreasing and
    1-Lipschitz in ``n`` (and the auto targets are non-decreasing in ``length``), hence a
    padded batch can keep the columns of its longest possible row and every row fits.
    """

    schedule: str
    value: float = 0.0
    remaining: int = 1
    protected: int = 0
    min_tokens: int = 1
    plan: AutoPlan | None = None
    event: int = 0

    def count(self, n: Tensor, lengths: Tensor | None = None, bound: int = 0) -> Tensor:
        """``r(n)`` for a long tensor ``n`` (any shape, any device; exact integer arithmetic but for the fraction product).

        ``"auto"`` also needs ``lengths`` (each row's count before any merge, like ``n``)
        and ``bound`` (a Python int at least every length: the padded length).
        """
        if self.schedule == "fraction":
            r = torch.floor(n.double() * self.value).long()
        elif self.schedule == "target":
            r = torch.div((n - int(self.value)).clamp_min(0) + self.remaining - 1, self.remaining, rounding_mode="floor")
        else:
            r = n - self.plan.targets_table(bound, n.device)[lengths, self.event]
        cap = torch.minimum(torch.div(n - self.protected, 2, rounding_mode="floor"), n - self.min_tokens).clamp_min(0)
        return torch.minimum(r, cap)

    def static_count(self, n: int, length: int | None = None) -> int:
        """``r(n)`` for a Python int, in plain Python (no tensors, so no device sync nor graph break); ``length`` as in ``count``."""
        if self.schedule == "fraction":
            r = math.floor(n * self.value)  # the same float64 product as ``count``
        elif self.schedule == "target":
            r = -(-max(n - int(self.value), 0) // self.remaining)
        else:
            r = n - self.plan.targets(n if length is None else length)[self.event]
        return min(r, max(0, min((n - self.protected) // 2, n - self.min_tokens)))


def merge_steps(config: MAELREConfig) -> list[list[MergeStep]]:
    """The merge steps of every block, in the order of its merge sites."""
    sites = config.sites_per_block
    common = {"protected": int(config.pool == "cls"), "min_tokens": config.min_tokens}
    if config.merge_schedule == "auto":
        plan = config.auto_plan()
        events = [MergeStep("auto", plan=plan, event=e, **common) for e in range(plan.total_events)]
        return [events[i * sites : (i + 1) * sites] for i in range(config.depth)]
    if config.merge_schedule == "fraction":
        return [[MergeStep("fraction", f, **common)] * sites for f in config.block_fractions()]
    steps = []
    for depth, target in zip(config.stages(), config.stage_targets):
        total = depth * sites
        events = [MergeStep("target", target, remaining=total - e, **common) for e in range(total)]
        steps += [events[i * sites : (i + 1) * sites] for i in range(depth)]
    return steps
