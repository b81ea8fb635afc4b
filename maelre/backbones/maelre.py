"""MAELRE: Modality Agnostic Efficient Long Range Encoder (Parag & Elgammal 2025, arXiv 2507.19409).

Pre-norm transformer blocks that (1) progressively merge tokens inside the blocks by
ToMe bipartite soft matching (after the attention and/or the MLP sub-layer) and (2)
use an approximate attention (linear or Nystrom) while the token count N exceeds
``switch_threshold`` and exact SDPA once merging has brought N down to it.

Variable-length batches run without host syncs: every row merges ``r(n_i)`` of its own
``n_i`` real tokens, and the padded tensor shrinks by ``r(N)`` computed from its static
length (see ``maelre.layers.merge``). Tokens carry sizes (padding = 0); attention adds
``log(size)`` to the logits (proportional attention) and pooling is size-weighted, so a
sequence encodes the same alone as in a padded batch whenever the attention kinds agree.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache, partial

import torch
from torch import Tensor, nn

from maelre.backbones.base import Backbone, BackboneConfig, BackboneOutput, BlockInfo, dense_attention_flops
from maelre.layers import Block, drop_path_rates, exact_attention, weighted_mean
from maelre.layers.rope import rotary_kernel, row_angles
from maelre.layers.linear_attention import FEATURE_MAPS, FavorFeatureMap, LinearAttention
from maelre.layers.merge import bipartite_soft_matching, compaction_order, take_tokens
from maelre.layers.layout import hilbert_order
from maelre.layers.merge_plan import AutoPlan, MergePlanError, min_events, reachable
from maelre.layers.nystrom import NystromAttention
from maelre.registry import register_backbone

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


@lru_cache(maxsize=64)
def _auto_plan(threshold: int, events: int, total: int, protected: int, min_tokens: int) -> AutoPlan:
    """One ``AutoPlan`` (and so one cached target table) per distinct setting."""
    return AutoPlan(threshold, events, total, protected, min_tokens)


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(map(repr, choices))}")


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
    sites = len(MERGE_SITES[config.merge_site])
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


@dataclass
class TokenState:
    """Tokens between blocks: ``x [B, N, D]``, ``sizes [B, N]`` (0 = padding) and static flags.

    ``padded`` is False when every column is a real token (no key mask needed) and
    ``merged`` is False while all sizes are still 1 (no size bias needed); both are known
    without looking at the data, so the exact path can stay on FlashAttention.
    ``positions [B, N]`` (float, RoPE only) is each token's size-weighted mean input
    position. ``lengths [B]`` (long; ``None`` when unpadded) counts each row's tokens
    before any merge, and ``length`` is the padded count before any merge (a Python int):
    the ``"auto"`` schedule plans every row from its own length.
    """

    x: Tensor
    sizes: Tensor
    padded: bool
    length: int
    lengths: Tensor | None = None
    positions: Tensor | None = None
    merged: bool = False

    def kernel_kwargs(self, proportional: bool) -> dict[str, Tensor | None]:
        return {
            "key_bias": self.sizes.clamp_min(1.0).log() if proportional and self.merged else None,  # 0 at padding (masked)
            "key_mask": self.sizes > 0 if self.padded else None,
        }

    def with_x(self, x: Tensor) -> TokenState:
        return replace(self, x=x)


class MAELREBlock(Block):
    """A ``Block`` whose attention switches kernel by token count and which merges tokens after its sub-layers."""

    def __init__(self, config: MAELREConfig, index: int, drop_path: float, steps: list[MergeStep]) -> None:
        c = config
        super().__init__(c.dim, c.heads, c.mlp_ratio, c.dropout, drop_path, c.norm_eps)
        self.config = c
        self.sites = dict(zip(MERGE_SITES[c.merge_site], steps))
        head_dim = c.dim // c.heads
        if c.approx == "linear":
            self.approx = LinearAttention(head_dim, c.feature_map, c.num_features, seed=c.feature_seed + index)
        else:
            self.approx = NystromAttention(c.heads, c.num_landmarks, c.pinv_iterations, c.nystrom_conv_kernel)

    def attention_kind(self, n: int) -> str:
        return "exact" if n <= self.config.threshold else self.config.approx

    def attention_flops(self, n: int) -> float:
        if self.attention_kind(n) == "exact":
            return dense_attention_flops(n, n, self.config.dim)
        return self.approx.flops(n, self.config.dim)

    def planned_sizes(self, n: int, length: int) -> list[int]:
        """Token counts after each merge site of this block for ``n`` tokens of a sequence that had ``length`` before any merge."""
        counts = []
        for step in self.sites.values():
            n -= step.static_count(n, length)
            counts.append(n)
        return counts

    def kernel(self, t: TokenState):
        """The attention kernel for this state: approximate or exact by token count, RoPE folded in when on."""
        c = self.config
        if self.attention_kind(t.x.shape[1]) == "exact":
            kernel = partial(exact_attention, dropout_p=c.attn_dropout if self.training else 0.0)
        elif t.positions is not None and c.approx == "linear":  # RoPE in feature space
            return partial(self.approx, positions=t.positions, rope_base=c.rope_base)
        else:
            kernel = self.approx
        if t.positions is None:
            return kernel
        return rotary_kernel(kernel, row_angles(t.positions, c.dim // c.heads, c.rope_base))

    def forward(self, t: TokenState) -> TokenState:
        q, k, v = self.attn.qkv(self.norm1(t.x))
        out = self.kernel(t)(q, k, v, **t.kernel_kwargs(self.config.proportional_attention))
        t = t.with_x(t.x + self.drop_path1(self.attn.output(out)))
        keys = k.detach().mean(dim=1) if self.config.merge_metric == "keys" else None  # matching needs no gradient
        t, keys = self._merge(t, "attn", keys)
        t = t.with_x(self.mlp_residual(t.x))
        t, _ = self._merge(t, "mlp", keys)
        return t

    def _merge(self, t: TokenState, site: str, keys: Tensor | None) -> tuple[TokenState, Tensor | None]:
        """Merge at ``site`` if this block has a step there; keys (if used) are merged along to stay aligned."""
        step = self.sites.get(site)
        n = t.x.shape[1]
        removed = 0 if step is None or n < 2 else step.static_count(n, t.length)
        if removed == 0:
            return t, keys
        if t.padded:
            r = step.count((t.sizes > 0).sum(dim=1), t.lengths, t.length)
        else:
            r = removed  # unpadded rows all remove r(N)
        metric = t.x if keys is None else keys
        plan = bipartite_soft_matching(
            metric, t.sizes, r, n - removed, protect_first=self.config.pool == "cls", window=self.config.match_window
        )
        positions = None if t.positions is None else plan.merge(t.positions)
        merged = replace(t, x=plan.merge(t.x), sizes=plan.sizes, positions=positions, merged=True)
        return merged, None if keys is None else plan.merge(keys)


@register_backbone("maelre")
class MAELRE(Backbone):
    """MAELRE encoder: ``tokens [B, N, D], mask [B, N] -> pooled [B, D]``.

    Absolute positions are part of the adapter's tokens and are merged with them; with
    ``rope`` every token also carries its size-weighted mean position. The output
    ``states``/``sizes`` are the merged tokens (``N' <= N``); ``trace`` records per block
    the padded token count in and out, the attention kind, its FLOPs and, in ``extra``,
    the real-token counts and size totals of every row.
    """

    config_class = MAELREConfig
    uses_layout = True

    def __init__(self, config: MAELREConfig) -> None:
        super().__init__(config)
        c = config
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.dim)) if c.pool == "cls" else None
        steps = merge_steps(c)
        self.blocks = nn.ModuleList(
            MAELREBlock(c, i, dp, steps[i]) for i, dp in enumerate(drop_path_rates(c.drop_path, c.depth))
        )
        self.norm = nn.LayerNorm(c.dim, eps=c.norm_eps)
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)

    def _forward(self, tokens: Tensor, mask: Tensor | None, trace: bool, layout: tuple[int, int] | None = None) -> BackboneOutput:
        b, n = tokens.shape[:2]
        device = tokens.device
        order = None  # input position of every column; None = identity
        if layout is not None and self.config.grid_order == "hilbert":
            order = hilbert_order(*layout, device).expand(b, n)
        lengths = None
        if mask is not None:
            # real tokens first (A/B alternation and windows then see each row as it is alone)
            start = torch.arange(n, device=device).expand(b, n) if order is None else order
            order = start.gather(1, compaction_order(mask.gather(1, start)))
            mask = mask.gather(1, order)
            lengths = mask.sum(dim=1)
        x = tokens if order is None else take_tokens(tokens, order)
        if mask is not None:  # padding may hold anything, even NaN, so zero it
            x = torch.where(mask[..., None], x, 0.0)
        sizes = torch.ones(b, n, device=device) if mask is None else mask.float()
        positions = None
        if self.config.rope:
            positions = (torch.arange(n, device=device).expand(b, n) if order is None else order).float()
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(b, -1, -1).to(x.dtype), x], dim=1)
            sizes = torch.cat([sizes.new_ones(b, 1), sizes], dim=1)
            if positions is not None:
                positions = torch.cat([positions.new_full((b, 1), -1.0), positions], dim=1)  # just before position 0
            lengths = None if lengths is None else lengths + 1
        self.config.check_plan(x.shape[1])
        state = TokenState(x, sizes, padded=mask is not None, length=x.shape[1], lengths=lengths, positions=positions)
        infos = []
        for i, block in enumerate(self.blocks):
            before = state
            state = block(state)
            if trace:  # host syncs only here
                n_in = before.x.shape[1]
                extra = {
                    "real_in": (before.sizes > 0).sum(1).tolist(),
                    "real_out": (state.sizes > 0).sum(1).tolist(),
                    "size_sum": state.sizes.sum(1).tolist(),
                }
                infos.append(BlockInfo(i, n_in, state.x.shape[1], block.attention_kind(n_in), block.attention_flops(n_in), extra))
        x = self.norm(state.x)
        pooled = x[:, 0] if self.cls_token is not None else weighted_mean(x, state.sizes)
        return BackboneOutput(pooled, x, state.sizes, state.sizes > 0, infos)

    def plan(self, seq_len: int) -> list[BlockInfo]:
        """Per block for one sequence of ``seq_len`` tokens: N in and out, attention kind, FLOPs; ``extra["after_merges"]``.

        Raises:
            MergePlanError: the ``"auto"`` schedule cannot reach exact attention in time.
        """
        n = length = seq_len + (1 if self.cls_token is not None else 0)
        self.config.check_plan(n)
        infos = []
        for i, block in enumerate(self.blocks):
            counts = block.planned_sizes(n, length)
            n_out = counts[-1] if counts else n
            infos.append(BlockInfo(i, n, n_out, block.attention_kind(n), block.attention_flops(n), {"after_merges": counts}))
            n = n_out
        return infos

    def flops_report(self, seq_len: int) -> dict:
        """Attention FLOPs of this model vs a full-attention model of the same width and depth, for one sequence.

        Returns ``{"maelre", "full_attention", "ratio", "blocks"}`` (``blocks`` is ``plan(seq_len)``).
        """
        blocks = self.plan(seq_len)
        n = blocks[0].n_in
        full = self.config.depth * dense_attention_flops(n, n, self.config.dim)
        total = float(sum(b.attn_flops for b in blocks))
        return {"maelre": total, "full_attention": full, "ratio": total / full, "blocks": blocks}

    @torch.no_grad()
    def redraw_features(self, generator: torch.Generator | None = None) -> None:
        """Redraw every FAVOR+ projection (no-op for elu+1 or Nystrom)."""
        for module in self.modules():
            if isinstance(module, FavorFeatureMap):
                module.redraw(generator)
