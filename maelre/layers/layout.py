"""Token orders for 2-D inputs, so that 1-D merge windows see 2-D neighbours.

Bipartite matching pairs tokens at even positions with tokens at odd positions, within a
window of positions. On a raster of even width, a pixel and the one below it share
parity and are never candidates. Along a Hilbert curve every step moves to a 4-neighbour,
so parity alternates like a checkerboard (each token's 4-neighbours are candidates) and
tokens close along the curve are close in the image; merging keeps the order, so
merged tokens stay local too.
"""
from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor


def _hilbert_d2xy(order: int, d: int) -> tuple[int, int]:
    """Point ``d`` of the Hilbert curve filling a ``2^order`` square (the classic iterative form)."""
    x = y = 0
    s, t = 1, d
    while s < (1 << order):
        rx = 1 & (t // 2)
        ry = 1 & (t ^ rx)
        if ry == 0:
            if rx == 1:
                x, y = s - 1 - x, s - 1 - y
            x, y = y, x
        x += s * rx
        y += s * ry
        t //= 4
        s *= 2
    return x, y


@lru_cache(maxsize=32)
def _hilbert(height: int, width: int) -> tuple[int, ...]:
    order = max(height, width, 1).bit_length() if max(height, width) > 1 else 0
    if (1 << order) // 2 >= max(height, width):
        order -= 1
    points = (_hilbert_d2xy(order, d) for d in range((1 << order) ** 2))
    return tuple(row * width + col for col, row in points if row < height and col < width)


_ORDERS: dict[tuple[int, int, str], Tensor] = {}
"""``hilbert_order``'s tensors by ``(H, W, device)``: a plain dict, which compiled code reads as a
constant (it traces through an ``lru_cache`` and would rebuild the order in every graph)."""


def hilbert_order(height: int, width: int, device: torch.device | str = "cpu") -> Tensor:
    """Raster indices ``[H * W]`` (long) in Hilbert-curve order.

    For a power-of-two square consecutive entries are 4-neighbours; other rectangles take
    the curve of the enclosing power-of-two square, skipping points outside (a few jumps).
    ``tokens[:, hilbert_order(H, W)]`` reorders raster tokens ``[B, H*W, D]``. Cached per
    device (no host-to-device copy after the first call, so CUDA-graph capture is safe).
    """
    if height < 1 or width < 1:
        raise ValueError(f"a 2-D layout needs positive height and width, got {height}x{width}")
    key = (height, width, str(torch.device(device)))
    order = _ORDERS.get(key)
    if order is None:
        order = _ORDERS[key] = torch.tensor(_hilbert(height, width), dtype=torch.long, device=key[2])
    return order
