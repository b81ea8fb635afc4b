"""Rotary position embedding (RoPE, Su et al. 2021) with arbitrary (also fractional) positions."""
from __future__ import annotations

import torch
from torch import Tensor

from maelre.layers.shape_cache import shape_cached


def rope_angles(positions: Tensor, head_dim: int, base: float = 10000.0) -> tuple[Tensor, Tensor]:
    """``cos, sin`` of shape ``[*positions.shape, head_dim // 2]`` for ``positions`` of any shape."""
    if head_dim % 2:
        raise ValueError(f"RoPE needs an even head dimension, got {head_dim}; choose dim/heads even")
    angles = positions.float().unsqueeze(-1) * inverse_frequencies(head_dim, base, positions.device)
    return angles.cos(), angles.sin()


@shape_cached
def inverse_frequencies(head_dim: int, base: float, device: torch.device) -> Tensor:
    """``base ** (-2i / head_dim)`` for ``i < head_dim // 2`` (float32), built once per setting and device."""
    return base ** (-torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate ``x [..., N, dh]`` by angles ``cos/sin [..., N, dh/2]`` (broadcast over heads)."""
    x1, x2 = x.float().chunk(2, dim=-1)
    out = torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return out.to(x.dtype)


def rotary_kernel(kernel, positions: Tensor, head_dim: int, base: float = 10000.0, key_positions: Tensor | None = None):
    """Wrap an attention kernel (``kernel(q, k, v, **kw)``) so queries and keys are rotated by RoPE first.

    ``positions``: ``[N]`` positions shared by every row, or ``[B, N]`` per-row (e.g. merged,
    fractional) positions of the queries; ``key_positions`` (default ``positions``) those of
    the keys, for cross-attention. Angles broadcast over the heads of ``[B, H, N, dh]``.
    """

    def angles(pos: Tensor) -> tuple[Tensor, Tensor]:
        cos, sin = rope_angles(pos, head_dim, base)
        return (cos[:, None], sin[:, None]) if pos.dim() == 2 else (cos, sin)

    q_angles = angles(positions)
    k_angles = q_angles if key_positions is None else angles(key_positions)

    def rotated(q: Tensor, k: Tensor, v: Tensor, **kwargs) -> Tensor:
        return kernel(apply_rope(q, *q_angles), apply_rope(k, *k_angles), v, **kwargs)

    return rotated
