"""Pooling over real tokens."""
from __future__ import annotations

from torch import Tensor


def weighted_mean(x: Tensor, weights: Tensor) -> Tensor:
    """Size-weighted mean ``sum_i w_i x_i / sum_i w_i`` of ``x [B, N, D]`` with ``weights [B, N]`` (0 = padding)."""
    w = weights.to(x.dtype).unsqueeze(-1)
    return (x * w).sum(dim=1) / w.sum(dim=1).clamp_min(1e-6)
