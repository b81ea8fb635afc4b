"""Nystrom attention (Nystromformer, Xiong et al. 2021) for padded, size-weighted tokens.

``out = softmax(Q K~^T) pinv(softmax(Q~ K~^T)) softmax(Q~ K^T + log size + mask) V`` with
``m`` landmarks ``Q~, K~``: the size-weighted means of ``m`` contiguous segments of each
row's real tokens. Segments follow a token's rank among the real tokens, so padding
never moves a landmark. ``pinv`` is the paper's iterative Moore-Penrose approximation.
Time and memory ``O(N m)`` per head (plus ``O(m^3)``), never ``N x N``. Same calling
convention as ``maelre.layers.exact_attention``; computed in float32 under autocast (the
pseudo-inverse iteration is not stable in bf16).

When a row has fewer real tokens than ``m``, its empty segments are dropped: they get
no weight as keys and an identity row/column in the landmark kernel, which leaves the
pseudo-inverse of the remaining block unchanged.
"""
from __future__ import annotations

from functools import partial

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from maelre.layers.attention import key_logit_bias
from maelre.layers.linear_attention import key_weights


def segment_means(x: Tensor, weights: Tensor, num_segments: int) -> tuple[Tensor, Tensor]:
    """Weighted means of ``num_segments`` contiguous segments of each row's real tokens.

    Args:
        x: ``[B, H, N, d]``.
        weights: ``[B, N]`` token weights (sizes), 0 = padding.
        num_segments: ``m``; real token of rank ``t`` (of ``n`` real) joins segment ``floor(t m / n)``.

    Returns:
        ``(means [B, H, m, d], present [B, m])``; ``present`` is False for empty segments
        (only when ``n < m``), whose mean is 0.
    """
    b, h, n, d = x.shape
    real = weights > 0
    rank = real.long().cumsum(1) - 1
    count = real.sum(1, keepdim=True).clamp_min(1)
    segment = torch.where(real, rank * num_segments // count, num_segments)  # padding -> spare segment m
    w = weights.to(x.dtype)
    weighted = torch.where(real[:, None, :, None], x * w[:, None, :, None], 0.0)
    sums = x.new_zeros(b, h, num_segments + 1, d).scatter_add(2, segment[:, None, :, None].expand_as(x), weighted)
    totals = w.new_zeros(b, num_segments + 1).scatter_add(1, segment, torch.where(real, w, 0.0))[:, :num_segments]
    return sums[:, :, :num_segments] / totals.clamp_min(1e-12)[:, None, :, None], totals > 0


def iterative_pinv(a: Tensor, iterations: int = 6) -> Tensor:
    """Moore-Penrose pseudo-inverse of ``a [..., m, m]`` by the Nystromformer iteration.

    ``Z0 = a^T / (||a||_1 ||a||_inf)``, then ``Z <- Z (13 I - aZ (15 I - aZ (7 I - aZ))) / 4``.
    The norms are per matrix (the reference code takes them over the whole batch, which
    would couple the rows of a batch).
    """
    identity = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    magnitude = a.abs()
    scale = magnitude.sum(-2).amax(-1) * magnitude.sum(-1).amax(-1)
    z = a.transpose(-1, -2) / scale[..., None, None]
    for _ in range(iterations):
        az = a @ z
        z = 0.25 * z @ (13 * identity - az @ (15 * identity - az @ (7 * identity - az)))
    return z


def _landmark_kernels(q: Tensor, k: Tensor, key_bias: Tensor | None, key_mask: Tensor | None, num_landmarks: int) -> tuple[Tensor, Tensor, Tensor]:
    """The three softmax factors ``[B,H,N,m]``, ``[B,H,m,m]`` (empty landmarks -> identity), ``[B,H,m,N]``."""
    scale = q.shape[-1] ** -0.5
    weights = key_weights(key_bias, key_mask)
    if weights is None:
        weights = torch.ones(k.shape[0], k.shape[2], device=k.device)
    q_land, present = segment_means(q, weights, num_landmarks)
    k_land, _ = segment_means(k, weights, num_landmarks)
    landmark_bias = torch.zeros(present.shape, dtype=q.dtype, device=q.device).masked_fill(~present, float("-inf"))[:, None, None, :]
    to_landmarks = torch.softmax(q @ k_land.transpose(-1, -2) * scale + landmark_bias, dim=-1)
    among_landmarks = torch.softmax(q_land @ k_land.transpose(-1, -2) * scale + landmark_bias, dim=-1)
    identity = torch.eye(num_landmarks, dtype=q.dtype, device=q.device)
    among_landmarks = torch.where(present[:, None, :, None], among_landmarks, identity)
    logits = q_land @ k.transpose(-1, -2) * scale
    key_bias = key_logit_bias(key_bias, key_mask, q.dtype)
    from_landmarks = torch.softmax(logits if key_bias is None else logits + key_bias, dim=-1)
    return to_landmarks, among_landmarks, from_landmarks


def nystrom_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    key_bias: Tensor | None = None,
    key_mask: Tensor | None = None,
    num_landmarks: int = 64,
    pinv_iterations: int = 6,
) -> Tensor:
    """Nystrom attention ``[B, H, N, dh]`` from ``q, k, v [B, H, N, dh]`` (self-attention: queries are the keys' tokens).

    Args:
        key_bias: ``[B, N]`` additive logit bias (``log(size)``); also weights the landmark means by ``exp(key_bias)``.
        key_mask: ``[B, N]`` bool, True = real token.
        num_landmarks: ``m``.
        pinv_iterations: iterations of ``iterative_pinv`` (6 in the paper).
    """
    out_dtype = q.dtype
    with torch.autocast(q.device.type, enabled=False):
        q, k, v = q.float(), k.float(), v.float()
        to_landmarks, among_landmarks, from_landmarks = _landmark_kernels(q, k, key_bias, key_mask, num_landmarks)
        out = to_landmarks @ (iterative_pinv(among_landmarks, pinv_iterations) @ (from_landmarks @ v))
    return out.to(out_dtype)


