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

from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

import maelre.layers.triton_merge as triton_merge

MergeFn = Callable[..., Tensor]
UnmergeFn = Callable[[Tensor], Tensor]


def compaction_order(keep: Tensor) -> Tensor:
    """Permutation ``[B, N]`` putting each row's kept tokens (``keep`` True) first, both groups in their original order.

    ``take_tokens(x, compaction_order(keep))`` compacts the rows of ``x``.
    """
    return torch.sort((~keep).to(torch.uint8), dim=1, stable=True).indices


# Inductor (torch 2.11, CPU) miscompiles the fused "mask the scores, then max with
# index" of the matching: values right, indices wrong for most rows. The two matchers
# therefore always run eagerly, also inside a torch.compile'd backbone (a graph break
# per merge); tests/test_merge.py checks compiled merging against eager. On CUDA the
# window matcher is a fused Triton custom op instead, which compiles as one opaque op.
@torch.compiler.disable
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
    candidates per A token, scored over ``[B, Na, C, W]`` windows (``O(N window)``
    memory), never an ``Na x Nb`` matrix.
    """
    if window < 1:
        raise ValueError(f"match window must be >= 1 position, got {window}; use None for global matching")
    if triton_merge.available(a):  # the same band as one fused kernel (CUDA): a custom op, no graph break
        return triton_merge.match_window(a, b, b_real, window)
    return _match_window_eager(a, b, b_real, window)


@torch.compiler.disable
def _match_window_eager(a: Tensor, b: Tensor, b_real: Tensor, window: int) -> tuple[Tensor, Tensor]:
    na, nb = a.shape[1], b.shape[1]
    before = min((window + 1) // 2, na)  # offsets beyond the sequence cannot match anything
    after = min((window - 1) // 2, nb - 1)
    width = before + after + 1
    pad = (before, na + after - nb)
    windows = F.pad(b, (0, 0, *pad)).unfold(1, width, 1)  # [B, Na, C, W]; slot s = offset s - before
    valid = F.pad(b_real, pad, value=False).unfold(1, width, 1)  # [B, Na, W]
    scores = (a.unsqueeze(-1) * windows).sum(dim=-2)
    score, which = scores.masked_fill(~valid, float("-inf")).max(dim=-1)
    index = torch.arange(na, device=a.device) + which - before
    return score, index.clamp(0, nb - 1)  # out-of-range only where score is -inf


def take_tokens(x: Tensor, index: Tensor) -> Tensor:
    """``x[b, index[b, j]]`` for ``x [B, N, ...]`` and ``index [B, M]`` -> ``[B, M, ...]``.

    Advanced indexing rather than ``gather`` (here and in the merge): its backward keeps
    only the index, while ``gather`` keeps all of ``x`` alive for backward.
    """
    return x[torch.arange(x.shape[0], device=x.device)[:, None], index]


def _interleave(even: Tensor, odd: Tensor) -> Tensor:
    """Inverse of ``x[:, ::2], x[:, 1::2]`` for ``[B, *]`` tensors."""
    out = even.new_empty(even.shape[0], even.shape[1] + odd.shape[1])
    out[:, ::2] = even
    out[:, 1::2] = odd
    return out


class TokenMerge(NamedTuple):
    """One planned merge (see ``bipartite_soft_matching``).

    Attributes:
        merge: ``merge(x, mode="mean") -> [B, n_out, ...]`` for any per-token tensor
            ``x [B, N, ...]``: ``"mean"`` gives the size-weighted average of the merged
            tokens (states, positions), ``"sum"`` their plain sum.
        unmerge: ``unmerge(y) -> [B, N, ...]`` copies every merged token back to the
            positions it came from (padding gets 0).
        sizes: ``[B, n_out]`` the merged token sizes (``merge(sizes, mode="sum")``).
    """

    merge: MergeFn
    unmerge: UnmergeFn
    sizes: Tensor


def bipartite_soft_matching(
    metric: Tensor,
    sizes: Tensor,
    r: Tensor | int,
    n_out: int,
    *,
    protect_first: bool = False,
    window: int | None = None,
) -> TokenMerge:
    """Plan one ToMe merge of a padded batch.

    Args:
        metric: ``[B, N, C]`` similarity features (keys averaged over heads, or states).
        sizes: ``[B, N]`` float token sizes, 0 = padding. Padded entries of any tensor
            passed to ``merge`` may hold any finite value.
        r: tokens to remove per row, ``[B]`` long or one int for every row. Row ``i``
            needs ``r_i <= N - n_out`` and at most its number of real A tokens that have
            a real B match (``floor(n_i / 2)``, less one with ``protect_first``), else
            fewer tokens merge.
        n_out: static output length; at least every row's ``n_i - r_i``.
        protect_first: never merge token 0 (a CLS token) away.
        window: match within this many positions (``O(N window)``); ``None`` = global
            ToMe matching, whose ``(N/2)^2`` score matrix is kept in ``metric``'s dtype.

    Returns:
        ``TokenMerge(merge, unmerge, sizes)``: closures applying the merge to any
        per-token tensor, and the merged sizes.
    """
    b, n, _ = metric.shape
    if sizes.shape != (b, n) or (isinstance(r, Tensor) and r.shape != (b,)):
        shape_r = tuple(r.shape) if isinstance(r, Tensor) else "an int"
        raise ValueError(f"sizes must be [B, N]={b, n} and r [B]={b,} or an int, got {tuple(sizes.shape)} and {shape_r}")
    if n < 2 or not 1 <= n_out <= n:
        raise ValueError(f"need N >= 2 tokens and 1 <= n_out <= N to merge, got N={n}, n_out={n_out}")
    device = sizes.device
    real = sizes > 0
    real_a, real_b = real[:, ::2], real[:, 1::2]
    size_a, size_b = sizes[:, ::2], sizes[:, 1::2]
    na = real_a.shape[1]
    candidates = min(n - n_out, na)  # static bound on every r_i
    rows = torch.arange(b, device=device)[:, None]
    with torch.no_grad():
        unit = F.normalize(metric, dim=-1)
        a, bb = unit[:, ::2], unit[:, 1::2]
        score, dst = match_global(a, bb, real_b) if window is None else match_window(a, bb, real_b, window)
        padded_a = ~real_a
        score = score.masked_fill(padded_a, float("-inf"))
        if protect_first:
            score[:, 0] = float("-inf")
        best, src = score.topk(candidates, dim=1)  # [B, k] A tokens, most similar first
        chosen = best > float("-inf")
        if isinstance(r, Tensor):
            chosen &= torch.arange(candidates, device=device) < r[:, None]
        elif r < candidates:
            chosen[:, r:] = False
        dst = dst[rows, src]  # [B, k] B token of each candidate
        src_size = size_a[rows, src] * chosen  # 0 for candidates that do not merge
        new_size_b = size_b.scatter_add(1, dst, src_size)
        merged_a = torch.zeros_like(real_a).scatter_(1, src, chosen)
        # kept tokens first, in sequence order: sort the columns of cat([A, B]) by position, dropped ones last
        dropped = torch.cat([padded_a | merged_a, ~real_b], dim=1)
        position = torch.cat([torch.arange(0, n, 2, device=device), torch.arange(1, n, 2, device=device)])
        keep = torch.sort(position + n * dropped, dim=1).indices[:, :n_out]
        denom = new_size_b.clamp_min(1e-12)  # only padded B tokens have size 0
        merged_sizes = torch.cat([size_a.masked_fill(merged_a, 0), new_size_b], dim=1)[rows, keep]

    def per_token(t: Tensor, like: Tensor) -> Tensor:
        """``[B, k]`` viewed to broadcast against ``like [B, k, ...]``."""
        return t.view(*t.shape, *[1] * (like.dim() - 2))

    def merge(x: Tensor, mode: str = "mean") -> Tensor:
        if x.shape[:2] != (b, n):
            raise ValueError(f"merge expects a per-token tensor [B, N, ...]=[{b}, {n}, ...], got {tuple(x.shape)}")
        if mode not in ("mean", "sum"):
            raise ValueError(f"merge mode must be 'mean' (size-weighted) or 'sum', got {mode!r}")
        x_a, x_b = x[:, ::2], x[:, 1::2]
        if mode == "mean":  # sum(size * x) / sum(size); padded B columns become 0
            src_x = x_a[rows, src] * per_token(src_size, x)
            total = (x_b * per_token(size_b, x)).scatter_add(1, per_token(dst, x).expand_as(src_x), src_x)
            new_a, new_b = x_a, (total / per_token(denom, x)).to(x.dtype)
        else:
            src_x = torch.where(per_token(chosen, x), x_a[rows, src], 0)
            new_a = torch.where(per_token(merged_a, x), 0, x_a)
            new_b = x_b.scatter_add(1, per_token(dst, x).expand_as(src_x), src_x)
        return torch.cat([new_a, new_b], dim=1)[rows, keep]

    def unmerge(y: Tensor) -> Tensor:
        if y.shape[:2] != (b, n_out):
            raise ValueError(f"unmerge expects a merged tensor [B, n_out, ...]=[{b}, {n_out}, ...], got {tuple(y.shape)}")
        # merged column of every column of cat([A, B]); dropped padding points at the last column
        slot = torch.full((b, n), n_out - 1, device=device).scatter_(1, keep, torch.arange(n_out, device=device).expand(b, -1))
        slot_a, slot_b = slot[:, :na], slot[:, na:]
        slot_a = slot_a.scatter(1, src, torch.where(chosen, slot_b[rows, dst], slot_a[rows, src]))
        out = y[rows, _interleave(slot_a, slot_b)]
        return torch.where(per_token(real, out), out, 0)

    return TokenMerge(merge, unmerge, merged_sizes)
