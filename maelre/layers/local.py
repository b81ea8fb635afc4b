"""Block-local attention: blocks of queries attend a few neighbouring blocks of keys.

The sequence is cut into blocks of ``block`` tokens; the queries of block ``b`` attend
the keys of blocks ``b - lookback .. b + lookahead`` through one batched SDPA call of
shape ``[B * #blocks, H, block, span]`` with ``span = (lookback + 1 + lookahead) * block``,
so memory is ``O(N * span)`` and no ``N x N`` mask is ever built. A static ``pattern``
``[block, span]`` says which (query offset, key slot) pairs may attend; key padding,
the sequence ends and a ragged last block are masked on top of it.

ECP's pairwise half-segment attention (``lookback=1``) and MASFormer's sliding window
(``lookback=lookahead=1``, band pattern) are both instances.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from maelre.layers.attention import exact_attention


def key_windows(x: Tensor, block: int, lookback: int, lookahead: int) -> Tensor:
    """Keys (or values) around each query block: ``[B, H, N, dh] -> [B * nb, H, span, dh]``.

    ``N`` must be a multiple of ``block``; positions before the start and after the end
    are zero-filled (mask them).
    """
    b, h, n, dh = x.shape
    span = (lookback + 1 + lookahead) * block
    padded = F.pad(x, (0, 0, lookback * block, lookahead * block))
    windows = padded.unfold(2, span, block)  # [B, H, nb, dh, span]
    return windows.permute(0, 2, 1, 4, 3).reshape(-1, h, span, dh)


def window_key_mask(key_mask: Tensor, block: int, lookback: int, lookahead: int) -> Tensor:
    """Which keys of each window are real: ``[B, N] bool -> [B, nb, span]`` (outside the sequence: False)."""
    span = (lookback + 1 + lookahead) * block
    padded = F.pad(key_mask, (lookback * block, lookahead * block), value=False)
    return padded.unfold(1, span, block)


def block_local_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    block: int,
    pattern: Tensor,
    lookback: int = 1,
    lookahead: int = 0,
    key_mask: Tensor | None = None,
    dropout_p: float = 0.0,
) -> Tensor:
    """Exact softmax attention restricted to neighbouring blocks (kernel convention of ``maelre.layers.attention``).

    Args:
        q, k, v: ``[B, H, N, dh]``; ``N`` need not be a multiple of ``block`` (padded internally).
        block: query block length.
        pattern: bool ``[block, span]``; ``pattern[i, j]`` allows query offset ``i`` of block
            ``b`` to attend key slot ``j`` of its window, i.e. absolute key position
            ``(b - lookback) * block + j``.
        lookback, lookahead: how many whole blocks before / after each query block its window covers.
        key_mask: ``[B, N]`` bool, True = real key; None = all real.
        dropout_p: attention-weight dropout.

    Every query may also attend its own key, so no row is ever empty (padded queries
    would otherwise produce NaN that leaks through later layers); the patterns used by
    the backbones contain the diagonal anyway.

    Returns:
        ``[B, H, N, dh]``.
    """
    b, h, n, dh = q.shape
    span = (lookback + 1 + lookahead) * block
    if pattern.shape != (block, span) or pattern.dtype != torch.bool:
        raise ValueError(f"pattern must be a bool tensor of shape [block, span]=({block}, {span}), got {pattern.dtype} {tuple(pattern.shape)}")
    n_blocks = -(-n // block)
    tail = n_blocks * block - n
    real = torch.ones(b, n, dtype=torch.bool, device=q.device) if key_mask is None else key_mask
    q, k, v = (F.pad(t, (0, 0, 0, tail)) for t in (q, k, v))
    real = F.pad(real, (0, tail), value=False)

    queries = q.view(b, h, n_blocks, block, dh).transpose(1, 2).reshape(-1, h, block, dh)
    keys, values = (key_windows(t, block, lookback, lookahead) for t in (k, v))
    own_key = torch.arange(block, device=q.device)[:, None] + lookback * block == torch.arange(span, device=q.device)
    allowed = (pattern.to(q.device) & window_key_mask(real, block, lookback, lookahead)[:, :, None, :]) | own_key
    out = exact_attention(queries, keys, values, attn_mask=allowed.reshape(-1, 1, block, span), dropout_p=dropout_p)
    return out.view(b, n_blocks, h, block, dh).transpose(1, 2).reshape(b, h, n_blocks * block, dh)[:, :, :n]
