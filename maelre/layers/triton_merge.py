"""Fused Triton kernels for ToMe's windowed matching and merge plan (``maelre.layers.merge``).

``match_window`` scores each A token against the B tokens within ``window`` positions and
keeps the best (cosine argmax). The PyTorch path (the reference and the CPU path)
normalizes the metric, then builds ``[B, Na, C, W]`` windows with ``unfold`` and runs
about ten operators; this kernel reads each A tile once, normalizes it, and streams the
``W`` candidate B rows through it (each divided by its own norm), keeping the running max
and its slot: one launch, no ``O(N C W)`` intermediate and no normalized copy of the
metric. It reads A (even columns) and B (odd columns) from the metric itself and gives padded
A tokens and a protected token 0 the score ``-inf``, so ``merge._choose`` slices and masks
nothing around it (``merge._match_scores`` is its PyTorch reference). It runs under ``no_grad`` (matching has no gradient), so there is no backward.
Scores accumulate in float32 and are returned in the metric's dtype, as the reference
returns them.

``plan`` is the rest of the merge plan, ``merge._plan``: the column each input token goes
to, the merged sizes, and each token's share of its merged token's size. The PyTorch path
builds them from a dozen operators (flags, a cumsum, a rank, a clamp, the match's slot
through a gather, a where, a copy, a scatter of the sizes, a gather and a division); the
kernels do it in five steps: (1) flags of the merged A tokens (which candidates merge,
``merge._chosen``, is decided here from their scores and ``r``: no compare launched per merge);
(2) the kept tokens' running rank, which is their slot; (3) merged A tokens take their match's
slot and the sizes are added into their slots; (4) each token's share; (5) the log of the
merged sizes (proportional attention's key bias, otherwise one ``log`` per block). The merged
sizes have no padding column (padding adds nothing; a row's cut-off sizes are one running
total). Slots are integers and sizes integer counts (exact in float32 in any order), so the
plan equals the reference up to the rounding of the one division.

It runs one of two ways, the same steps from the same ``@triton.jit`` helpers, bit for bit the
same results. Rows of at most ``ONE_PROGRAM_MAX_N`` tokens: one launch, one program per row
(``_plan_kernel``), the steps as passes over the row separated by block barriers; its scratch
flags live in the memory of the shares (written last), so its only allocations are its four
outputs. Longer rows: the tiled plan (``_plan_tiled``), one launch per step with a program per
tile of ``BLOCK_SLOTS`` columns (grid ``(B, tiles)``), the rank a two-level scan (each tile's
kept count; then each tile sums the counts before its own) and the cut-off sizes per-tile
partial sums; it zeroes its flags and the sizes first (two memsets). One program per row walks
its row serially (passes of ``N / BLOCK_SLOTS`` tiles each): at a batch of 1 and 64K tokens the
first merge walked ~365 tiles one after another on one of the H200's 132 SMs (~1,150 over the 14
merges of a MAELRE forward), while the tiled plan's depth is one tile per launch.
``one_program_plan`` holds the rule and why.

``merge_states`` is ``TokenMerge.merge(x)`` (the size-weighted average) once the plan is
known: ``out[b, slot[b, i]] += share[b, i] * x[b, i]``. The PyTorch path runs ``mul``,
``new_zeros`` and ``scatter_add_`` forward and ``gather`` and ``mul`` backward; here the
forward is a zeroed float32 buffer and one kernel that atomically adds every token's
weighted row into its slot, and the backward one kernel that gathers each token's
gradient from its slot (``share * grad_out[slot]``, no atomics). Padding (slot ``n_out``)
is never read and gets a zero gradient. The atomics add in float32 in any order, so the
result equals the reference up to the rounding of that order.

When they run: ``maelre.layers._triton.available``.

Under ``torch.compile`` each entry point is a ``torch.library`` custom op, so the graph keeps it
whole. Eager calls run the same Python functions directly (``merge_states`` through an
``autograd.Function``): a custom op's eager dispatch (schema binding, its autograd wrapper,
redispatch) costs tens of microseconds of host time per call, four calls per merge, and the
eager training step on a GPU is bound by host time (``benchmarks/host_proxy.py``).
"""
from __future__ import annotations

import torch
from torch import Tensor

from maelre.layers._triton import available, tl, triton

__all__ = ["available", "match_window", "merge_states", "plan"]

BLOCK_A = 32  # A tokens per program
BLOCK_SLOTS = 1024  # columns per tile of the plan kernels
ONE_PROGRAM_MAX_N = 3 * BLOCK_SLOTS  # rows up to this long: the one-program plan; longer rows: the tiled plan (``plan``)
BLOCK_TOKENS, BLOCK_CHANNELS = 32, 64  # tile of the state merge kernels
MERGE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)  # float64 stays on the PyTorch path (the kernels sum in float32)

