"""MASFormer: mixed attention spans (Zhang et al. 2023).

Full attention at a few layers (``full_layers``), sliding-window attention of span
``window`` (token i attends j with ``|i - j| <= w``; causal: ``i - w <= j <= i``) at all
the others. Local layers never build an ``N x N`` mask. Two kernels give the same numbers:

* ``blocked`` (CPU and CUDA): blocks of ``w`` queries attend their own and the
  neighbouring key blocks (``3w`` keys, ``2w`` when causal) under a band mask, one
  batched SDPA call (``maelre.layers.local``).
* ``flex`` (meant for CUDA): ``torch.nn.attention.flex_attention`` compiled with
  ``torch.compile``, with a sliding-window ``BlockMask`` cached per (N, device); key
  padding enters through a ``score_mod``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache, lru_cache, partial

import torch
from torch import Tensor, nn

from maelre.backbones.base import Backbone, BackboneConfig, BackboneOutput, BlockInfo, dense_attention_flops, full_mask
from maelre.layers import Block, drop_path_rates, exact_attention, weighted_mean
from maelre.layers.local import block_local_attention
from maelre.registry import register_backbone

LOCAL_IMPLS = ("auto", "blocked", "flex")


@dataclass
class MASFormerConfig(BackboneConfig):
    """MASFormer hyper-parameters.

    Attributes:
        full_layers: indices (0-based) of the layers with full attention. Default ``[0]``:
            one full layer at the bottom, where the paper places its few full-attention
            layers, so every later local layer refines globally mixed states.
        window: span w of the local layers.
        causal: autoregressive masking in every layer; off for classification.
        local_impl: ``"auto"`` (flex on CUDA, blocked otherwise; blocked whenever attention
            dropout is active, which FlexAttention lacks), ``"blocked"`` or ``"flex"``.
    """

    full_layers: list[int] = field(default_factory=lambda: [0])
    window: int = 128
    causal: bool = False
    local_impl: str = "auto"

    def __post_init__(self) -> None:
        super().__post_init__()
        bad = [i for i in self.full_layers if not isinstance(i, int) or not 0 <= i < self.depth]
        if bad:
            raise ValueError(f"full_layers must hold layer indices in [0, depth={self.depth}), got {bad}")
        self.full_layers = sorted(self.full_layers)
        if len(set(self.full_layers)) != len(self.full_layers):
            raise ValueError(f"full_layers has repeated indices: {self.full_layers}")
        if self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")
        if self.local_impl not in LOCAL_IMPLS:
            raise ValueError(f"local_impl must be one of {LOCAL_IMPLS}, got {self.local_impl!r}")
        if self.local_impl == "flex" and self.attn_dropout > 0:
            raise ValueError("FlexAttention has no attention dropout; set attn_dropout=0 or local_impl='auto'/'blocked'")
        if self.pool != "mean":
            raise ValueError("masformer pools by a mean over real tokens; set pool='mean' (pool='cls' is not supported)")


def _band_limits(window: int, causal: bool) -> tuple[int, int]:
    """Allowed ``key_position - query_position`` range (inclusive)."""
    return -window, 0 if causal else window


def sliding_window_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    window: int,
    causal: bool = False,
    key_mask: Tensor | None = None,
    dropout_p: float = 0.0,
) -> Tensor:
    """Exact attention within ``|i - j| <= window`` (``i - window <= j <= i`` if causal), blocked SDPA.

    Args:
        q, k, v: ``[B, H, N, dh]``, any ``N``.
        key_mask: ``[B, N]`` bool, True = real key.

    Returns:
        ``[B, H, N, dh]``; memory ``O(N * window)``.
    """
    # Blocks of w queries reach every key within w in the neighbouring blocks; a sequence
    # shorter than w is a single block.
    block = min(window, q.shape[-2])
    lookahead = 0 if causal else 1
    span = (2 + lookahead) * block
    offset = torch.arange(span, device=q.device) - block - torch.arange(block, device=q.device)[:, None]
    low, high = _band_limits(window, causal)
    pattern = (offset >= low) & (offset <= high)
    return block_local_attention(q, k, v, block=block, pattern=pattern, lookback=1, lookahead=lookahead, key_mask=key_mask, dropout_p=dropout_p)


@cache
def _compiled_flex_attention():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention)


@lru_cache(maxsize=32)
def sliding_window_block_mask(seq_len: int, window: int, causal: bool, device: str):
    """FlexAttention ``BlockMask`` of the band, shared by all layers and batches of this length."""
    from torch.nn.attention.flex_attention import create_block_mask

    low, high = _band_limits(window, causal)

    def band(b, h, q_idx, kv_idx):
        offset = kv_idx - q_idx
        return (offset >= low) & (offset <= high)

    # Compiled, the mask is evaluated tile by tile instead of as an N x N tensor.
    return torch.compile(create_block_mask)(band, None, None, seq_len, seq_len, device=device)


def sliding_window_attention_flex(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    window: int,
    causal: bool = False,
    key_mask: Tensor | None = None,
) -> Tensor:
    """Same result as ``sliding_window_attention`` through compiled FlexAttention (block-sparse on CUDA)."""
    block_mask = sliding_window_block_mask(q.shape[-2], window, causal, str(q.device))
    score_mod = None
    if key_mask is not None:
        # As in the blocked kernel, a query may always attend itself, so no row is empty.
        def score_mod(score, b, h, q_idx, kv_idx):
            return torch.where(key_mask[b, kv_idx] | (q_idx == kv_idx), score, float("-inf"))

    return _compiled_flex_attention()(q, k, v, score_mod=score_mod, block_mask=block_mask)


@register_backbone("masformer")
class MASFormer(Backbone):
    """Pre-norm encoder with full attention at ``full_layers`` and sliding-window attention elsewhere.

    ``tokens [B, N, D], mask [B, N] -> pooled [B, D]`` (mean over real tokens).
    """

    config_class = MASFormerConfig

    def __init__(self, config: MASFormerConfig) -> None:
        super().__init__(config)
        c = config
        self.blocks = nn.ModuleList(
            Block(c.dim, c.heads, c.mlp_ratio, c.dropout, dp, c.norm_eps) for dp in drop_path_rates(c.drop_path, c.depth)
        )
        self.norm = nn.LayerNorm(c.dim, eps=c.norm_eps)

    def local_impl(self, device: torch.device) -> str:
        """The local kernel used on ``device`` in the current mode ("blocked" or "flex")."""
        impl = self.config.local_impl
        if impl == "auto":
            dropout_active = self.training and self.config.attn_dropout > 0
            impl = "flex" if device.type == "cuda" and not dropout_active else "blocked"
        return impl

    def _forward(self, tokens: Tensor, mask: Tensor | None, trace: bool) -> BackboneOutput:
        c = self.config
        dropout_p = c.attn_dropout if self.training else 0.0
        if self.local_impl(tokens.device) == "flex":
            local = partial(sliding_window_attention_flex, window=c.window, causal=c.causal, key_mask=mask)
        else:
            local = partial(sliding_window_attention, window=c.window, causal=c.causal, key_mask=mask, dropout_p=dropout_p)
        full = partial(exact_attention, causal=c.causal, key_mask=mask, dropout_p=dropout_p)
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        local, full = self.rotary(local, positions), self.rotary(full, positions)
        x = tokens
        for i, block in enumerate(self.blocks):
            x = block(x, full if i in c.full_layers else local)
        x = self.norm(x)
        real = full_mask(tokens, mask)
        sizes = real.to(x.dtype)
        return BackboneOutput(weighted_mean(x, sizes), x, sizes, real, self.plan(tokens.shape[1]) if trace else [])

    def plan(self, seq_len: int) -> list[BlockInfo]:
        """Full layers: ``4 N^2 D``. Local layers: what the blocked kernel computes,
        ``4 * ceil(N/b) b * span * D`` with ``b = min(w, N)`` and ``span = 3b`` (``2b`` causal);
        FlexAttention visits the 128 x 128 tiles that meet the band, about the same work.
        """
        c = self.config
        block = min(c.window, seq_len)
        padded = -(-seq_len // block) * block
        span = (2 if c.causal else 3) * block
        local_flops = dense_attention_flops(padded, span, c.dim)
        full_flops = dense_attention_flops(seq_len, seq_len, c.dim)

        def layer(i: int) -> BlockInfo:
            if i in c.full_layers:
                return BlockInfo(i, seq_len, seq_len, "exact", full_flops)
            return BlockInfo(i, seq_len, seq_len, "local", local_flops, {"window": c.window})

        return [layer(i) for i in range(c.depth)]
