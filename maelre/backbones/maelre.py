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

from dataclasses import dataclass, replace
from functools import partial

import torch
from torch import Tensor, nn

from maelre.backbones.base import Backbone, BackboneOutput, BlockInfo, dense_attention_flops
from maelre.backbones.maelre_config import (  # noqa: F401  (re-exported)
    APPROXIMATIONS,
    GRID_ORDERS,
    MERGE_METRICS,
    MERGE_SCHEDULES,
    MERGE_SITES,
    MAELREConfig,
    _auto_plan,
    _check_choice,
)
from maelre.backbones.maelre_plan import MergeStep, merge_steps, reachable_threshold  # noqa: F401  (re-exported)
from maelre.layers import Block, drop_path_rates, exact_attention, weighted_mean
from maelre.layers.rope import rotary_kernel
from maelre.layers.linear_attention import FavorFeatureMap, LinearAttention
from maelre.layers.merge import bipartite_soft_matching, compaction_order, replayed_merge, take_tokens
from maelre.layers.layout import hilbert_order
import maelre.layers.plan_graphs as plan_graphs
from maelre.layers.plan_graphs import PlanGraphs
from maelre.layers.merge_plan import MergePlanError  # noqa: F401  (re-exported)
from maelre.layers.nystrom import NystromAttention
from maelre.layers.value_conv import ValueConv
from maelre.registry import register_backbone


