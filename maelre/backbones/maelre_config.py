"""MAELRE's hyper-parameters: ``MAELREConfig``, its choices and checks, and the cached ``"auto"`` merge plan.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from maelre.backbones.base import BackboneConfig
from maelre.layers.linear_attention import FEATURE_MAPS
from maelre.layers.merge_plan import AutoPlan, MergePlanError, min_events, reachable

APPROXIMATIONS = ("linear", "nystrom")
MERGE_SITES = {"attn": ("attn",), "mlp": ("mlp",), "both": ("attn", "mlp")}
MERGE_SCHEDULES = ("auto", "fraction", "target")
MERGE_METRICS = ("keys", "states")
GRID_ORDERS = ("hilbert", "raster")


@dataclass
class MAELREConfig(BackboneConfig):
    """MAELRE hyper-parameters (beyond ``BackboneConfig``).

    Attributes:
        switch_threshold: a block uses the approximate attention while its token count
            N > threshold, exact attention once N <= threshold. ``None`` = ``dim`` (the
            paper's rule: approximate while N exceeds the token dimension D).
        approx: approximate attention, ``"linear"`` or ``"nystrom"``.
        feature_map: linear attention's map, ``"elu"`` (elu+1) or ``"favor"`` (FAVOR+).
        num_features: FAVOR+ random features per head (``None`` = dh*log(dh)).
        feature_seed: seed of the FAVOR+ projections (block ``i`` uses ``seed + i``).
        num_landmarks: Nystrom landmarks m.
        pinv_iterations: Nystrom pseudo-inverse iterations.
        nystrom_conv_kernel: odd kernel of Nystrom's depthwise-conv skip on V (None = off).
        value_conv: odd kernel of a per-channel depthwise convolution over the sequence on
            V, added to the approximate attention's output in the blocks that run it
            (``maelre.layers.value_conv``); ``None`` = off. Exact blocks never use it: every
            block has one, so that a block runs the same weights whichever kernel a sequence's
            length picks (and checkpoints fit every schedule); DDP then looks for unused
            parameters. The default, 5, won the merge ablation's round 4 (real sCIFAR-10:
            49.4% against 43.9% without it, 2 seeds each; ``docs/benchmarks/merge_ablation.md``).
        merge_site: merge after the attention sub-layer (``"attn"``), after the MLP
            (``"mlp"``) or after both (``"both"``: two merges per block).
        merge_schedule: ``"auto"`` (the default: plan the merges from each input's length
            so that the last ``exact_blocks`` blocks see at most ``switch_threshold``
            tokens and run exact attention; see ``maelre.layers.merge_plan``),
            ``"fraction"`` (remove ``floor(f * n)`` of n tokens at every merge site) or
            ``"target"`` (reach ``stage_targets[s]`` tokens by the end of stage s, spread
            evenly over the stage's merge sites).
        exact_blocks: ``"auto"`` only: how many final blocks run exact attention. Every
            merge site before them removes the same fraction; none after them merges.
        merge_fraction: ``"fraction"`` only: f in [0, 0.5]; one value, one per block, or
            one per stage (``None`` = 0.25).
        stage_depths: blocks per stage (sums to ``depth``); ``None`` = one stage.
        stage_targets: token count to reach at the end of each stage (``"target"`` only).
        merge_metric: match by the block's attention keys (ToMe) or by the states.
        match_window: match each token only against tokens within this many positions
            (``O(N w)``); ``None`` = global ToMe matching (``O(N^2)`` score matrix).
        grid_order: for grid inputs (an adapter that reports ``layout=(H, W)``, e.g.
            images): ``"hilbert"`` reorders the tokens along a Hilbert curve before the
            first block so that merge windows hold 2-D neighbours; ``"raster"`` keeps the
            input order (vertical neighbours are then never merge candidates).
        proportional_attention: add ``log(size)`` to the attention logits.
        min_tokens: never merge a sequence below this many tokens.
    """

    switch_threshold: int | None = None
    approx: str = "linear"
    feature_map: str = "elu"
    num_features: int | None = None
    feature_seed: int = 0
    num_landmarks: int = 64
    pinv_iterations: int = 6
    nystrom_conv_kernel: int | None = None
    value_conv: int | None = 5
    merge_site: str = "both"
    merge_schedule: str = "auto"
    exact_blocks: int = 1
    merge_fraction: float | list[float] | None = None
    stage_depths: list[int] | None = None
    stage_targets: list[int] | None = None
    merge_metric: str = "keys"
    match_window: int | None = 32
    grid_order: str = "hilbert"
    proportional_attention: bool = True
    min_tokens: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_choice("approx", self.approx, APPROXIMATIONS)
        _check_choice("feature_map", self.feature_map, FEATURE_MAPS)
        _check_choice("merge_site", self.merge_site, tuple(MERGE_SITES))
        _check_choice("merge_schedule", self.merge_schedule, MERGE_SCHEDULES)
        _check_choice("merge_metric", self.merge_metric, MERGE_METRICS)
        _check_choice("grid_order", self.grid_order, GRID_ORDERS)
        if self.switch_threshold is not None and self.switch_threshold < 0:
            raise ValueError(f"switch_threshold must be >= 0 (0 = approximate attention everywhere) or None for dim, got {self.switch_threshold}")
        for name in ("num_landmarks", "pinv_iterations", "min_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_features is not None and self.num_features < 1:
            raise ValueError(f"num_features must be >= 1 or None (dh*log(dh)), got {self.num_features}")
        if self.match_window is not None and self.match_window < 1:
            raise ValueError(f"match_window must be >= 1 or None (global matching), got {self.match_window}")
        if self.nystrom_conv_kernel is not None and (self.nystrom_conv_kernel < 1 or self.nystrom_conv_kernel % 2 == 0):
            raise ValueError(f"nystrom_conv_kernel must be a positive odd int (the paper uses 33) or None, got {self.nystrom_conv_kernel}")
        if self.value_conv is not None and (self.value_conv < 1 or self.value_conv % 2 == 0):
            raise ValueError(f"value_conv must be a positive odd kernel length (e.g. 5) or None, got {self.value_conv}")
        depths = self.stages()
        if any(d < 1 for d in depths) or sum(depths) != self.depth:
            raise ValueError(f"stage_depths {self.stage_depths} must be positive and sum to depth={self.depth}")
        if not 1 <= self.exact_blocks <= self.depth:
            raise ValueError(f"exact_blocks must lie in [1, depth={self.depth}] (the final blocks that run exact attention), got {self.exact_blocks}")
        if self.merge_schedule == "target":
            if self.stage_targets is None or len(self.stage_targets) != len(depths):
                raise ValueError(
                    f"merge_schedule='target' needs one stage_targets entry per stage ({len(depths)} stages from stage_depths={self.stage_depths}), "
                    f"got {self.stage_targets}"
                )
            if any(t < 1 for t in self.stage_targets):
                raise ValueError(f"stage_targets must be positive token counts, got {self.stage_targets}")
        elif self.stage_targets is not None:
            raise ValueError("stage_targets is only used with merge_schedule='target'; set merge_schedule='target' or drop stage_targets")
        if self.merge_schedule != "fraction" and self.merge_fraction is not None:
            raise ValueError(
                f"merge_fraction applies to merge_schedule='fraction' only (merge_schedule={self.merge_schedule!r} plans the merges itself); "
                "set merge_schedule='fraction' or drop merge_fraction"
            )
        if self.merge_schedule == "fraction":
            fractions = self.block_fractions()
            if any(not 0.0 <= f <= 0.5 for f in fractions):
                raise ValueError(f"merge_fraction values must lie in [0, 0.5] (bipartite matching removes at most half), got {self.merge_fraction}")

    @property
    def threshold(self) -> int:
        """The resolved switch threshold (``dim`` when unset)."""
        return self.dim if self.switch_threshold is None else self.switch_threshold

    @property
    def sites_per_block(self) -> int:
        return len(MERGE_SITES[self.merge_site])

    def auto_plan(self) -> AutoPlan:
        """The ``"auto"`` schedule's plan (merges before the first of the ``exact_blocks`` final blocks)."""
        return _auto_plan(
            self.threshold, (self.depth - self.exact_blocks) * self.sites_per_block, self.depth * self.sites_per_block,
            int(self.pool == "cls"), self.min_tokens,
        )

    def check_plan(self, n: int) -> None:
        """Raise ``MergePlanError`` naming the fixes if a sequence of ``n`` tokens (CLS included) cannot reach exact attention in time."""
        if self.merge_schedule != "auto":
            return
        plan = self.auto_plan()
        try:
            plan.check(n)
        except MergePlanError:
            needed = min_events(n, self.threshold, plan.protected)
            first_exact = self.depth - self.exact_blocks
            fixes = [f"depth >= {self.exact_blocks + -(-needed // self.sites_per_block)}"]
            if self.merge_site != "both":
                fixes.append(f"merge_site='both' with depth >= {self.exact_blocks + -(-needed // 2)}")
            if needed <= (self.depth - 1) * self.sites_per_block:
                fixes.append(f"exact_blocks <= {self.depth - -(-needed // self.sites_per_block)}")
            fixes.append(f"switch_threshold >= {reachable(n, plan.events, plan.protected)}")
            raise MergePlanError(
                f"maelre: {n} tokens cannot reach exact attention (switch_threshold={self.threshold}) by block {first_exact} "
                f"(exact_blocks={self.exact_blocks} of depth={self.depth}): bipartite matching removes at most half the tokens per "
                f"merge, and {plan.events} merges (merge_site={self.merge_site!r}) leave at least {reachable(n, plan.events, plan.protected)}. "
                f"Fix one of: {'; '.join(fixes)}"
            ) from None

    def stages(self) -> list[int]:
        return [self.depth] if self.stage_depths is None else list(self.stage_depths)

    def block_fractions(self) -> list[float]:
        """``merge_fraction`` expanded to one value per block."""
        f = 0.25 if self.merge_fraction is None else self.merge_fraction
        if isinstance(f, (int, float)):
            return [float(f)] * self.depth
        f = list(f)
        if len(f) == self.depth:
            return [float(x) for x in f]
        depths = self.stages()
        if len(f) == len(depths):
            return [float(x) for x, d in zip(f, depths) for _ in range(d)]
        raise ValueError(f"merge_fraction has {len(f)} values; give one, one per block (depth={self.depth}) or one per stage ({len(depths)})")


@lru_cache(maxsize=64)
def _auto_plan(threshold: int, events: int, total: int, protected: int, min_tokens: int) -> AutoPlan:
    """One ``AutoPlan`` (and so one cached target table) per distinct setting."""
    return AutoPlan(threshold, events, total, protected, min_tokens)


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(map(repr, choices))}")
