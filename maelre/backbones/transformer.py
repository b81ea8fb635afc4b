"""Full-attention transformer: the fairness baseline (exact SDPA in every block, no merging)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from maelre.backbones.base import Backbone, BackboneConfig, BackboneOutput, BlockInfo, dense_attention_flops
from maelre.layers import Block, drop_path_rates, exact_attention, weighted_mean
from maelre.registry import register_backbone


@dataclass
class TransformerConfig(BackboneConfig):
    """Full-attention encoder; no fields beyond ``BackboneConfig``."""


@register_backbone("transformer")
class Transformer(Backbone):
    """Pre-norm encoder with exact attention at every layer.

    ``tokens [B, N, D], mask [B, N] -> pooled [B, D]`` (size-weighted mean or CLS).
    """

    config_class = TransformerConfig

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__(config)
        c = config
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.dim)) if c.pool == "cls" else None
        self.blocks = nn.ModuleList(
            Block(c.dim, c.heads, c.mlp_ratio, c.dropout, dp, c.norm_eps) for dp in drop_path_rates(c.drop_path, c.depth)
        )
        self.norm = nn.LayerNorm(c.dim, eps=c.norm_eps)
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)

    def _forward(self, tokens: Tensor, mask: Tensor | None, trace: bool) -> BackboneOutput:
        x = tokens
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
            if mask is not None:
                mask = torch.cat([mask.new_ones(mask.shape[0], 1), mask], dim=1)
        key_mask = None if mask is None else mask
        first = -1 if self.cls_token is not None else 0  # the CLS token sits just before position 0
        kernel = self.rotary(exact_attention, torch.arange(first, tokens.shape[1], device=x.device))
        for block in self.blocks:
            x = block(x, kernel, key_mask=key_mask, dropout_p=self.config.attn_dropout if self.training else 0.0)
        x = self.norm(x)
        sizes = torch.ones(x.shape[:2], device=x.device) if mask is None else mask.float()
        pooled = x[:, 0] if self.cls_token is not None else weighted_mean(x, sizes)
        full = sizes > 0
        n = tokens.shape[1]
        return BackboneOutput(pooled, x, sizes, full, self.plan(n) if trace else [])

    def plan(self, seq_len: int) -> list[BlockInfo]:
        n = seq_len + (1 if self.config.pool == "cls" else 0)
        flops = dense_attention_flops(n, n, self.config.dim)
        return [BlockInfo(i, n, n, "exact", flops) for i in range(self.config.depth)]