@dataclass
class TokenState:
    """Tokens between blocks: ``x [B, N, D]``, ``sizes [B, N]`` (0 = padding) and static flags.

    ``padded`` is False when every column is a real token (no key mask needed) and
    ``merged`` is False while all sizes are still 1 (no size bias needed); both are known
    without looking at the data, so the exact path can stay on FlashAttention.
    ``positions [B, N]`` (float, RoPE only) is each token's size-weighted mean input
    position. ``lengths [B]`` (long; ``None`` when unpadded) counts each row's tokens
    before any merge, and ``length`` is the padded count before any merge (a Python int):
    the ``"auto"`` schedule plans every row from its own length. ``log_sizes [B, N]`` is
    ``sizes.log()`` where the merge plan kernel computed it along (``None``: not computed).
    ``real [B, N]`` caches ``sizes > 0`` of a padded state once ``real_mask`` computed it
    (a state with new sizes starts without it).
    """

    x: Tensor
    sizes: Tensor
    padded: bool
    length: int
    lengths: Tensor | None = None
    positions: Tensor | None = None
    merged: bool = False
    log_sizes: Tensor | None = None
    real: Tensor | None = None

    def kernel_kwargs(self, proportional: bool) -> dict[str, Tensor | None]:
        return {
            "key_bias": self._log_sizes() if proportional and self.merged else None,
            "key_mask": self.real_mask() if self.padded else None,
        }

    def real_mask(self) -> Tensor:
        """``sizes > 0`` ``[B, N]`` bool, computed once for these sizes: the key mask, the merge's real tokens and their counts."""
        if self.real is None:
            self.real = self.sizes > 0
        return self.real

    def _log_sizes(self) -> Tensor:
        return self.sizes.log() if self.log_sizes is None else self.log_sizes  # -inf at padding (masked anyway)

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
        self.value_conv = None if c.value_conv is None else ValueConv(c.dim, c.value_conv)
        # MAELRE_PLAN_GRAPHS=1: each merge site replays its plan from CUDA graphs in eager CUDA steps
        self.plan_graphs = {site: PlanGraphs() for site in self.sites} if plan_graphs.ENABLED else {}
        self.replay_merges = plan_graphs.MERGES  # =merge: the merges in the same graph as the plan

    def attention_kind(self, n: int) -> str:
        return "exact" if n <= self.config.threshold else self.config.approx

    def attention_flops(self, n: int) -> float:
        if self.attention_kind(n) == "exact":
            return dense_attention_flops(n, n, self.config.dim)
        return self.approx.flops(n, self.config.dim) + (0.0 if self.value_conv is None else self.value_conv.flops(n))

    def merges(self, n: int, length: int) -> bool:
        """Whether a merge site of this block removes tokens from ``n`` (of a sequence that had ``length`` before any merge)."""
        return any(count < n for count in self.planned_sizes(n, length))

    def planned_sizes(self, n: int, length: int) -> list[int]:
        """Token counts after each merge site of this block for ``n`` tokens of a sequence that had ``length`` before any merge."""
        counts = []
        for step in self.sites.values():
            n -= step.static_count(n, length)
            counts.append(n)
        return counts

    def kernel(self, t: TokenState, kind: str):
        """The attention kernel for this state and ``kind`` (``attention_kind`` of its token count), RoPE folded in when on."""
        c = self.config
        if kind == "exact":
            kernel = partial(exact_attention, dropout_p=c.attn_dropout if self.training else 0.0)
        elif t.positions is not None and c.approx == "linear":  # RoPE in feature space
            return partial(self.approx, positions=t.positions, rope_base=c.rope_base)
        else:
            kernel = self.approx
        if t.positions is None:
            return kernel
        return rotary_kernel(kernel, t.positions, c.dim // c.heads, c.rope_base)

    def forward(self, t: TokenState) -> TokenState:
        kind = self.attention_kind(t.x.shape[1])
        q, k, v = self.attn.qkv(self.norm1(t.x))
        kwargs = t.kernel_kwargs(self.config.proportional_attention)
        out = self.kernel(t, kind)(q, k, v, **kwargs)
        if self.value_conv is not None and kind != "exact":
            out = out + self.value_conv(v, kwargs["key_mask"])
        t = t.with_x(t.x + self.drop_path1(self.attn.output(out)))
        keys = None
        if self.config.merge_metric == "keys" and self.merges(t.x.shape[1], t.length):  # only where a merge matches by them
            keys = k.detach().mean(dim=1)  # matching needs no gradient
        t, keys = self._merge(t, "attn", keys, keys_needed="mlp" in self.sites)
        t = t.with_x(self.mlp_residual(t.x))
        t, _ = self._merge(t, "mlp", keys, keys_needed=False)
        return t

    def _merge(self, t: TokenState, site: str, keys: Tensor | None, keys_needed: bool) -> tuple[TokenState, Tensor | None]:
        """Merge at ``site`` if this block has a step there; keys (if used) are merged along to stay aligned
        when a later site of this block still matches by them (``keys_needed``), else dropped."""
        step = self.sites.get(site)
        n = t.x.shape[1]
        removed = 0 if step is None or n < 2 else step.static_count(n, t.length)
        if removed == 0:
            return t, keys
        if t.padded:
            r = step.count(t.real_mask().sum(dim=1), t.lengths, t.length)
        else:
            r = removed  # unpadded rows all remove r(N)
        metric = t.x if keys is None else keys
        graphs = self.plan_graphs.get(site)
        options = dict(protect_first=self.config.pool == "cls", window=self.config.match_window, padded=t.padded,
                       real=t.real_mask() if t.padded else None)  # fmt: skip
        if graphs is not None and self.replay_merges and t.x.dim() == 3 and graphs.applies(t.x):
            return self._replayed_merge(t, graphs, metric, r, n - removed, keys if keys_needed else None, options)
        plan, log_sizes = bipartite_soft_matching(metric, t.sizes, r, n - removed, **options, return_log_sizes=True, graphs=graphs)
        positions = None if t.positions is None else plan.merge(t.positions)
        merged = replace(t, x=plan.merge(t.x), sizes=plan.sizes, log_sizes=log_sizes, positions=positions, merged=True, real=None)
        if keys is None or not keys_needed:
            return merged, None
        # the keys' size-weighted mean, through the states' merge (one kernel on the GPU path); in float32, as
        # the size-weighted sum that it replaces (matching needs only their direction, the same for both)
        return merged, plan.merge(keys, dtype=torch.float32)

    def _replayed_merge(
        self, t: TokenState, graphs: PlanGraphs, metric: Tensor, r: Tensor | int, n_out: int, keys: Tensor | None, options: dict
    ) -> tuple[TokenState, Tensor | None]:
        """``_merge`` with its plan and merges replayed from one CUDA graph (``MAELRE_PLAN_GRAPHS=merge``); ``options``:
        the plan's keyword arguments, as ``_merge`` gives them to ``bipartite_soft_matching``."""
        others = [(o, d) for o, d in ((t.positions, None), (keys, torch.float32)) if o is not None]
        x, sizes, log_sizes, merged = replayed_merge(graphs, t.x, others, metric, t.sizes, r, n_out, **options)
        positions = merged.pop(0) if t.positions is not None else None
        merged_keys = merged.pop(0) if keys is not None else None
        return replace(t, x=x, sizes=sizes, log_sizes=log_sizes, positions=positions, merged=True, real=None), merged_keys


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

    @property
    def skips_parameters(self) -> bool:
        """A block that can go either way leaves its approximate-only weights (``value_conv``,
        Nystrom's conv) unused on inputs short enough for exact attention."""
        return any(p.numel() for blk in self.blocks for m in (blk.value_conv, blk.approx) if m is not None for p in m.parameters())

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
        return BackboneOutput(pooled, x, state.sizes, state.real_mask(), infos)

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