def nystrom_attention_reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    key_bias: Tensor | None = None,
    key_mask: Tensor | None = None,
    num_landmarks: int = 64,
    pinv_iterations: int = 6,
) -> Tensor:
    """Naive float64 form of ``nystrom_attention`` for tests.

    Landmarks come from an explicit ``[N, m]`` segment-membership matrix built row by row,
    and the three kernels are multiplied into the full ``[N, N]`` attention matrix.
    """
    q, k, v = q.double(), k.double(), v.double()
    b, _, n, dh = q.shape
    real = torch.ones(b, n, dtype=torch.bool) if key_mask is None else key_mask.cpu()
    sizes = torch.ones(b, n, dtype=torch.float64) if key_bias is None else key_bias.double().exp().cpu()
    out = torch.zeros_like(q)
    for row in range(b):
        idx = real[row].nonzero().flatten()
        count = len(idx)
        member = torch.zeros(count, num_landmarks, dtype=torch.float64)
        for rank in range(count):
            member[rank, rank * num_landmarks // count] = sizes[row, idx[rank]]
        present = member.sum(0) > 0
        member = member[:, present] / member[:, present].sum(0)
        qr, kr, vr = q[row][:, idx], k[row][:, idx], v[row][:, idx]
        q_land, k_land = member.T @ qr, member.T @ kr
        log_size = sizes[row, idx].log()
        left = torch.softmax(q[row] @ k_land.transpose(-1, -2) / dh**0.5, dim=-1)
        middle = iterative_pinv(torch.softmax(q_land @ k_land.transpose(-1, -2) / dh**0.5, dim=-1), pinv_iterations)
        right = torch.softmax(q_land @ kr.transpose(-1, -2) / dh**0.5 + log_size, dim=-1)
        out[row] = (left @ middle @ right) @ vr
    return out


def nystrom_attention_flops(n: int, dim: int, heads: int, num_landmarks: int, pinv_iterations: int = 6) -> float:
    """FLOPs for one sequence: four ``N x m`` products (``8 N m D``), the landmark kernel and
    ``pinv @ (.)`` (``4 m^2 D``) and the pseudo-inverse (``8 m^3`` per iteration and head)."""
    m = min(num_landmarks, n)
    return 8.0 * n * m * dim + 4.0 * m * m * dim + 8.0 * pinv_iterations * m**3 * heads


class NystromAttention(nn.Module):
    """``nystrom_attention`` as a kernel module, with the paper's optional depthwise-conv skip on V.

    ``conv_kernel`` (odd, e.g. 33): adds ``DepthwiseConv_seq(V)`` per head (padding zeroed
    first) to the output. ``None`` (default) = no parameters. With ``recompute`` (default)
    backward recomputes the ``[B, H, N, m]`` kernels instead of storing them.
    """

    def __init__(
        self,
        heads: int,
        num_landmarks: int = 64,
        pinv_iterations: int = 6,
        conv_kernel: int | None = None,
        recompute: bool = True,
    ) -> None:
        super().__init__()
        if num_landmarks < 1 or pinv_iterations < 1:
            raise ValueError(f"need num_landmarks >= 1 and pinv_iterations >= 1, got {num_landmarks} and {pinv_iterations}")
        if conv_kernel is not None and (conv_kernel < 1 or conv_kernel % 2 == 0):
            raise ValueError(f"conv_kernel must be a positive odd int (e.g. 33) or None, got {conv_kernel}")
        self.heads = heads
        self.num_landmarks = num_landmarks
        self.pinv_iterations = pinv_iterations
        self.recompute = recompute
        self.conv = None
        if conv_kernel is not None:
            self.conv = nn.Conv2d(heads, heads, (conv_kernel, 1), padding=(conv_kernel // 2, 0), groups=heads, bias=False)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, *, key_bias: Tensor | None = None, key_mask: Tensor | None = None) -> Tensor:
        kwargs = {"key_bias": key_bias, "key_mask": key_mask, "num_landmarks": self.num_landmarks, "pinv_iterations": self.pinv_iterations}
        if self.recompute and torch.is_grad_enabled():
            # keep only q, k, v for backward; the [B, H, N, m] kernels are recomputed (FlashAttention-style)
            out = checkpoint(partial(nystrom_attention, **kwargs), q, k, v, use_reentrant=False, preserve_rng_state=False)
        else:
            out = nystrom_attention(q, k, v, **kwargs)
        if self.conv is not None:
            real_v = v if key_mask is None else torch.where(key_mask[:, None, :, None], v, 0.0)
            out = out + self.conv(real_v)
        return out

    def flops(self, n: int, dim: int) -> float:
        return nystrom_attention_flops(n, dim, self.heads, self.num_landmarks, self.pinv_iterations)
