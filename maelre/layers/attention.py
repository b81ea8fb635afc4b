"""Multi-head attention projections and the exact attention kernel.

Kernels share one calling convention so backbones can swap them:
``kernel(q, k, v, *, key_bias=None, key_mask=None, **kw) -> out`` with
``q [B, H, Nq, dh]``, ``k, v [B, H, Nk, dh]``, ``key_bias [B, Nk]`` an additive
logit bias per key (``log(size)`` for proportional attention) and ``key_mask [B, Nk]``
bool (True = real key). Output is ``[B, H, Nq, dh]``.
"""
from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def key_logit_bias(key_bias: Tensor | None, key_mask: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """Per-key additive bias ``[B, 1, 1, Nk]`` with ``-inf`` at padded keys, or None."""
    if key_bias is None and key_mask is None:
        return None
    if key_bias is None:
        bias = torch.zeros(key_mask.shape, dtype=dtype, device=key_mask.device)
    else:
        bias = key_bias.to(dtype)
    if key_mask is not None:
        bias = bias.masked_fill(~key_mask, float("-inf"))
    return bias[:, None, None, :]


CUDA_LENGTH_MULTIPLE = int(os.environ.get("MAELRE_ATTENTION_PAD", "128"))
"""On CUDA, exact attention with a bias over at least ``CUDA_PAD_MIN_KEYS`` keys runs on lengths padded up to a
multiple of this (``attend_padded``); ``MAELRE_ATTENTION_PAD=1`` turns the padding off (timing comparisons)."""
CUDA_PAD_MIN_KEYS = int(os.environ.get("MAELRE_ATTENTION_PAD_MIN_KEYS", "1024"))
"""Shorter calls are not padded. On the H200, cuDNN's plan for a new length cost 140-190 ms at LRA Text's
3,448 keys (``sdpa_backends_text_h200_s14.json``), but padding MAELRE's short exact block (at most 256
tokens on LRA Text) to 128 made its whole train step slower, 44.3 against 36.5 ms
(``alone_cost_text_h200.json``, tags none and ``no_attn_pad``, session 15)."""


def pads_lengths(q: Tensor, num_keys: int) -> bool:
    """Whether ``exact_attention`` pads a biased call's lengths (CUDA, padding on, ``num_keys >= CUDA_PAD_MIN_KEYS``)."""
    return q.is_cuda and CUDA_LENGTH_MULTIPLE > 1 and num_keys >= CUDA_PAD_MIN_KEYS


def exact_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    key_bias: Tensor | None = None,
    key_mask: Tensor | None = None,
    attn_mask: Tensor | None = None,
    causal: bool = False,
    dropout_p: float = 0.0,
) -> Tensor:
    """Exact softmax attention through ``F.scaled_dot_product_attention``.

    ``attn_mask`` is an extra bool (True = may attend) or float mask broadcastable to
    ``[B, H, Nq, Nk]``. With no bias or mask at all, SDPA may pick FlashAttention.
    ``causal`` aligns the triangle bottom-right: the queries are the last ``Nq`` of the
    ``Nk`` positions, so query ``i`` sees keys ``j <= Nk - Nq + i``. On CUDA a call with a
    bias or mask over at least ``CUDA_PAD_MIN_KEYS`` keys pads its lengths to a multiple of
    ``CUDA_LENGTH_MULTIPLE`` (``attend_padded``).
    """
    bias = key_logit_bias(key_bias, key_mask, q.dtype)
    if attn_mask is not None:
        extra = attn_mask
        if extra.dtype == torch.bool:
            extra = torch.zeros(extra.shape, dtype=q.dtype, device=q.device).masked_fill(~attn_mask, float("-inf"))
        bias = extra if bias is None else bias + extra
    nq, nk = q.shape[-2], k.shape[-2]
    if causal and (bias is not None or nq != nk):
        # SDPA's is_causal aligns the triangle top-left; here queries are the last nq positions.
        tri = torch.ones(nq, nk, dtype=torch.bool, device=q.device).tril(nk - nq)
        bias = torch.zeros(nq, nk, dtype=q.dtype, device=q.device) if bias is None else bias
        bias = bias.masked_fill(~tri, float("-inf"))
        causal = False
    if bias is not None and pads_lengths(q, nk):
        return attend_padded(q, k, v, bias, dropout_p, CUDA_LENGTH_MULTIPLE)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p, is_causal=causal)


