"""What MAELRE would cost if merging were free: its zero-cost-merge twin and the attention-free floor.

The efficiency benchmark times both beside every MAELRE configuration:

* ``ZeroCostMergeTwin``: the same pre-norm blocks, attention kinds and per-block token
  counts as a MAELRE backbone at one sequence length (read from its ``plan(seq_len)``, so
  the twin follows whatever merge schedule the backbone has), but each merge keeps the
  first ``n'`` tokens by slicing instead of matching and merging them. Its sizes stay 1,
  and it passes the same ``log(size)`` key bias MAELRE passes once it has merged, so
  every attention kernel does the same work. MAELRE's time over the twin's is the cost
  of the merge machinery: the efficiency of the implementation, whatever the schedule.
* ``AttentionFreeNetwork``: the blocks with their attention sub-layers removed and no
  merging (norm + MLP residuals at full N): the floor of any attention scheme.

Both are ``Backbone``s (shape checks, ``plan``, ``trace``) but not registered: they
exist only to be timed against the model they mirror.
"""
from __future__ import annotations

from functools import partial

import torch
from timm.layers import DropPath, Mlp
from torch import Tensor, nn

from maelre.backbones.base import Backbone, BackboneConfig, BackboneOutput, BlockInfo
from maelre.backbones.maelre import MERGE_SITES, MAELRE, MAELREConfig
from maelre.layers import Block, LinearAttention, NystromAttention, drop_path_rates, exact_attention, weighted_mean
from maelre.layers.value_conv import ValueConv

TWIN = "twin"
FLOOR = "floor"
VARIANTS = (TWIN, FLOOR)


class ZeroCostMergeTwin(Backbone):
    """``tokens [B, N, D] -> pooled [B, D]`` like ``source`` at ``N = seq_len``, merging by slicing.

    Args:
        source: the MAELRE backbone to mirror (its config; its weights are not copied).
        seq_len: the one N this twin runs at (its per-block counts come from ``source.plan``).
    """

    config_class = MAELREConfig
    name = "maelre-twin"

    def __init__(self, source: MAELRE, seq_len: int) -> None:
        super().__init__(source.config)
        c = source.config
        if getattr(c, "rope", False):
            raise ValueError("the zero-cost-merge twin does not apply RoPE yet; benchmark MAELRE with rope=False (the default)")
        self.seq_len = seq_len
        self.frozen_plan = source.plan(seq_len)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.dim)) if c.pool == "cls" else None
        self.blocks = nn.ModuleList(Block(c.dim, c.heads, c.mlp_ratio, c.dropout, dp, c.norm_eps) for dp in drop_path_rates(c.drop_path, c.depth))
        head_dim = c.dim // c.heads
        # The approximate kernel of every block that uses it (FAVOR+ keeps its projection per block).
        self.approx = nn.ModuleList(
            LinearAttention(head_dim, c.feature_map, c.num_features, seed=c.feature_seed + i)
            if c.approx == "linear"
            else NystromAttention(c.heads, c.num_landmarks, c.pinv_iterations, c.nystrom_conv_kernel)
            for i in range(c.depth)
        )
        self.value_convs = nn.ModuleList(ValueConv(c.dim, c.value_conv) for _ in range(c.depth)) if c.value_conv else None
        self.norm = nn.LayerNorm(c.dim, eps=c.norm_eps)
        # Where each block's counts apply: ``after_merges`` lists one count per merge site, in order.
        self.sites = [self._sites(info) for info in self.frozen_plan]

    def _sites(self, info: BlockInfo) -> dict[str, int]:
        counts = info.extra.get("after_merges") or [info.n_out]
        sites = MERGE_SITES.get(self.config.merge_site, ())
        if len(sites) != len(counts):  # a plan without per-site counts: keep n_out after the block
            return {"mlp": info.n_out}
        return dict(zip(sites, counts))

    def length_multiple(self) -> int:
        return 1

    def _forward(self, tokens: Tensor, mask: Tensor | None, trace: bool) -> BackboneOutput:
        if mask is not None and not bool(mask.all()):
            raise ValueError(f"{self.name} times unpadded batches only; pass mask=None")
        if tokens.shape[1] != self.seq_len:
            raise ValueError(f"{self.name} was built for N={self.seq_len}, got N={tokens.shape[1]}; build one twin per sequence length")
        x = tokens
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
        merged = False
        infos = []
        for i, (block, kernel, info, sites) in enumerate(zip(self.blocks, self.approx, self.frozen_plan, self.sites)):
            n_in = x.shape[1]
            if info.attention == "exact":
                kernel = partial(exact_attention, dropout_p=self.config.attn_dropout if self.training else 0.0)
            q, k, v = block.attn.qkv(block.norm1(x))
            bias = x.new_zeros(x.shape[:2], dtype=torch.float32) if merged and self.config.proportional_attention else None
            out = kernel(q, k, v, key_bias=bias)
            if self.value_convs is not None and info.attention != "exact":
                out = out + self.value_convs[i](v)
            x = x + block.drop_path1(block.attn.output(out))
            if "attn" in sites:
                x, merged = x[:, : sites["attn"]], merged or sites["attn"] < n_in
            n_mid = x.shape[1]
            x = block.mlp_residual(x)
            if "mlp" in sites:
                x, merged = x[:, : sites["mlp"]], merged or sites["mlp"] < n_mid
            if trace:
                infos.append(BlockInfo(info.index, n_in, x.shape[1], info.attention, info.attn_flops))
        x = self.norm(x)
        sizes = torch.ones(x.shape[:2], device=x.device)
        pooled = x[:, 0] if self.cls_token is not None else weighted_mean(x, sizes)
        return BackboneOutput(pooled, x, sizes, sizes > 0, infos)

    def plan(self, seq_len: int) -> list[BlockInfo]:
        if seq_len != self.seq_len:
            raise ValueError(f"{self.name} was built for N={self.seq_len} (its token counts are fixed), got N={seq_len}; build one twin per N")
        return self.frozen_plan


