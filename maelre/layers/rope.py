"""Rotary position embedding (RoPE, Su et al. 2021) with arbitrary (also fractional) positions."""
from __future__ import annotations

import torch
from torch import Tensor


def rope_angles(positions: Tensor, head_dim: int, base: float = 10000.0) -> tuple[Tensor, Tensor]:
    """``cos, sin`` of shape ``[*positions.shape, head_dim // 2]`` for ``positions`` of any shape."""
    if head_dim % 2:
        raise ValueError(f"RoPE needs an even head dimension, got {head_dim}; choose dim/heads even")
    inv_freq = base ** (-torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim)
    angles = positions.float().unsqueeze(-1) * inv_freq
    return angles.cos(), angles.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate ``x [..., N, dh]`` by angles ``cos/sin [..., N, dh/2]`` (broadcast over heads)."""
    x1, x2 = x.float().chunk(2, dim=-1)
    out = torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return out.to(x.dtype)


def rotary_kernel(kernel, q_angles: tuple[Tensor, Tensor], k_angles: tuple[Tensor, Tensor] | None = None):
    """Wrap an attention kernel (``kernel(q, k, v, **kw)``) so queries and keys are rotated by RoPE first.

    ``q_angles``/``k_angles`` are ``(cos, sin)`` from ``rope_angles``, shaped to broadcast
    against ``[B, H, N, dh/2]``: ``[N, dh/2]`` for shared positions, ``[B, 1, N, dh/2]``
    for per-row (e.g. merged, fractional) positions. ``k_angles`` defaults to ``q_angles``
    (self-attention).
    """
    k_angles = q_angles if k_angles is None else k_angles

    def rotated(q: Tensor, k: Tensor, v: Tensor, **kwargs) -> Tensor:
        return kernel(apply_rope(q, *q_angles), apply_rope(k, *k_angles), v, **kwargs)

    return rotated


def row_angles(positions: Tensor, dim: int, base: float = 10000.0) -> tuple[Tensor, Tensor]:
    """``rope_angles`` of per-row positions ``[B, N]`` shaped ``[B, 1, N, dim/2]`` to broadcast over heads."""
    cos, sin = rope_angles(positions, dim, base)
    return cos[:, None], sin[:, None]