if triton is not None:

    @triton.jit
    def _match_window_kernel(
        m_ptr, real_ptr, score_ptr, index_ptr,
        NA, NB, C, BEFORE, WIDTH,
        smb, smn, smc, srb, srn,
        BA: tl.constexpr, CP: tl.constexpr, HAS_REAL: tl.constexpr, PROTECT_FIRST: tl.constexpr,
    ):  # fmt: skip
        row, tile = tl.program_id(0), tl.program_id(1)
        j = tile * BA + tl.arange(0, BA)  # A token j is column 2j, B token j column 2j + 1
        cols = tl.arange(0, CP)
        real_j, real_c = j < NA, cols < C
        a = tl.load(m_ptr + row * smb + (2 * j)[:, None] * smn + cols[None, :] * smc, mask=real_j[:, None] & real_c[None, :], other=0.0).to(tl.float32)
        a = a / tl.maximum(tl.sqrt(tl.sum(a * a, 1)), 1e-12)[:, None]  # as F.normalize: x / max(|x|, 1e-12)
        best = tl.full((BA,), float("-inf"), tl.float32)
        which = tl.zeros((BA,), tl.int32)
        s = 0
        while s < WIDTH:  # slot s = offset s - BEFORE; not range(): the interpreter needs a while for a runtime bound
            idx = j + s - BEFORE
            inside = real_j & (idx >= 0) & (idx < NB)
            valid = inside
            if HAS_REAL:
                valid = inside & (tl.load(real_ptr + row * srb + (2 * idx + 1) * srn, mask=inside, other=0) != 0)
            b = tl.load(m_ptr + row * smb + (2 * idx + 1)[:, None] * smn + cols[None, :] * smc, mask=inside[:, None] & real_c[None, :], other=0.0).to(tl.float32)
            score = tl.where(valid, tl.sum(a * b, 1) / tl.maximum(tl.sqrt(tl.sum(b * b, 1)), 1e-12), float("-inf"))
            better = score > best  # strict: ties keep the first slot, as torch.max does
            best = tl.where(better, score, best)
            which = tl.where(better, s, which)
            s += 1
        index = tl.minimum(tl.maximum(j + which - BEFORE, 0), NB - 1)  # out of range only where best is -inf
        if HAS_REAL:  # a padded A token never merges (its index is kept, as merge._choose keeps it)
            best = tl.where(tl.load(real_ptr + row * srb + (2 * j) * srn, mask=real_j, other=0) != 0, best, float("-inf"))
        if PROTECT_FIRST:  # token 0 (a CLS token) never merges
            best = tl.where(j == 0, float("-inf"), best)
        tl.store(score_ptr + row * NA + j, best.to(score_ptr.dtype.element_ty), mask=real_j)
        tl.store(index_ptr + row * NA + j, index.to(tl.int64), mask=real_j)


    @triton.jit
    def _merges(r_ptr, row, R, HAS_R: tl.constexpr):
        """The row's ``r``: candidate ``k`` merges if ``k < r`` and its score is finite (``merge._chosen``)."""
        merges = R
        if HAS_R:
            merges = tl.load(r_ptr + row).to(tl.int32)
        return merges


    @triton.jit
    def _set_flags(src_row, best_row, flags, k, CAND, merges):
        """Flag (1) the A tokens of candidates ``k`` that merge away, clear (0) those of the candidates that do not."""
        inside = k < CAND
        src = tl.load(src_row + k, mask=inside, other=0)
        best = tl.load(best_row + k, mask=inside, other=float("-inf")).to(tl.float32)
        chosen = (best > float("-inf")) & (k < merges)
        tl.store(flags + src, chosen.to(tl.int8), mask=inside)  # top-k indices are distinct


    @triton.jit
    def _gone(flags, real_row, col, N, HAS_REAL: tl.constexpr):
        """``(inside, gone)`` of columns ``col``: inside the row; merged away (a flagged A token) or padding."""
        inside = col < N
        gone = tl.load(flags + col // 2, mask=inside & (col % 2 == 0), other=0) != 0
        if HAS_REAL:
            gone = gone | (tl.load(real_row + col, mask=inside, other=1) == 0)
        return inside, gone


    @triton.jit
    def _store_ranks(slot_row, col, inside, gone, first, N_OUT, LIMIT):
        """Slots of columns ``col`` before the merged A tokens join their matches: a kept token's rank among the kept
        ones (``first``: the rank of the tile's first kept token; cut at ``LIMIT``), ``N_OUT`` for the others.
        Returns how many of ``col`` are kept."""
        keep = (inside & ~gone).to(tl.int32)
        rank = first + tl.cumsum(keep, 0) - 1
        tl.store(slot_row + col, tl.where(gone, N_OUT, tl.minimum(rank, LIMIT)).to(tl.int64), mask=inside)
        return tl.sum(keep, 0)


    @triton.jit
    def _join_and_add_sizes(flags, dst_row, sizes_row, slot_row, total_row, col, N, N_OUT):
        """Merged A tokens among columns ``col`` take their B match's slot, then every token's size is added into
        its slot. B tokens never move, so no tile reads a slot that another writes here; sizes are integer counts,
        so the atomics' order cannot change the sums. Returns the sizes cut off in column ``N_OUT`` (padding: 0;
        real tokens past ``N_OUT``), ``merge._plan``'s extra column."""
        inside = col < N
        merged = tl.load(flags + col // 2, mask=inside & (col % 2 == 0), other=0) != 0
        dst = tl.load(dst_row + col // 2, mask=merged, other=0)
        slot = tl.load(slot_row + col, mask=inside & ~merged, other=N_OUT)
        slot = tl.where(merged, tl.load(slot_row + 2 * dst + 1, mask=merged, other=N_OUT), slot)
        tl.store(slot_row + col, slot, mask=merged)
        kept = slot < N_OUT
        size = tl.load(sizes_row + col, mask=inside, other=0.0)
        tl.atomic_add(total_row + slot, size, mask=kept)
        return tl.sum(tl.where(kept, 0.0, size), 0)


    @triton.jit
    def _store_shares(slot_row, sizes_row, total_row, share_row, col, N, N_OUT, dropped):
        """Every token's share of its output token's size (0 for padding); ``dropped``: the cut-off column's size."""
        inside = col < N
        slot = tl.load(slot_row + col, mask=inside, other=N_OUT)
        kept = slot < N_OUT
        total = tl.where(kept, tl.load(total_row + slot, mask=inside & kept, other=1.0), dropped)
        size = tl.load(sizes_row + col, mask=inside, other=0.0)
        tl.store(share_row + col, size / tl.maximum(total, 1e-12), mask=inside)


    @triton.jit
    def _store_logs(total_row, log_row, col, N_OUT):
        """Log of the output sizes ``col``, the key bias of proportional attention (``-inf`` for empty padding columns)."""
        inside = col < N_OUT
        tl.store(log_row + col, tl.log(tl.load(total_row + col, mask=inside, other=1.0)), mask=inside)


    @triton.jit
    def _sum_first(ptr, end, BLOCK: tl.constexpr):
        """``ptr[0] + ... + ptr[end - 1]`` in ``ptr``'s type (a row of per-tile counts or sizes)."""
        offs = tl.arange(0, BLOCK)
        total = tl.zeros((), ptr.dtype.element_ty)
        start = 0  # (a loop that starts past a constant end, e.g. TILES specialized to 1, fails to compile)
        while start < end:
            i = start + offs
            total += tl.sum(tl.load(ptr + i, mask=i < end, other=0), 0)
            start += BLOCK
        return total


    @triton.jit
    def _plan_kernel(
        src_ptr, best_ptr, r_ptr, dst_ptr, real_ptr, sizes_ptr, slot_ptr, total_ptr, share_ptr, log_ptr,
        N, NA, CAND, R, N_OUT, LIMIT,
        BLOCK: tl.constexpr, HAS_REAL: tl.constexpr, HAS_R: tl.constexpr,
    ):  # fmt: skip
        """The whole plan of one row per program (grid ``(B,)``): the passes of ``plan`` over the row, tile by tile,
        separated by block barriers. Its scratch flags live in the memory of the shares, written last."""
        row = tl.program_id(0).to(tl.int64)
        offs = tl.arange(0, BLOCK)
        src_row, best_row, dst_row = src_ptr + row * CAND, best_ptr + row * CAND, dst_ptr + row * NA
        real_row, sizes_row, slot_row, share_row = real_ptr + row * N, sizes_ptr + row * N, slot_ptr + row * N, share_ptr + row * N
        total_row, log_row = total_ptr + row * N_OUT, log_ptr + row * N_OUT
        flags = share_row.to(tl.pointer_type(tl.int8))  # NA bytes in the row's 4 N bytes of shares
        start = 0
        while start < NA:  # 1. flags of the A tokens merged away: cleared, then set from the chosen candidates
            tl.store(flags + start + offs, tl.zeros((BLOCK,), tl.int8), mask=start + offs < NA)
            start += BLOCK
        start = 0
        while start < N_OUT:  # (and the output sizes cleared for step 3)
            tl.store(total_row + start + offs, tl.zeros((BLOCK,), tl.float32), mask=start + offs < N_OUT)
            start += BLOCK
        tl.debug_barrier()
        merges = _merges(r_ptr, row, R, HAS_R)
        start = 0
        while start < CAND:
            _set_flags(src_row, best_row, flags, start + offs, CAND, merges)
            start += BLOCK
        tl.debug_barrier()
        start = 0
        first = tl.zeros((), tl.int32)
        while start < N:  # 2. rank among the kept tokens; merged A tokens and padding to N_OUT
            inside, gone = _gone(flags, real_row, start + offs, N, HAS_REAL)
            first += _store_ranks(slot_row, start + offs, inside, gone, first, N_OUT, LIMIT)
            start += BLOCK
        tl.debug_barrier()
        start = 0
        dropped = tl.zeros((), tl.float32)
        while start < N:  # 3. merged A tokens join their B matches; output sizes
            dropped += _join_and_add_sizes(flags, dst_row, sizes_row, slot_row, total_row, start + offs, N, N_OUT)
            start += BLOCK
        tl.debug_barrier()
        start = 0
        while start < N:  # 4. every token's share (overwrites the flags, read for the last time in step 3)
            _store_shares(slot_row, sizes_row, total_row, share_row, start + offs, N, N_OUT, dropped)
            start += BLOCK
        start = 0
        while start < N_OUT:  # 5. log of the output sizes
            _store_logs(total_row, log_row, start + offs, N_OUT)
            start += BLOCK


    # The tiled plan: the same steps as _plan_kernel, one launch each, one program per tile of BLOCK columns
    # (grid (B, tiles)); the running rank is a two-level scan (each tile's kept count, then each tile sums
    # those before it), the cut-off sizes are per-tile partial sums. Flags and output sizes start zeroed.

    @triton.jit
    def _plan_flags_kernel(src_ptr, best_ptr, r_ptr, flag_ptr, NA, CAND, R, BLOCK: tl.constexpr, HAS_R: tl.constexpr):
        """Step 1 over a tile of candidates: flag the A tokens merged away."""
        row, tile = tl.program_id(0).to(tl.int64), tl.program_id(1)
        k = tile * BLOCK + tl.arange(0, BLOCK)
        _set_flags(src_ptr + row * CAND, best_ptr + row * CAND, flag_ptr + row * NA, k, CAND, _merges(r_ptr, row, R, HAS_R))


    @triton.jit
    def _plan_count_kernel(flag_ptr, real_ptr, count_ptr, N, NA, TILES, BLOCK: tl.constexpr, HAS_REAL: tl.constexpr):
        """Step 2a: how many tokens of each tile are kept."""
        row, tile = tl.program_id(0).to(tl.int64), tl.program_id(1)
        inside, gone = _gone(flag_ptr + row * NA, real_ptr + row * N, tile * BLOCK + tl.arange(0, BLOCK), N, HAS_REAL)
        tl.store(count_ptr + row * TILES + tile, tl.sum((inside & ~gone).to(tl.int32), 0))


    @triton.jit
    def _plan_rank_kernel(
        flag_ptr, real_ptr, count_ptr, slot_ptr, N, NA, TILES, N_OUT, LIMIT, BLOCK: tl.constexpr, HAS_REAL: tl.constexpr
    ):  # fmt: skip
        """Step 2b: the kept tokens' ranks, from the kept counts of the tiles before this one."""
        row, tile = tl.program_id(0).to(tl.int64), tl.program_id(1)
        col = tile * BLOCK + tl.arange(0, BLOCK)
        inside, gone = _gone(flag_ptr + row * NA, real_ptr + row * N, col, N, HAS_REAL)
        _store_ranks(slot_ptr + row * N, col, inside, gone, _sum_first(count_ptr + row * TILES, tile, BLOCK), N_OUT, LIMIT)


    @triton.jit
    def _plan_sizes_kernel(
        flag_ptr, dst_ptr, sizes_ptr, slot_ptr, total_ptr, dropped_ptr, N, NA, N_OUT, TILES, BLOCK: tl.constexpr
    ):  # fmt: skip
        """Step 3: merged A tokens join their matches; sizes into their slots; the tile's cut-off sizes."""
        row, tile = tl.program_id(0).to(tl.int64), tl.program_id(1)
        col = tile * BLOCK + tl.arange(0, BLOCK)
        dropped = _join_and_add_sizes(flag_ptr + row * NA, dst_ptr + row * NA, sizes_ptr + row * N, slot_ptr + row * N, total_ptr + row * N_OUT, col, N, N_OUT)
        tl.store(dropped_ptr + row * TILES + tile, dropped)


    @triton.jit
    def _plan_shares_kernel(
        slot_ptr, sizes_ptr, total_ptr, dropped_ptr, share_ptr, log_ptr, N, N_OUT, TILES, BLOCK: tl.constexpr
    ):  # fmt: skip
        """Steps 4 and 5 over a tile of columns: shares, and the log of the output sizes (``N_OUT <= N``)."""
        row, tile = tl.program_id(0).to(tl.int64), tl.program_id(1)
        col = tile * BLOCK + tl.arange(0, BLOCK)
        total_row = total_ptr + row * N_OUT
        dropped = _sum_first(dropped_ptr + row * TILES, TILES, BLOCK)
        _store_shares(slot_ptr + row * N, sizes_ptr + row * N, total_row, share_ptr + row * N, col, N, N_OUT, dropped)
        _store_logs(total_row, log_ptr + row * N_OUT, col, N_OUT)


    @triton.jit
    def _merge_tile(share_ptr, slot_ptr, N, N_OUT, BT: tl.constexpr, BC: tl.constexpr):
        """This program's tile of both state-merge kernels: ``(row, tokens i [BT], channels c [BC], their slots,
        kept (not padding), their shares)``."""
        row, tile, block = tl.program_id(0).to(tl.int64), tl.program_id(1), tl.program_id(2)
        i = tile * BT + tl.arange(0, BT)
        c = block * BC + tl.arange(0, BC)
        slot = tl.load(slot_ptr + row * N + i, mask=i < N, other=N_OUT)
        kept = slot < N_OUT  # padding's slot N_OUT: its values (any, even NaN) are never read
        share = tl.load(share_ptr + row * N + i, mask=kept, other=0.0)
        return row, i, c, slot, kept, share


    @triton.jit
    def _merge_states_kernel(
        x_ptr, share_ptr, slot_ptr, out_ptr, N, C, N_OUT, sxb, sxn, sxc,
        BT: tl.constexpr, BC: tl.constexpr,
    ):  # fmt: skip
        row, i, c, slot, kept, share = _merge_tile(share_ptr, slot_ptr, N, N_OUT, BT, BC)
        inside = kept[:, None] & (c < C)[None, :]
        x = tl.load(x_ptr + row * sxb + i[:, None] * sxn + c[None, :] * sxc, mask=inside, other=0.0).to(tl.float32)
        tl.atomic_add(out_ptr + (row * N_OUT + slot[:, None]) * C + c[None, :], share[:, None] * x, mask=inside)


    @triton.jit
    def _merge_states_grad_kernel(
        g_ptr, share_ptr, slot_ptr, dx_ptr, N, C, N_OUT, sgb, sgn, sgc,
        BT: tl.constexpr, BC: tl.constexpr,
    ):  # fmt: skip
        row, i, c, slot, kept, share = _merge_tile(share_ptr, slot_ptr, N, N_OUT, BT, BC)
        g = tl.load(g_ptr + row * sgb + slot[:, None] * sgn + c[None, :] * sgc, mask=kept[:, None] & (c < C)[None, :], other=0.0)
        dx = share[:, None] * g.to(tl.float32)  # padding: 0, as the reference's gradient through the cut-off column
        tl.store(dx_ptr + (row * N + i[:, None]) * C + c[None, :], dx.to(dx_ptr.dtype.element_ty), mask=(i < N)[:, None] & (c < C)[None, :])


def match_window(metric: Tensor, real: Tensor | None, window: int, protect_first: bool = False) -> tuple[Tensor, Tensor]:
    """``merge._choose``'s scores before its top-k, as one kernel: every A token's (even column of ``metric [B, N, C]``)
    best B match (odd column) within ``window`` positions, by ``merge.match_window`` on the normalized rows.

    ``metric`` may have any norm and strides (each row is divided by ``max(|row|, 1e-12)`` as it is read, as
    ``F.normalize`` does); ``real [B, N]`` bool marks real tokens (``None``: all are): padded B tokens are never
    matched and padded A tokens score ``-inf``, as does token 0 with ``protect_first``. The kernel reads A, B and
    their masks from the interleaved columns themselves: no slice of ``metric`` nor of ``real``, no masking after.

    Returns ``(score, index)``, each ``[B, (N + 1) // 2]``: the best cosine similarity within the window
    (``metric``'s dtype, ``-inf`` without a real candidate, for padding and for a protected token 0) and its B
    index (long). Under ``torch.compile`` a ``torch.library`` custom op: the graph keeps it as one opaque op
    (Inductor never sees the masked argmax it miscompiles, see ``merge.py``). Eager calls skip the op's dispatch
    (module docstring).
    """
    return (_match_window_op if torch.compiler.is_compiling() else _match_window)(metric, real, window, protect_first)


def _match_window(metric: Tensor, real: Tensor | None, window: int, protect_first: bool) -> tuple[Tensor, Tensor]:
    if triton is None:
        raise RuntimeError("the fused matching needs triton (it ships with torch's CUDA wheels); use merge.match_window on this machine")
    if window < 1:
        raise ValueError(f"match window must be >= 1 position, got {window}; use None for global matching")
    batch, n, c = metric.shape
    if n < 2 or (real is not None and real.shape != (batch, n)):
        raise ValueError(f"metric [B, N, C] with N >= 2 and real [B, N] must agree, got {tuple(metric.shape)} and {None if real is None else tuple(real.shape)}")
    na, nb = (n + 1) // 2, n // 2
    before = min((window + 1) // 2, na)  # the reference's band of offsets, [-before, after]
    after = min((window - 1) // 2, nb - 1)
    score = torch.empty(batch, na, device=metric.device, dtype=metric.dtype)
    index = torch.empty(batch, na, device=metric.device, dtype=torch.long)
    real_u8 = index if real is None else real.view(torch.uint8)  # without padding the kernel never reads it
    _match_window_kernel[(batch, triton.cdiv(na, BLOCK_A))](
        metric, real_u8, score, index, na, nb, c, before, before + after + 1, *metric.stride(), *real_u8.stride()[:2],
        BA=BLOCK_A, CP=max(16, triton.next_power_of_2(c)), HAS_REAL=real is not None, PROTECT_FIRST=protect_first,
    )  # fmt: skip
    return score, index


_match_window_op = torch.library.custom_op("maelre::match_window", _match_window, mutates_args=())


@_match_window_op.register_fake
def _(metric: Tensor, real: Tensor | None, window: int, protect_first: bool) -> tuple[Tensor, Tensor]:
    na = (metric.shape[1] + 1) // 2
    return metric.new_empty(metric.shape[0], na), metric.new_empty(metric.shape[0], na, dtype=torch.long)


def plan(
    real: Tensor | None, sizes: Tensor, src: Tensor, dst: Tensor, best: Tensor, r: Tensor | int, n: int, n_out: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``merge._plan`` as kernels: ``(slot [B, N] long, merged sizes [B, n_out], share [B, N] float32,
    log of the merged sizes [B, n_out] float32)``, the last for proportional attention (``-inf`` for padding).

    ``src, best [B, candidates]`` (the top-k A tokens and their scores), ``r`` (``[B]`` long or one int:
    a candidate merges if it is among its row's first ``r`` and its score is finite), ``dst [B, Na]``
    (every A token's B match), ``sizes [B, N]`` (integer counts, 0 = padding) and ``real [B, N]``
    bool or ``None`` (no padding). A custom op under ``torch.compile``, like ``match_window``.

    Rows of at most ``ONE_PROGRAM_MAX_N`` tokens take one launch, a program per row (``_plan_kernel``);
    longer rows the tiled plan, five launches with a program per tile of ``BLOCK_SLOTS`` columns (module
    docstring). Both give the same slots, sizes and shares, bit for bit.
    """
    r_rows, r_all = (r, 0) if isinstance(r, Tensor) else (None, r)
    return (_plan_op if torch.compiler.is_compiling() else _plan)(real, sizes, src, dst, best, r_rows, r_all, n, n_out)


def one_program_plan(n: int) -> bool:
    """Whether a plan of rows of ``n`` tokens runs as one program per row (else tiled): ``n <= ONE_PROGRAM_MAX_N``.

    The one-program kernel walks its row serially, about 5 passes of ``cdiv(n, BLOCK_SLOTS)`` dependent tiles,
    so its time grows with ``n`` however many rows run beside it; the tiled plan's depth is one tile per launch,
    for 5 launches and 2 memsets. A batch only fills more SMs: it never shortens a row's walk, hence the rule
    reads ``n`` alone. Timed on the H200 (``benchmarks/results/plan_kernel_timing_h200.md``, CUDA graphs): at
    4,096 tokens the tiled plan takes 0.022 ms against the one program's 0.033 (at 65,536: 0.022 against 0.48), while the
    shorter rows of the later merges of a 4K forward take 0.188 ms one program per row against 0.210 tiled.
    So up to 3 tiles a row (3,072 tokens) the one launch stays; from 4 tiles the plan is tiled.
    """
    return n <= ONE_PROGRAM_MAX_N


def _plan(
    real: Tensor | None, sizes: Tensor, src: Tensor, dst: Tensor, best: Tensor, r_rows: Tensor | None, r_all: int, n: int, n_out: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    if triton is None:
        raise RuntimeError("the fused merge plan needs triton (it ships with torch's CUDA wheels); use merge._plan on this machine")
    batch, candidates = src.shape
    na = dst.shape[1]
    if best.shape != src.shape or dst.shape[0] != batch or na != (n + 1) // 2 or sizes.shape != (batch, n) or (real is not None and real.shape != (batch, n)) or (r_rows is not None and r_rows.shape != (batch,)):
        raise ValueError(
            f"src, best [B, C], r [B], dst [B, (N + 1) // 2], sizes and real [B, N] must agree with N={n}, "
            f"got {tuple(src.shape)}, {tuple(best.shape)}, {tuple(dst.shape)}, {tuple(sizes.shape)}"
        )
    new = dict(device=src.device)
    slot, share = torch.empty(batch, n, dtype=torch.long, **new), torch.empty(batch, n, dtype=torch.float32, **new)
    # the merged sizes without merge._plan's padding column (padding adds nothing and takes share 0): [B, n_out] contiguous
    total, log_total = torch.empty(batch, n_out, dtype=torch.float32, **new), torch.empty(batch, n_out, dtype=torch.float32, **new)
    real_u8 = slot if real is None else real.contiguous().view(torch.uint8)  # without padding the kernels never read it
    sizes32 = sizes if sizes.dtype == torch.float32 else sizes.float()
    src, best, dst, sizes32 = src.contiguous(), best.contiguous(), dst.contiguous(), sizes32.contiguous()
    r_ptr = src if r_rows is None else r_rows.contiguous()  # without per-row r the kernels never read it
    limit = n_out - int(real is None)  # unpadded rows have no cut-off column: extra tokens join the last one
    specialize = dict(HAS_REAL=real is not None, HAS_R=r_rows is not None)  # the kernels' constexpr switches
    if one_program_plan(n):
        _plan_kernel[(batch,)](
            src, best, r_ptr, dst, real_u8, sizes32, slot, total, share, log_total, n, na, candidates, r_all, n_out, limit,
            BLOCK=BLOCK_SLOTS, **specialize,
        )  # fmt: skip
    else:
        _plan_tiled(real_u8, sizes32, src, dst, best, r_ptr, r_all, slot, total, share, log_total, n, n_out, limit, **specialize)
    # the strides the fake kernel promises torch.compile: contiguous [B, n_out]
    return slot, total if sizes.dtype == torch.float32 else total.to(sizes.dtype), share, log_total


def _plan_tiled(
    real_u8: Tensor, sizes: Tensor, src: Tensor, dst: Tensor, best: Tensor, r_ptr: Tensor, r_all: int,
    slot: Tensor, total: Tensor, share: Tensor, log_total: Tensor, n: int, n_out: int, limit: int, HAS_REAL: bool, HAS_R: bool,
) -> None:
    """The plan of long rows into ``slot, total, share, log_total``: a program per tile of each step (module docstring)."""
    (batch, candidates), na = src.shape, dst.shape[1]
    tiles = triton.cdiv(n, BLOCK_SLOTS)
    flags = torch.zeros(batch, na, dtype=torch.int8, device=src.device)  # 1: an A token merged away
    counts = torch.empty(batch, tiles, dtype=torch.int32, device=src.device)  # each tile's kept tokens
    dropped = torch.empty(batch, tiles, dtype=torch.float32, device=src.device)  # each tile's cut-off sizes
    total.zero_()
    grid = (batch, tiles)
    if candidates:
        _plan_flags_kernel[(batch, triton.cdiv(candidates, BLOCK_SLOTS))](src, best, r_ptr, flags, na, candidates, r_all, BLOCK=BLOCK_SLOTS, HAS_R=HAS_R)
    _plan_count_kernel[grid](flags, real_u8, counts, n, na, tiles, BLOCK=BLOCK_SLOTS, HAS_REAL=HAS_REAL)
    _plan_rank_kernel[grid](flags, real_u8, counts, slot, n, na, tiles, n_out, limit, BLOCK=BLOCK_SLOTS, HAS_REAL=HAS_REAL)
    _plan_sizes_kernel[grid](flags, dst, sizes, slot, total, dropped, n, na, n_out, tiles, BLOCK=BLOCK_SLOTS)
    _plan_shares_kernel[grid](slot, sizes, total, dropped, share, log_total, n, n_out, tiles, BLOCK=BLOCK_SLOTS)


_plan_op = torch.library.custom_op("maelre::merge_plan", _plan, mutates_args=())


@_plan_op.register_fake
def _(
    real: Tensor | None, sizes: Tensor, src: Tensor, dst: Tensor, best: Tensor, r_rows: Tensor | None, r_all: int, n: int, n_out: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    b = src.shape[0]
    return src.new_empty(b, n), sizes.new_empty(b, n_out), sizes.new_empty(b, n, dtype=torch.float32), sizes.new_empty(b, n_out, dtype=torch.float32)


def merge_states(x: Tensor, share: Tensor, slot: Tensor, n_out: int, dtype: torch.dtype | None = None) -> Tensor:
    """``TokenMerge.merge(x)`` as kernels: ``out [B, n_out, ...]`` in ``dtype`` (default ``x``'s), ``out[b, slot[b, i]] += share[b, i] * x[b, i]``.

    ``x [B, N, ...]`` (float32, bfloat16 or float16; summed in float32), ``share [B, N]``
    float32 and ``slot [B, N]`` long from the plan (``merge._plan``); tokens whose slot is
    ``n_out`` (padding) are dropped. Differentiable in ``x`` (``share`` and ``slot`` come
    from the plan, which has no gradient). A custom op under ``torch.compile``, like ``match_window``;
    eagerly an ``autograd.Function`` around the same two functions.
    """
    b, n = x.shape[:2]
    dtype = x.dtype if dtype is None else dtype
    rows = x if x.dim() == 3 else x.reshape(b, n, -1)  # no view (nor its backward) for the usual [B, N, C]
    if torch.compiler.is_compiling():
        out = _merge_states_op(rows, share, slot, n_out, dtype)
    elif torch.is_grad_enabled() and x.requires_grad:
        out = _MergeStates.apply(rows, share, slot, n_out, dtype)
    else:  # nothing to differentiate (MAELRE's keys, inference): no autograd.Function
        out = _merge_states(rows, share, slot, n_out, dtype)
    return out if x.dim() == 3 else out.view(b, n_out, *x.shape[2:])


def _merge_grid(b: int, n: int, c: int) -> tuple[int, int, int]:
    return b, triton.cdiv(n, BLOCK_TOKENS), triton.cdiv(c, BLOCK_CHANNELS)


def _check_merge(x: Tensor, share: Tensor, slot: Tensor) -> None:
    if triton is None:
        raise RuntimeError("the fused state merge needs triton (it ships with torch's CUDA wheels); use TokenMerge.merge's PyTorch path on this machine")
    if x.dim() != 3 or share.shape != x.shape[:2] or slot.shape != x.shape[:2] or share.dtype != torch.float32 or x.dtype not in MERGE_DTYPES:
        raise ValueError(
            f"x [B, N, C] (float32, bfloat16 or float16), share [B, N] float32 and slot [B, N] must agree, "
            f"got {tuple(x.shape)} {x.dtype}, {tuple(share.shape)} {share.dtype}, {tuple(slot.shape)}"
        )


def _merge_states(x: Tensor, share: Tensor, slot: Tensor, n_out: int, dtype: torch.dtype) -> Tensor:
    """``[B, n_out, C]`` in ``dtype``: the weighted rows of ``x [B, N, C]`` summed (in float32) into their slots."""
    _check_merge(x, share, slot)
    b, n, c = x.shape
    out = torch.zeros(b, n_out, c, device=x.device, dtype=torch.float32)
    _merge_states_kernel[_merge_grid(b, n, c)](
        x, share.contiguous(), slot.contiguous(), out, n, c, n_out, *x.stride(), BT=BLOCK_TOKENS, BC=BLOCK_CHANNELS
    )
    return out if dtype == torch.float32 else out.to(dtype)  # no no-op cast (one dispatch less)


_merge_states_op = torch.library.custom_op("maelre::merge_states", _merge_states, mutates_args=())


@_merge_states_op.register_fake
def _(x: Tensor, share: Tensor, slot: Tensor, n_out: int, dtype: torch.dtype) -> Tensor:
    return x.new_empty(x.shape[0], n_out, x.shape[2], dtype=dtype)


def _merge_states_backward(grad_out: Tensor, share: Tensor, slot: Tensor, dtype: torch.dtype) -> Tensor:
    """``grad_x [B, N, C]`` in ``dtype``: ``share[b, i] * grad_out[b, slot[b, i]]`` (0 for padding)."""
    b, c = grad_out.shape[0], grad_out.shape[2]
    n = slot.shape[1]
    grad_x = torch.empty(b, n, c, device=grad_out.device, dtype=dtype)
    _merge_states_grad_kernel[_merge_grid(b, n, c)](
        grad_out, share.contiguous(), slot.contiguous(), grad_x, n, c, grad_out.shape[1], *grad_out.stride(), BT=BLOCK_TOKENS, BC=BLOCK_CHANNELS
    )
    return grad_x


_merge_states_backward_op = torch.library.custom_op("maelre::merge_states_backward", _merge_states_backward, mutates_args=())


@_merge_states_backward_op.register_fake
def _(grad_out: Tensor, share: Tensor, slot: Tensor, dtype: torch.dtype) -> Tensor:
    return grad_out.new_empty(grad_out.shape[0], slot.shape[1], grad_out.shape[2], dtype=dtype)


def _merge_states_setup(ctx, inputs: tuple, output: Tensor) -> None:
    x, share, slot = inputs[:3]
    ctx.save_for_backward(share, slot)
    ctx.dtype = x.dtype


def _merge_states_grad(ctx, grad_out: Tensor, backward=_merge_states_backward_op) -> tuple:
    """``x``'s gradient through ``backward`` (the custom op, or eagerly its function)."""
    share, slot = ctx.saved_tensors
    return backward(grad_out, share, slot, ctx.dtype), None, None, None, None  # the plan has no gradient


_merge_states_op.register_autograd(_merge_states_grad, setup_context=_merge_states_setup)


class _MergeStates(torch.autograd.Function):
    """The eager ``_merge_states_op``: the same forward and backward without the custom op's dispatch."""

    @staticmethod
    def forward(ctx, x: Tensor, share: Tensor, slot: Tensor, n_out: int, dtype: torch.dtype) -> Tensor:
        _merge_states_setup(ctx, (x, share, slot, n_out, dtype), None)
        return _merge_states(x, share, slot, n_out, dtype)

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple:
        return _merge_states_grad(ctx, grad_out, _merge_states_backward)
