"""PerceiverAR (Hawthorne et al., ICML 2022) as a sequence encoder.

Layer 1 cross-attends: its queries are the last ``L`` real tokens of each row (the
latents), its keys/values all ``N`` tokens. Layers 2.. are self-attention blocks over the
``L`` latents only, so attention costs ``O(L N + depth L^2)`` instead of ``O(depth N^2)``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from maelre.backbones.base import Backbone, BackboneConfig, BackboneOutput, BlockInfo, dense_attention_flops, full_mask
from maelre.layers import Block, drop_path_rates, exact_attention, weighted_mean
from maelre.registry import register_backbone


@dataclass
class PerceiverARConfig(BackboneConfig):
    """PerceiverAR hyper-parameters.

    Attributes:
        num_latents: L, how many of each row's last real tokens become latents (a row
            with fewer real tokens uses all of them; the rest of its latents are padding).
        causal: autoregressive masking: a latent at input position p attends only to
            positions <= p, and latents only to earlier latents. Off for classification.
    """

    num_latents: int = 256
    causal: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_latents < 1:
            raise ValueError(f"num_latents must be >= 1, got {self.num_latents}")
        if self.pool != "mean":
            raise ValueError("perceiver_ar pools by a mean over its real latents; set pool='mean' (pool='cls' is not supported)")


def last_real_positions(mask: Tensor, num_latents: int) -> tuple[Tensor, Tensor]:
    """Positions of each row's last ``num_latents`` real tokens, in sequence order.

    Works for any mask (not only right padding) without a loop over rows.

    Args:
        mask: ``[B, N]`` bool, True = real token.
        num_latents: L.

    Returns:
        ``positions [B, L']`` (long) and ``latent_mask [B, L']`` (bool) with
        ``L' = min(L, N)``; a row with ``n < L'`` real tokens has them in its first ``n``
        slots and padding (pointing at arbitrary tokens) after.
    """
    n_latents = min(num_latents, mask.shape[1])
    real_from_end = mask.flip(1).cumsum(1).flip(1)  # real tokens at or after each position
    chosen = mask & (real_from_end <= n_latents)
    # A stable sort on "not chosen" puts chosen positions first, in increasing order.
    positions = torch.argsort((~chosen).to(torch.uint8), dim=1, stable=True)[:, :n_latents]
    return positions, chosen.gather(1, positions)


@register_backbone("perceiver_ar")
class PerceiverAR(Backbone):
    """Cross-attention block onto the last ``L`` real tokens, then ``depth - 1`` latent self-attention blocks.

    ``tokens [B, N, D], mask [B, N] -> pooled [B, D]`` (mean over real latents);
    ``BackboneOutput.states`` holds the ``min(L, N)`` latents.
    """

    config_class = PerceiverARConfig

    def __init__(self, config: PerceiverARConfig) -> None:
        super().__init__(config)
        c = config
        self.blocks = nn.ModuleList(
            Block(c.dim, c.heads, c.mlp_ratio, c.dropout, dp, c.norm_eps) for dp in drop_path_rates(c.drop_path, c.depth)
        )
        self.norm = nn.LayerNorm(c.dim, eps=c.norm_eps)

    def _forward(self, tokens: Tensor, mask: Tensor | None, trace: bool) -> BackboneOutput:
        c = self.config
        dropout_p = c.attn_dropout if self.training else 0.0
        real = full_mask(tokens, mask)
        positions, latent_mask = last_real_positions(real, c.num_latents)
        x = tokens.gather(1, positions[..., None].expand(-1, -1, tokens.shape[-1]))

        cross = self.blocks[0]
        attn_mask = None
        if c.causal:
            # Padded latents may look everywhere so that no score row is empty.
            key_positions = torch.arange(tokens.shape[1], device=tokens.device)
            attn_mask = ((key_positions <= positions[..., None]) | ~latent_mask[..., None])[:, None]
        cross_kernel = self.rotary(exact_attention, positions, torch.arange(tokens.shape[1], device=tokens.device))
        x = cross.attn_residual(x, cross.norm1(tokens), cross_kernel, key_mask=mask, attn_mask=attn_mask, dropout_p=dropout_p)
        x = cross.mlp_residual(x)
        latent_keys = None if mask is None else latent_mask  # None keeps SDPA's fastest kernels
        latent_kernel = self.rotary(exact_attention, positions)
        for block in self.blocks[1:]:
            x = block(x, latent_kernel, key_mask=latent_keys, causal=c.causal, dropout_p=dropout_p)
        x = self.norm(x)
        sizes = latent_mask.to(x.dtype)
        return BackboneOutput(weighted_mean(x, sizes), x, sizes, latent_mask, self.plan(tokens.shape[1]) if trace else [])

    def plan(self, seq_len: int) -> list[BlockInfo]:
        """``4 L N D`` for the cross-attention, ``4 L^2 D`` per latent block (``L = min(num_latents, N)``)."""
        n_latents = min(self.config.num_latents, seq_len)
        dim = self.config.dim
        cross = BlockInfo(0, seq_len, n_latents, "cross", dense_attention_flops(n_latents, seq_len, dim))
        latent = [BlockInfo(i, n_latents, n_latents, "exact", dense_attention_flops(n_latents, n_latents, dim)) for i in range(1, self.config.depth)]
        return [cross, *latent]
