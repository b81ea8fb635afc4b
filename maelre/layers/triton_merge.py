"""Fused Triton kernel for ToMe's windowed matching (``maelre.layers.merge.match_window``).

``match_window`` scores each A token against the B tokens within ``window`` positions and
keeps the best (cosine argmax). The PyTorch path (the reference and the CPU path)
normalizes the metric, then builds ``[B, Na, C, W]`` windows with ``unfold`` and runs
about ten operators; this kernel reads each A tile once, normalizes it, and streams the
``W`` candidate B rows through it (each divided by its own norm), keeping the running max
and its slot: one launch, no ``O(N C W)`` intermediate and no normalized copy of the
metric. It runs under ``no_grad`` (matching has no gradient), so there is no backward.
Scores accumulate in float32 and are returned in the metric's dtype, as the reference
returns them.

When it runs: ``maelre.layers._triton.available``.
"""
from __future__ import annotations

import torch
from torch import Tensor

from maelre.layers._triton import available, tl, triton

__all__ = ["available", "match_window"]

BLOCK_A = 32  # A tokens per program

if triton is not None:

    @triton.jit
    def _match_window_kernel(
        a_ptr, b_ptr, real_ptr, score_ptr, index_ptr,
        NA, NB, C, BEFORE, WIDTH,
        sab, san, sac, sbb, sbn, sbc, srb, srn,
        BA: tl.constexpr, CP: tl.constexpr, HAS_REAL: tl.constexpr,
    ):  # fmt: skip
        row, tile = tl.program_id(0), tl.program_id(1)
        j = tile * BA + tl.arange(0, BA)
        cols = tl.arange(0, CP)
        real_j, real_c = j < NA, cols < C
        a = tl.load(a_ptr + row * sab + j[:, None] * san + cols[None, :] * sac, mask=real_j[:, None] & real_c[None, :], other=0.0).to(tl.float32)
        a = a / tl.maximum(tl.sqrt(tl.sum(a * a, 1)), 1e-12)[:, None]  # as F.normalize: x / max(|x|, 1e-12)
        best = tl.full((BA,), float("-inf"), tl.float32)
        which = tl.zeros((BA,), tl.int32)
        s = 0
        while s < WIDTH:  # slot s = offset s - BEFORE; not range(): the interpreter needs a while for a runtime bound
            idx = j + s - BEFORE
            inside = real_j & (idx >= 0) & (idx < NB)
            valid = inside
            if HAS_REAL:
                valid = inside & (tl.load(real_ptr + row * srb + idx * srn, mask=inside, other=0) != 0)
            b = tl.load(b_ptr + row * sbb + idx[:, None] * sbn + cols[None, :] * sbc, mask=inside[:, None] & real_c[None, :], other=0.0).to(tl.float32)
            score = tl.where(valid, tl.sum(a * b, 1) / tl.maximum(tl.sqrt(tl.sum(b * b, 1)), 1e-12), float("-inf"))
            better = score > best  # strict: ties keep the first slot, as torch.max does
            best = tl.where(better, score, best)
            which = tl.where(better, s, which)
            s += 1
        index = tl.minimum(tl.maximum(j + which - BEFORE, 0), NB - 1)  # out of range only where best is -inf
        tl.store(score_ptr + row * NA + j, best.to(score_ptr.dtype.element_ty), mask=real_j)
        tl.store(index_ptr + row * NA + j, index.to(tl.int64), mask=real_j)


def match_window(a: Tensor, b: Tensor, b_real: Tensor | None, window: int) -> tuple[Tensor, Tensor]:
    """``merge.match_window`` of the normalized rows as one kernel: ``a [B, Na, C]`` and ``b [B, Nb, C]``
    of any norm (each row is divided by ``max(|row|, 1e-12)`` as it is read, as ``F.normalize`` does),
    ``b_real [B, Nb]`` bool or ``None`` (every B token is real).

    Returns ``(score, index)``, each ``[B, Na]``: the best cosine similarity within the
    window (``a``'s dtype, ``-inf`` without a real candidate) and its B index (long).
    A ``torch.library`` custom op: ``torch.compile`` keeps it in the graph as one opaque
    op (Inductor never sees the masked argmax it miscompiles, see ``merge.py``).
    """
    return _match_window_op(a, b, b_real, window)


@torch.library.custom_op("maelre::match_window", mutates_args=())
def _match_window_op(a: Tensor, b: Tensor, b_real: Tensor | None, window: int) -> tuple[Tensor, Tensor]:
    if triton is None:
        raise RuntimeError("the fused matching needs triton (it ships with torch's CUDA wheels); use merge.match_window on this machine")
    if window < 1:
        raise ValueError(f"match window must be >= 1 position, got {window}; use None for global matching")
    batch, na, c = a.shape
    nb = b.shape[1]
    if b.shape[0] != batch or b.shape[2] != c or (b_real is not None and b_real.shape != (batch, nb)):
        real_shape = None if b_real is None else tuple(b_real.shape)
        raise ValueError(f"a [B, Na, C], b [B, Nb, C] and b_real [B, Nb] must agree, got {tuple(a.shape)}, {tuple(b.shape)}, {real_shape}")
    before = min((window + 1) // 2, na)  # the reference's band of offsets, [-before, after]
    after = min((window - 1) // 2, nb - 1)
    score = torch.empty(batch, na, device=a.device, dtype=a.dtype)
    index = torch.empty(batch, na, device=a.device, dtype=torch.long)
    real = index if b_real is None else b_real.view(torch.uint8)  # without b_real the kernel never reads it
    _match_window_kernel[(batch, triton.cdiv(na, BLOCK_A))](
        a, b, real, score, index, na, nb, c, before, before + after + 1,
        *a.stride(), *b.stride(), *real.stride()[:2], BA=BLOCK_A, CP=max(16, triton.next_power_of_2(c)), HAS_REAL=b_real is not None,
    )  # fmt: skip
    return score, index


@_match_window_op.register_fake
def _(a: Tensor, b: Tensor, b_real: Tensor | None, window: int) -> tuple[Tensor, Tensor]:
    return a.new_empty(a.shape[:2]), a.new_empty(a.shape[:2], dtype=torch.long)
