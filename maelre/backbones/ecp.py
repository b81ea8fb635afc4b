"""ECP: Efficient Context-propagating Perceiver (Mahmood & Huang 2024, section 5).

Every layer cuts the sequence into half-segments ``h0, h1, ...`` of ``S/2`` tokens.
``h0`` attends to itself (the paper's ATTN block); every later ``hi`` is a PerceiverAR
block whose queries come from ``hi`` and whose keys/values come from ``[h(i-1), hi]``
(PAR block). All halves run in one batched SDPA call (``maelre.layers.local``): queries
``[B * 2N/S, H, S/2, dh]`` against keys ``[B * 2N/S, H, S, dh]``, the previous half
prepended (and masked for ``h0``). Information flows one half-segment further back per
layer, so after ``l`` layers a token has seen ``l`` half-segments before its own.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor, nn

from maelre.backbones.base import Backbone, BackboneConfig, BackboneOutput, BlockInfo, dense_attention_flops, full_mask
from maelre.layers import Block, drop_path_rates, weighted_mean
from maelre.layers.local import block_local_attention
from maelre.registry import register_backbone


@dataclass
class ECPConfig(BackboneConfig):
    """ECP hyper-parameters (paper's sCIFAR-10 setting: depth 3, heads 4, dim 64, MLP 128).

    Attributes:
        segment_size: S; layers work on half-segments of ``S/2`` tokens, and N must be a
            multiple of ``S/2`` (adapters: ``pad_to_multiple = segment_size // 2``).
        causal: autoregressive masking (a token sees only earlier positions); off for classification.
        rope: as in ``BackboneConfig``, but on by default (the paper uses RoPE).
    """

    segment_size: int = 256
    causal: bool = False
    rope: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.segment_size < 2 or self.segment_size % 2:
            raise ValueError(f"segment_size must be an even number >= 2 (it is split into two halves), got {self.segment_size}")
        if self.pool != "mean":
            raise ValueError("ecp pools by a mean over real tokens; set pool='mean' (pool='cls' is not supported)")


def pairwise_segment_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    half: int,
    causal: bool = False,
    key_mask: Tensor | None = None,
    dropout_p: float = 0.0,
) -> Tensor:
    """ECP attention of one layer: half-segment ``i`` attends to half-segments ``i-1`` and ``i``.

    Args:
        q, k, v: ``[B, H, N, dh]`` with ``N`` a multiple of ``half``.
        half: half-segment length ``S/2``.
        causal: query at position p attends only keys at positions <= p (the right-hand
            ``S/2 x S/2`` part of each ``S/2 x S`` score block is lower-triangular).
        key_mask: ``[B, N]`` bool, True = real key.

    Returns:
        ``[B, H, N, dh]``.
    """
    pattern = torch.ones(half, 2 * half, dtype=torch.bool, device=q.device)
    if causal:
        pattern = pattern.tril(half)
    return block_local_attention(q, k, v, block=half, pattern=pattern, lookback=1, key_mask=key_mask, dropout_p=dropout_p)


@register_backbone("ecp")
class ECP(Backbone):
    """Stack of identical ECP layers (pre-norm pairwise half-segment attention + MLP).

    ``tokens [B, N, D], mask [B, N] -> pooled [B, D]`` (mean over real tokens); N must be
    a multiple of ``segment_size // 2``.
    """

    config_class = ECPConfig

    def __init__(self, config: ECPConfig) -> None:
        super().__init__(config)
        c = config
        self.blocks = nn.ModuleList(
            Block(c.dim, c.heads, c.mlp_ratio, c.dropout, dp, c.norm_eps) for dp in drop_path_rates(c.drop_path, c.depth)
        )
        self.norm = nn.LayerNorm(c.dim, eps=c.norm_eps)

    @property
    def half(self) -> int:
        return self.config.segment_size // 2

    def length_multiple(self) -> int:
        return self.half

    def attention_kernel(self, seq_len: int, device: torch.device):
        """The per-layer attention kernel for sequences of ``seq_len`` (RoPE folded in when enabled)."""
        kernel = partial(pairwise_segment_attention, half=self.half, causal=self.config.causal)
        return self.rotary(kernel, torch.arange(seq_len, device=device))

    def _forward(self, tokens: Tensor, mask: Tensor | None, trace: bool) -> BackboneOutput:
        n = tokens.shape[1]
        kernel = self.attention_kernel(n, tokens.device)
        dropout_p = self.config.attn_dropout if self.training else 0.0
        x = tokens
        for block in self.blocks:
            x = block(x, kernel, key_mask=mask, dropout_p=dropout_p)
        x = self.norm(x)
        real = full_mask(tokens, mask)
        sizes = real.to(x.dtype)
        return BackboneOutput(weighted_mean(x, sizes), x, sizes, real, self.plan(n) if trace else [])

    def plan(self, seq_len: int) -> list[BlockInfo]:
        """Per layer: ``2N/S`` query blocks of ``S/2`` against ``S`` keys, i.e. ``4 * N * S * D`` FLOPs.

        That is ``S/N`` of full attention (6.25% at N=4096, S=256). The paper's Table 8
        reports about 12% for that setting, i.e. about ``2S/N``: it counts differently.

        ``extra["receptive_field"]`` is how many input positions (up to and including its
        own half-segment) a token can have seen after that layer.
        """
        if seq_len % self.half:
            raise ValueError(f"ecp: sequence length {seq_len} must be a multiple of segment_size/2={self.half}")
        flops = dense_attention_flops(seq_len, 2 * self.half, self.config.dim)
        return [
            BlockInfo(i, seq_len, seq_len, "segment", flops, {"segment_size": self.config.segment_size, "receptive_field": min(seq_len, (i + 2) * self.half)})
            for i in range(self.config.depth)
        ]