class _MLPBlock(nn.Module):
    """``Block``'s MLP residual alone: ``x + drop_path(mlp(norm(x)))``."""

    def __init__(self, dim: int, mlp_ratio: float, dropout: float, drop_path: float, norm_eps: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=dropout)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return x + self.drop_path(self.mlp(self.norm(x)))


class AttentionFreeNetwork(Backbone):
    """``tokens [B, N, D] -> pooled [B, D]`` through ``depth`` norm + MLP residual blocks: no attention, no merging."""

    config_class = BackboneConfig
    name = "attention-free"

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__(config)
        c = config
        self.blocks = nn.ModuleList(_MLPBlock(c.dim, c.mlp_ratio, c.dropout, dp, c.norm_eps) for dp in drop_path_rates(c.drop_path, c.depth))
        self.norm = nn.LayerNorm(c.dim, eps=c.norm_eps)

    def _forward(self, tokens: Tensor, mask: Tensor | None, trace: bool) -> BackboneOutput:
        x = tokens
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        sizes = torch.ones(x.shape[:2], device=x.device) if mask is None else mask.float()
        return BackboneOutput(weighted_mean(x, sizes), x, sizes, sizes > 0, self.plan(x.shape[1]) if trace else [])

    def plan(self, seq_len: int) -> list[BlockInfo]:
        return [BlockInfo(i, seq_len, seq_len, "none", 0.0) for i in range(self.config.depth)]


def split_variant(name: str) -> tuple[str, str | None]:
    """``"maelre.twin" -> ("maelre", "twin")``; a plain backbone name -> ``(name, None)``."""
    base, dot, variant = name.rpartition(".")
    return (base, variant) if dot and variant in VARIANTS else (name, None)


def build_variant(source: Backbone, variant: str, seq_len: int) -> Backbone:
    """The ``variant`` (``"twin"`` or ``"floor"``) of ``source`` at ``seq_len``, on ``source``'s device."""
    device = next(source.parameters()).device
    if variant == TWIN:
        if not isinstance(source, MAELRE):
            raise ValueError(f"a zero-cost-merge twin mirrors a MAELRE backbone, got {type(source).__name__}")
        return ZeroCostMergeTwin(source, seq_len).to(device)
    if variant == FLOOR:
        c = source.config
        return AttentionFreeNetwork(BackboneConfig(c.dim, c.depth, c.heads, c.mlp_ratio, c.dropout, norm_eps=c.norm_eps)).to(device)
    raise ValueError(f"unknown variant {variant!r}; choose one of {VARIANTS}")