def attend_padded(q: Tensor, k: Tensor, v: Tensor, bias: Tensor, dropout_p: float, multiple: int) -> Tensor:
    """SDPA with ``Nq`` and ``Nk`` padded up to a multiple of ``multiple``: the same values, few distinct shapes.

    With a bias, SDPA's CUDA backend is cuDNN, which builds an execution plan for every new
    shape (~140 ms for one call at LRA Text's size against 8 ms with a known shape,
    ``benchmarks/results/sdpa_backends_text_h200.json``), and variable-length batches bring a
    new length nearly every step. Padded keys get ``-inf`` logits and padded queries are
    dropped from the output, so ``[B, H, Nq, dh]`` is unchanged (dropout draws another pattern).
    ``bias`` broadcasts to ``[B, H, Nq, Nk]``.
    """
    nq, nk = q.shape[-2], k.shape[-2]
    pad_q, pad_k = -nq % multiple, -nk % multiple
    if not (pad_q or pad_k):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p)
    q, k, v = F.pad(q, (0, 0, 0, pad_q)), F.pad(k, (0, 0, 0, pad_k)), F.pad(v, (0, 0, 0, pad_k))
    bias = F.pad(bias, (0, pad_k), value=float("-inf"))
    if bias.dim() >= 2 and bias.shape[-2] == nq and nq > 1:  # per-query rows: padded queries see the real keys (no all--inf row)
        bias = F.pad(bias, (0, 0, 0, pad_q))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p)
    return out[..., :nq, :]


def reference_attention(q: Tensor, k: Tensor, v: Tensor, logit_bias: Tensor | None = None) -> Tensor:
    """Naive float64 ``softmax(QK^T / sqrt(dh) + bias) V`` for tests; ``logit_bias`` broadcasts to [B, H, Nq, Nk]."""
    q, k, v = q.double(), k.double(), v.double()
    logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if logit_bias is not None:
        logits = logits + logit_bias.double()
    return torch.softmax(logits, dim=-1) @ v


def _stacked_bias(q_bias: Tensor | None, kv_bias: Tensor | None) -> Tensor | None:
    return None if q_bias is None else torch.cat((q_bias, kv_bias))


class Attention(nn.Module):
    """Q, K/V and output projections of multi-head attention; the kernel is the caller's.

    ``q_proj`` and ``kv_proj`` are separate so the same module serves self- and
    cross-attention (queries from one sequence, keys/values from another). Self-attention
    runs them as one GEMM (``qkv``).
    """

    def __init__(self, dim: int, heads: int, qkv_bias: bool = True, proj_drop: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim={dim} must be divisible by heads={heads}")
        self.heads = heads
        self.head_dim = dim // heads
        self.q_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv_proj = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.out_proj = nn.Linear(dim, dim)
        self.out_drop = nn.Dropout(proj_drop) if proj_drop > 0 else nn.Identity()  # no dropout call at p=0

    def split_heads(self, x: Tensor) -> Tensor:
        """``[B, N, D] -> [B, H, N, dh]``."""
        b, n, _ = x.shape
        return x.view(b, n, self.heads, self.head_dim).transpose(1, 2)

    def qkv(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Project queries from ``x`` and keys/values from ``context`` (default ``x``); each ``[B, H, *, dh]``.

        Self-attention (no ``context``) projects q, k and v in one GEMM with the two layers' weights
        stacked: the same products as ``q_proj(x)`` and ``kv_proj(x)``, with one matmul, one cast of ``x``
        under autocast and one input gradient instead of two of each (eager MAELRE is bound by operator
        dispatch). q, k, v are then views of one ``[B, N, 3D]`` tensor.
        """
        if context is None:
            q, k, v = F.linear(x, torch.cat((self.q_proj.weight, self.kv_proj.weight)), _stacked_bias(self.q_proj.bias, self.kv_proj.bias)).chunk(3, dim=-1)
            return self.split_heads(q), self.split_heads(k), self.split_heads(v)
        k, v = self.kv_proj(context).chunk(2, dim=-1)
        return self.split_heads(self.q_proj(x)), self.split_heads(k), self.split_heads(v)

    def output(self, o: Tensor) -> Tensor:
        """``[B, H, N, dh] -> [B, N, D]`` through the output projection."""
        b, h, n, dh = o.shape
        return self.out_drop(self.out_proj(o.transpose(1, 2).reshape(b, n, h * dh)))

    def forward(self, x: Tensor, context: Tensor | None = None, kernel=exact_attention, **kernel_kwargs) -> Tensor:
        q, k, v = self.qkv(x, context)
        return self.output(kernel(q, k, v, **kernel_kwargs))
