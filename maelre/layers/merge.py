"""Token merging by bipartite soft matching (ToMe, Bolya et al., ICLR 2023) for padded batches.

Every token carries a size ``sizes [B, N]`` (float): how many input tokens it stands for;
real tokens start at 1 and padding has size 0, so ``mask == sizes > 0``. A merge

1. splits the tokens alternately into A (even positions) and B (odd positions),
2. scores each A token against B by cosine similarity of a ``metric`` (the attention
   keys, averaged over heads, or the states) and keeps its best B match,
3. merges the ``r[i]`` highest-scoring A tokens of row ``i`` into their matches as a
   size-weighted average (sizes add up),
4. compacts each row so real tokens come first, in their original order, and keeps the
   first ``n_out`` columns.

Padding is never chosen as a source (A) nor as a destination (B). ``n_out`` is a Python
int the caller derives from the padded length alone (``N - r(N)`` for a schedule ``r``
that is non-decreasing and 1-Lipschitz), so no value ever travels from the device to
the host and each row of a padded batch merges exactly as it would on its own.

Global matching builds the ``(N/2) x (N/2)`` A-to-B score matrix (inherent to ToMe:
at long N it costs about as much as one full attention). ``window=w`` scores A tokens
only against B tokens at most ``w`` positions away: ``O(N w)`` time and memory.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

MergeFn = Callable[..., Tensor]
UnmergeFn = Callable[[Tensor], Tensor]


def compaction_order(keep: Tensor) -> tuple[Tensor, Tensor]:
    """Stable "kept first" permutation of each row of ``keep [B, N]`` (bool).

    Returns ``(order, slot)``, both ``[B, N]`` long: ``x.gather(1, order)`` puts the kept
    tokens first and the rest after, each group in its original order, and ``slot`` is the
    inverse (the new column of every old column). Linear time (cumsum + scatter), no sort.
    """
    kept = keep.long()
    kept_before = kept.cumsum(1) - kept
    dropped_before = (1 - kept).cumsum(1) - (1 - kept)
    slot = torch.where(keep, kept_before, kept.sum(1, keepdim=True) + dropped_before)
    columns = torch.arange(keep.shape[1], device=keep.device).expand_as(slot)
    order = torch.empty_like(slot).scatter_(1, slot, columns)
    return order, slot


def match_global(a: Tensor, b: Tensor, b_real: Tensor) -> tuple[Tensor, Tensor]:
    """Best B match of every A token over all of B.

    Args:
        a: ``[B, Na, C]`` unit-norm metric of the A tokens.
        b: ``[B, Nb, C]`` unit-norm metric of the B tokens.
        b_real: ``[B, Nb]`` bool, False for padded B tokens (never matched).

    Returns:
        ``(score, index)``, each ``[B, Na]``: the best cosine similarity (``-inf`` when no
        real B token exists) and the B index it belongs to.
    """
    scores = a @ b.transpose(-1, -2)
    scores = scores.masked_fill(~b_real[:, None, :], float("-inf"))
    return scores.max(dim=-1)


def match_window(a: Tensor, b: Tensor, b_real: Tensor, window: int) -> tuple[Tensor, Tensor]:
    """Like ``match_global``, but A token ``j`` (position ``2j``) only sees B tokens within ``window`` positions.

    B token ``j + o`` sits at position ``2j + 2o + 1``, so ``|2o + 1| <= window`` gives the
    offsets ``o`` in ``[-ceil(window / 2), floor((window - 1) / 2)]``: a band of ``W ~ window``
    candidates per A token, scored by one batched product over ``[B, Na, C, W]`` windows
    (``O(N window)`` memory), never an ``Na x Nb`` matrix.
    """
    if window < 1:
        raise ValueError(f"match window must be >= 1 position, got {window}; use None for global matching")
    na, nb = a.shape[1], b.shape[1]
    before = min((window + 1) // 2, na)  # offsets beyond the sequence cannot match anything
    after = min((window - 1) // 2, nb - 1)
    width = before + after + 1
    pad = (before, na + after - nb)
    windows = F.pad(b, (0, 0, *pad)).unfold(1, width, 1)  # [B, Na, C, W]; slot s = offset s - before
    valid = F.pad(b_real, pad, value=False).unfold(1, width, 1)  # [B, Na, W]
    scores = (a.unsqueeze(-2) @ windows).squeeze(-2)
    score, which = scores.masked_fill(~valid, float("-inf")).max(dim=-1)
    index = torch.arange(na, device=a.device) + which - before
    return score, index.clamp(0, nb - 1)  # out-of-range only where score is -inf


def take_tokens(x: Tensor, index: Tensor) -> Tensor:
    """``x[b, index[b, j]]`` for ``x [B, N, ...]`` and ``index [B, M]`` -> ``[B, M, ...]``.

    Advanced indexing rather than ``gather``: its backward keeps only the index, while
    ``gather`` keeps all of ``x`` alive for backward.
    """
    return x[torch.arange(x.shape[0], device=x.device)[:, None], index]


def _interleave(even: Tensor, odd: Tensor) -> Tensor:
    """Inverse of ``x[:, ::2], x[:, 1::2]`` for ``[B, *]`` tensors."""
    out = even.new_empty(even.shape[0], even.shape[1] + odd.shape[1])
    out[:, ::2] = even
    out[:, 1::2] = odd
    return out


def _descending_rank(score: Tensor) -> Tensor:
    """Rank of every entry within its row, 0 = highest (ties keep index order)."""
    order = torch.sort(score, dim=1, descending=True, stable=True).indices
    ranks = torch.arange(score.shape[1], device=score.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, ranks)


def bipartite_soft_matching(
    metric: Tensor,
    sizes: Tensor,
    r: Tensor,
    n_out: int,
    *,
    protect_first: bool = False,
    window: int | None = None,
) -> tuple[MergeFn, UnmergeFn]:
    """Plan one ToMe merge of a padded batch; return ``(merge, unmerge)`` closures.

    Args:
        metric: ``[B, N, C]`` similarity features (keys averaged over heads, or states).
        sizes: ``[B, N]`` float token sizes, 0 = padding.
        r: ``[B]`` long, tokens to remove per row; must be at most the row's number of
            real A tokens that have a real B match (``floor(n_i / 2)``, less one with
            ``protect_first``), else tokens are lost.
        n_out: static output length; at least every row's ``n_i - r_i``.
        protect_first: never merge token 0 (a CLS token) away.
        window: match within this many positions (``O(N window)``); ``None`` = global
            ToMe matching, whose ``(N/2)^2`` score matrix is kept in ``metric``'s dtype.

    Returns:
        ``merge(x, mode="mean") -> [B, n_out, ...]`` for any per-token tensor ``x [B, N, ...]``:
        ``"mean"`` gives the size-weighted average of the merged tokens (states,
        positions), ``"sum"`` their sum (``merge(sizes, mode="sum")`` gives the new sizes).
        ``unmerge(y) -> [B, N, ...]`` copies every merged token back to the positions it
        came from (padding gets 0).
    """
    b, n, _ = metric.shape
    if sizes.shape != (b, n) or r.shape != (b,):
        raise ValueError(f"sizes must be [B, N]={b, n} and r [B]={b,}, got {tuple(sizes.shape)} and {tuple(r.shape)}")
    if n < 2 or not 1 <= n_out <= n:
        raise ValueError(f"need N >= 2 tokens and 1 <= n_out <= N to merge, got N={n}, n_out={n_out}")
    real = sizes > 0
    real_a, real_b = real[:, ::2], real[:, 1::2]
    na = real_a.shape[1]
    with torch.no_grad():
        unit = F.normalize(metric, dim=-1)
        a, bb = unit[:, ::2], unit[:, 1::2]
        score, dst = match_global(a, bb, real_b) if window is None else match_window(a, bb, real_b, window)
        score = score.masked_fill(~real_a, float("-inf"))
        if protect_first:
            score[:, 0] = float("-inf")
        merged = (_descending_rank(score) < r[:, None]) & (score > float("-inf"))
        size_a, size_b = sizes[:, ::2], sizes[:, 1::2]
        src_size = torch.where(merged, size_a, 0)
        new_size_b = size_b.scatter_add(1, dst, src_size)
        order, slot = compaction_order(_interleave(real_a & ~merged, real_b))
        kept = order[:, :n_out]
        # column of each kept token in cat([A, B], dim=1)
        gather_index = torch.where(kept % 2 == 0, kept // 2, na + kept // 2)

    def expand(index: Tensor, like: Tensor) -> Tensor:
        return index.view(*index.shape, *[1] * (like.dim() - 2)).expand(*index.shape, *like.shape[2:])

    def merge(x: Tensor, mode: str = "mean") -> Tensor:
        if x.shape[:2] != (b, n):
            raise ValueError(f"merge expects a per-token tensor [B, N, ...]=[{b}, {n}, ...], got {tuple(x.shape)}")
        if mode not in ("mean", "sum"):
            raise ValueError(f"merge mode must be 'mean' (size-weighted) or 'sum', got {mode!r}")
        x_a, x_b = x[:, ::2], x[:, 1::2]
        src = expand(merged, x_a)
        if mode == "mean":
            dtype = torch.promote_types(x.dtype, sizes.dtype)
            w_a, w_b = expand(src_size, x_a).to(dtype), expand(size_b, x_b).to(dtype)
            total = (x_b * w_b).scatter_add(1, expand(dst, x_a), torch.where(src, x_a * w_a, 0))
            denom = expand(torch.where(real_b, new_size_b, 1), x_b)
            new_a, new_b = x_a, torch.where(expand(real_b, x_b), total / denom, x_b).to(x.dtype)
        else:
            new_a = torch.where(src, 0, x_a)
            new_b = x_b.scatter_add(1, expand(dst, x_a), torch.where(src, x_a, 0))
        return take_tokens(torch.cat([new_a, new_b], dim=1), gather_index)

    def unmerge(y: Tensor) -> Tensor:
        if y.shape[:2] != (b, n_out):
            raise ValueError(f"unmerge expects a merged tensor [B, n_out, ...]=[{b}, {n_out}, ...], got {tuple(y.shape)}")
        slot_a, slot_b = slot[:, ::2], slot[:, 1::2]
        source_slot = _interleave(torch.where(merged, slot_b.gather(1, dst), slot_a), slot_b)
        out = take_tokens(y, source_slot.clamp_max(n_out - 1))
        return torch.where(expand(real, out), out, 0)

    return merge, unmerge
