"""A depthwise convolution of V along the sequence, added to an approximate attention's output.

Kernelised (linear) attention is low-rank: every query sees the same ``phi(K)^T V`` summary,
so sharp local detail is smoothed away. A depthwise convolution over the values puts the
local, full-rank part back at ``O(N * D * k)`` cost (FLatten Transformer's DWC term, Han et
al. 2023; Nystromformer's skip on V is the per-head form of the same idea). In MAELRE it
runs in the blocks that use the approximate kernel, on tokens in their current order:
along the Hilbert curve for images, so neighbours in the sequence are neighbours in 2-D.
"""
from __future__ import annotations

from torch import Tensor, nn


class ValueConv(nn.Module):
    """``v [B, H, N, dh] -> [B, H, N, dh]``: a per-channel convolution over ``N`` (zero padding at the ends).

    Args:
        dim: channels ``H * dh``.
        kernel: odd kernel length (``kernel // 2`` neighbours on each side).
    """

    def __init__(self, dim: int, kernel: int) -> None:
        super().__init__()
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"value_conv must be a positive odd kernel length (e.g. 5) or None, got {kernel}")
        self.conv = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=dim, bias=False)

    def forward(self, v: Tensor, key_mask: Tensor | None = None) -> Tensor:
        """``key_mask [B, N]`` (True = real token): padding is zeroed first, so it never leaks into real tokens."""
        if key_mask is not None:
            v = v.masked_fill(~key_mask[:, None, :, None], 0.0)
        b, h, n, dh = v.shape
        out = self.conv(v.permute(0, 1, 3, 2).reshape(b, h * dh, n))
        return out.reshape(b, h, dh, n).permute(0, 1, 3, 2)

    def flops(self, n: int) -> float:
        """Multiply-adds counted as 2 FLOPs, over ``n`` tokens."""
        return 2.0 * n * self.conv.in_channels * self.conv.kernel_size[0]
