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
from torch.autograd.function import once_differentiable

import maelre.layers.shape_cache as shape_cache
import maelre.layers.triton_merge as triton_merge
from maelre.layers.plan_graphs import PlanGraphs

MergeFn = Callable[..., Tensor]
UnmergeFn = Callable[[Tensor], Tensor]


def compaction_order(keep: Tensor) -> Tensor:
    """Permutation ``[B, N]`` putting each row's kept tokens (``keep`` True) first, both groups in their original order.

    ``take_tokens(x, compaction_order(keep))`` compacts the rows of ``x``.
    """
    return torch.sort((~keep).to(torch.uint8), dim=1, stable=True).indices


# Inductor (torch 2.11, CPU) miscompiles the fused "mask the scores, then max with
# index" of the matching: values right, indices wrong for most rows. The two matchers
# therefore always run eagerly: inside a torch.compile'd backbone ``_choose`` calls them
# through the custom ops below, which the compiler keeps in its graph as opaque calls
# (no graph break, Inductor never fuses their insides); tests/test_merge.py checks
# compiled merging against eager. On CUDA (unless MAELRE_TRITON=0), windowed matching runs
# the fused Triton custom op instead (``triton_merge.match_window``, which also masks as ``_match_scores`` does).
def match_global(a: Tensor, b: Tensor, b_real: Tensor | None) -> tuple[Tensor, Tensor]:
    """Best B match of every A token over all of B.

    Args:
        a: ``[B, Na, C]`` unit-norm metric of the A tokens.
        b: ``[B, Nb, C]`` unit-norm metric of the B tokens.
        b_real: ``[B, Nb]`` bool, False for padded B tokens (never matched); ``None``: no padding.

    Returns:
        ``(score, index)``, each ``[B, Na]``: the best cosine similarity (``-inf`` when no
        real B token exists) and the B index it belongs to.
    """
    scores = a @ b.transpose(-1, -2)
    if b_real is not None:
        scores = scores.masked_fill(~b_real[:, None, :], float("-inf"))
    return scores.max(dim=-1)


def match_window(a: Tensor, b: Tensor, b_real: Tensor | None, window: int) -> tuple[Tensor, Tensor]:
    """Like ``match_global``, but A token ``j`` (position ``2j``) only sees B tokens within ``window`` positions.

    B token ``j + o`` sits at position ``2j + 2o + 1``, so ``|2o + 1| <= window`` gives the
    offsets ``o`` in ``[-ceil(window / 2), floor((window - 1) / 2)]``: a band of ``W ~ window``
    candidates per A token, scored over ``[B, Na, C, W]`` windows (``O(N window)``
    memory), never an ``Na x Nb`` matrix.
    """
    if window < 1:
        raise ValueError(f"match window must be >= 1 position, got {window}; use None for global matching")
    na, nb = a.shape[1], b.shape[1]
    before = min((window + 1) // 2, na)  # offsets beyond the sequence cannot match anything
    after = min((window - 1) // 2, nb - 1)
    width = before + after + 1
    pad = (before, na + after - nb)
    windows = F.pad(b, (0, 0, *pad)).unfold(1, width, 1)  # [B, Na, C, W]; slot s = offset s - before
    if b_real is None:  # only the ends of the sequence: the same for every row and every call
        outside = _window_outside(nb, width, *pad, a.device)  # [Na, W]
    else:
        outside = F.pad(~b_real, pad, value=True).unfold(1, width, 1)  # [B, Na, W]
    scores = (a.unsqueeze(-1) * windows).sum(dim=-2)
    # in place (scores is our own); keepdim: one dispatch, where max without it squeezes internally (8 more)
    score, which = scores.masked_fill_(outside, float("-inf")).max(dim=-1, keepdim=True)
    index = which.view(-1, na) + _window_offsets(na, before, a.device)
    if b_real is None:  # B token j (offset 0) or j - 1 (offset -1) is in every window: max never picks a slot off the ends
        return score.view(-1, na), index
    return score.view(-1, na), index.clamp(0, nb - 1)  # out-of-range only where score is -inf (no real B token in the window)


@torch.library.custom_op("maelre::match_global_eager", mutates_args=())
def _match_global_op(a: Tensor, b: Tensor, b_real: Tensor | None) -> tuple[Tensor, Tensor]:
    """``match_global`` as an opaque op for compiled graphs; ``a`` and ``b`` come already in the matmul's dtype."""
    with torch.autocast(a.device.type, enabled=False):
        return match_global(a, b, b_real)


@_match_global_op.register_fake
def _(a: Tensor, b: Tensor, b_real: Tensor | None) -> tuple[Tensor, Tensor]:
    return a.new_empty(a.shape[:2]), a.new_empty(a.shape[:2], dtype=torch.long)


@torch.library.custom_op("maelre::match_window_eager", mutates_args=())
def _match_window_op(a: Tensor, b: Tensor, b_real: Tensor | None, window: int) -> tuple[Tensor, Tensor]:
    """``match_window`` as an opaque op for compiled graphs (its products and sums take no autocast: ``a.dtype`` out)."""
    with torch.autocast(a.device.type, enabled=False):
        return match_window(a, b, b_real, window)


@_match_window_op.register_fake
def _(a: Tensor, b: Tensor, b_real: Tensor | None, window: int) -> tuple[Tensor, Tensor]:
    return a.new_empty(a.shape[:2]), a.new_empty(a.shape[:2], dtype=torch.long)


def _match(a: Tensor, b: Tensor, b_real: Tensor | None, window: int | None) -> tuple[Tensor, Tensor]:
    """``match_global`` or ``match_window``; under ``torch.compile`` through their custom ops.

    The ops run with autocast off, so the global matcher's inputs are first cast as autocast
    would cast them for its matmul (the windowed one multiplies and sums, which CUDA
    autocast leaves alone for the float32 unit vectors of ``F.normalize``): the same
    numbers as eager either way.
    """
    if not torch.compiler.is_compiling():
        return match_global(a, b, b_real) if window is None else match_window(a, b, b_real, window)
    if window is not None:
        return _match_window_op(a, b, b_real, window)
    device = a.device.type
    if torch.is_autocast_enabled(device):
        a, b = a.to(torch.get_autocast_dtype(device)), b.to(torch.get_autocast_dtype(device))
    return _match_global_op(a, b, b_real)


@shape_cache.shape_cached
def _window_outside(nb: int, width: int, pad_before: int, pad_after: int, device: torch.device) -> Tensor:
    """``[Na, W]`` bool: window slots that fall off either end of ``nb`` B tokens."""
    return F.pad(torch.zeros(nb, dtype=torch.bool, device=device), (pad_before, pad_after), value=True).unfold(0, width, 1)


@shape_cache.shape_cached
def _window_offsets(na: int, before: int, device: torch.device) -> Tensor:
    """B index of window slot 0 for every A token: ``arange(na) - before``."""
    return torch.arange(na, device=device) - before


def take_tokens(x: Tensor, index: Tensor) -> Tensor:
    """``x[b, index[b, j]]`` for ``x [B, N, ...]`` and ``index [B, M]`` -> ``[B, M, ...]``.

    Advanced indexing rather than ``gather``: its backward keeps only the index, while
    ``gather`` keeps all of ``x`` alive for backward.
    """
    return x[shape_cache.arange(x.shape[0], x.device)[:, None], index]


class TokenMerge(NamedTuple):
    """One planned merge (see ``bipartite_soft_matching``).

    Attributes:
        merge: ``merge(x, mode="mean", dtype=None) -> [B, n_out, ...]`` for any per-token
            tensor ``x [B, N, ...]``: ``"mean"`` gives the size-weighted average of the merged
            tokens (states, positions, keys), in ``dtype`` (default ``x``'s; summed in float32,
            or float64 for float64 ``x``), ``"sum"`` their plain sum (in ``x``'s dtype).
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
    padded: bool = True,
    real: Tensor | None = None,
    return_log_sizes: bool = False,
    graphs: PlanGraphs | None = None,
) -> TokenMerge | tuple[TokenMerge, Tensor | None]:
    """Plan one ToMe merge of a padded batch.

    The plan gives every input column its output column, ``slot [B, N]``: kept tokens
    fill the first columns in their order, a merged A token joins its B match, and
    padding goes to column ``n_out``, which is cut off. A merge is then one scatter-add
    into the slots, size-weighted as in ToMe's ``merge_wavg``
    (``scatter(size * x) / scatter(size)``): the plan holds every token's share of its
    merged token's size, ``share = size / scatter(size)[slot]``, and
    ``merge(x) = scatter(share * x)``.

    Args:
        metric: ``[B, N, C]`` similarity features (keys averaged over heads, or states).
        sizes: ``[B, N]`` float token sizes, 0 = padding. Padded entries of any tensor
            passed to ``merge`` may hold any value; they never reach a real token.
        r: tokens to remove per row, ``[B]`` long or one int for every row. Row ``i``
            needs ``r_i <= N - n_out`` and at most its number of real A tokens that have
            a real B match (``floor(n_i / 2)``, less one with ``protect_first``), else
            fewer tokens merge.
        n_out: static output length; at least every row's ``n_i - r_i``.
        protect_first: never merge token 0 (a CLS token) away.
        window: match within this many positions (``O(N window)``); ``None`` = global
            ToMe matching, whose ``(N/2)^2`` score matrix is kept in ``metric``'s dtype.
        padded: False promises that every size is positive (no padding), which skips
            the padding masks; a caller knows it from the shapes (MAELRE: no input mask).
        real: ``sizes > 0`` ``[B, N]`` bool where the caller has it already (``None``: computed
            here when ``padded``).
        return_log_sizes: also return the merged sizes' log ``[B, n_out]`` (float32, for
            proportional attention) where the plan kernel computed it along, else ``None``.
        graphs: the caller's ``PlanGraphs`` (one per merge site): on CUDA the plan is then
            replayed from a CUDA graph per input shape (``maelre.layers.plan_graphs``).

    Returns:
        ``TokenMerge(merge, unmerge, sizes)``: closures applying the merge to any
        per-token tensor, and the merged sizes; with ``return_log_sizes``, ``(TokenMerge, log_sizes)``.
    """
    b, n, _ = metric.shape
    tensors, static = _plan_arguments(metric, sizes, r, n_out, protect_first, window, padded, real)
    real = tensors[1]
    with torch.no_grad():
        if graphs is None or torch.compiler.is_compiling():
            slot, merged_sizes, share, log_sizes = _make_plan(*tensors, *static)
        else:
            slot, merged_sizes, share, log_sizes = graphs(_make_plan, tensors, static)

    def merge(x: Tensor, mode: str = "mean", dtype: torch.dtype | None = None) -> Tensor:
        if x.shape[:2] != (b, n):
            raise ValueError(f"merge expects a per-token tensor [B, N, ...]=[{b}, {n}, ...], got {tuple(x.shape)}")
        if mode not in ("mean", "sum"):
            raise ValueError(f"merge mode must be 'mean' (size-weighted) or 'sum', got {mode!r}")
        if mode == "sum":
            return _scatter_to_slots(x, slot, n_out, padded)
        return _weighted_merge(x, share, slot, n_out, padded, dtype)

    def unmerge(y: Tensor) -> Tensor:
        if y.shape[:2] != (b, n_out):
            raise ValueError(f"unmerge expects a merged tensor [B, n_out, ...]=[{b}, {n_out}, ...], got {tuple(y.shape)}")
        out = take_tokens(y, slot.clamp_max(n_out - 1))  # padding points past the end
        return out if real is None else torch.where(_per_token(real, out), out, 0)

    plan = TokenMerge(merge, unmerge, merged_sizes)
    return (plan, log_sizes) if return_log_sizes else plan


def _per_token(t: Tensor, like: Tensor) -> Tensor:
    """``[B, k]`` viewed to broadcast against ``like [B, k, ...]``."""
    return t.view(*t.shape, *[1] * (like.dim() - 2))


def _plan_arguments(
    metric: Tensor, sizes: Tensor, r: Tensor | int, n_out: int, protect_first: bool, window: int | None, padded: bool, real: Tensor | None
) -> tuple[tuple[Tensor | None, ...], tuple]:
    """Checked arguments of ``_make_plan``: ``(tensors, static)``, ``tensors = (metric, real, sizes, r_rows)``."""
    b, n, _ = metric.shape
    if sizes.shape != (b, n) or (isinstance(r, Tensor) and r.shape != (b,)):
        shape_r = tuple(r.shape) if isinstance(r, Tensor) else "an int"
        raise ValueError(f"sizes must be [B, N]={b, n} and r [B]={b,} or an int, got {tuple(sizes.shape)} and {shape_r}")
    if n < 2 or not 1 <= n_out <= n:
        raise ValueError(f"need N >= 2 tokens and 1 <= n_out <= N to merge, got N={n}, n_out={n_out}")
    real = (sizes > 0 if real is None else real) if padded else None
    candidates = min(n - n_out, (n + 1) // 2)
    # every candidate merges (if it has a real match) when r covers them all: their order is then unused
    ordered = isinstance(r, Tensor) or r < candidates
    r_rows, r_all = (r, 0) if isinstance(r, Tensor) else (None, r)
    return (metric, real, sizes, r_rows), (r_all, candidates, protect_first, window, ordered, n, n_out)


def _weighted_merge(x: Tensor, share: Tensor, slot: Tensor, n_out: int, padded: bool, dtype: torch.dtype | None) -> Tensor:
    """``TokenMerge.merge(x)``: the size-weighted mean of the tokens of ``x [B, N, ...]`` in each slot, in ``dtype``."""
    # the kernel: a zeroed buffer + 1 kernel, 1 kernel backward (5 ops here); its atomic adds land in no fixed
    # order, so deterministic mode keeps the scatter
    if _fused_merge(x):
        return triton_merge.merge_states(x, share, slot, n_out, dtype)
    out = _scatter_to_slots(x * _per_token(share, x), slot, n_out, padded)
    dtype = x.dtype if dtype is None else dtype
    return out if out.dtype == dtype else out.to(dtype)  # no no-op cast (one dispatch less)


def _fused_merge(x: Tensor) -> bool:
    """Whether ``_weighted_merge`` of ``x`` (and its gradient) runs the Triton kernels."""
    return triton_merge.available(x) and x.dtype in triton_merge.MERGE_DTYPES and not torch.are_deterministic_algorithms_enabled()


def replayed_merge(
    graphs: PlanGraphs,
    x: Tensor,
    others: list[tuple[Tensor, torch.dtype | None]],
    metric: Tensor,
    sizes: Tensor,
    r: Tensor | int,
    n_out: int,
    *,
    protect_first: bool = False,
    window: int | None = None,
    padded: bool = True,
    real: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor | None, list[Tensor]]:
    """The plan of ``bipartite_soft_matching`` and the merges of ``x [B, N, C]`` and ``others``, replayed as one CUDA graph.

    ``others`` are ``(tensor [B, N, ...], dtype)`` pairs merged without gradient (positions, matching keys), each in
    its ``dtype`` (``None``: its own). Returns ``(merged x [B, n_out, C], merged sizes, log of the merged sizes or
    None, merged others)``; the merged ``x`` is differentiable in ``x`` (its gradient, ``share * grad[slot]``, runs
    outside the graph). Arguments as ``bipartite_soft_matching``; ``graphs`` replays (``maelre.layers.plan_graphs``).
    """
    tensors, static = _plan_arguments(metric, sizes, r, n_out, protect_first, window, padded, real)
    b, n = sizes.shape
    if x.dim() != 3 or x.shape[:2] != (b, n) or any(t.shape[:2] != (b, n) for t, _ in others):
        shapes = ", ".join(str(tuple(t.shape)) for t in (x, *(o for o, _ in others)))
        raise ValueError(f"replayed_merge takes x [B, N, C] and others [B, N, ...] with [B, N]={b, n}, got {shapes}")
    tensors = (*tensors, *(t for t, _ in others))
    # the kernels or the scatter are chosen at capture (deterministic mode keeps the scatter): part of the key
    static = (static, tuple(d for _, d in others), padded, n_out, torch.are_deterministic_algorithms_enabled())
    merged_x, merged_sizes, log_sizes, *merged = _ReplayedMerge.apply(x, graphs, tensors, static)
    return merged_x, merged_sizes, log_sizes, merged


def _plan_and_merge(x: Tensor, metric: Tensor, real: Tensor | None, sizes: Tensor, r_rows: Tensor | None, *rest) -> tuple:
    """What ``replayed_merge`` records: ``_make_plan``, then every merge. ``rest``: the other tensors, then the plan's
    static arguments, their dtypes, ``padded``, ``n_out`` and whether deterministic mode was on (in the key only)."""
    *others, plan_static, dtypes, padded, n_out, _ = rest
    slot, merged_sizes, share, log_sizes = _make_plan(metric, real, sizes, r_rows, *plan_static)
    merged = [_weighted_merge(t, share, slot, n_out, padded, d) for t, d in zip((x, *others), (None, *dtypes))]
    return (merged[0], slot, merged_sizes, share, log_sizes, *merged[1:])


class _ReplayedMerge(torch.autograd.Function):
    """``replayed_merge``'s forward from the graph; backward ``share * grad[slot]`` (0 where the slot is cut off)."""

    @staticmethod
    def forward(ctx, x: Tensor, graphs: PlanGraphs, tensors: tuple, static: tuple) -> tuple:
        merged_x, slot, merged_sizes, share, log_sizes, *merged = graphs(_plan_and_merge, (x.detach(), *tensors), static)
        ctx.save_for_backward(share, slot)
        ctx.dtype = x.dtype
        ctx.mark_non_differentiable(*(t for t in (merged_sizes, log_sizes, *merged) if t is not None))
        return (merged_x, merged_sizes, log_sizes, *merged)

    @staticmethod
    @once_differentiable  # the kernel's gradient has no graph of its own: a second derivative is an error, not a zero
    def backward(ctx, grad: Tensor, *unused: Tensor | None) -> tuple:
        share, slot = ctx.saved_tensors
        if _fused_merge(grad):
            return triton_merge._merge_states_backward(grad, share, slot, ctx.dtype), None, None, None
        n_out = grad.shape[1]
        out = take_tokens(grad, slot.clamp_max(n_out - 1)) * _per_token(share, grad)
        return torch.where(_per_token(slot < n_out, grad), out, 0).to(ctx.dtype), None, None, None


def _make_plan(
    metric: Tensor, real: Tensor | None, sizes: Tensor, r_rows: Tensor | None, r_all: int,
    candidates: int, protect_first: bool, window: int | None, ordered: bool, n: int, n_out: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """The whole plan, ``_choose`` then ``_plan``, as one function of tensors and static arguments (what
    ``PlanGraphs`` captures): ``r`` is ``r_rows [B]`` where given, else the int ``r_all``."""
    src, dst, best = _choose(metric, real, candidates, protect_first, window, ordered)
    return _plan(real, sizes, src, dst, best, r_all if r_rows is None else r_rows, n, n_out)


def _choose(
    metric: Tensor, real: Tensor | None, candidates: int, protect_first: bool, window: int | None, ordered: bool = True
) -> tuple[Tensor, Tensor, Tensor]:
    """ToMe's candidate merges, in A/B indices (A token ``j`` is column ``2j``, B token ``j`` column ``2j + 1``).

    ``real [B, N]`` marks real tokens (``None``: all are). Returns ``(src, dst, best)``:
    ``src [B, candidates]`` the A tokens most similar to their best B match, most similar
    first if ``ordered`` (else the same set in any order: top-k without its sort, for a
    caller that merges every candidate); ``dst [B, Na]`` every A token's best B match;
    ``best [B, candidates]`` their scores (``-inf``: no real match). Which of them merge
    is ``_chosen``'s (on CUDA, the plan kernel's).
    """
    if window is not None and triton_merge.available(metric):
        # one kernel: normalizes as it reads A and B from their interleaved columns, masks padding and token 0 itself
        score, dst = triton_merge.match_window(metric, real, window, protect_first)
    else:
        score, dst = _match_scores(metric, real, protect_first, window)
    best, src = score.topk(candidates, dim=1, sorted=ordered)
    return src, dst, best


def _match_scores(metric: Tensor, real: Tensor | None, protect_first: bool, window: int | None) -> tuple[Tensor, Tensor]:
    """``(score, dst)``, each ``[B, Na]``: every A token's best B match and its score, ``-inf`` for padded A tokens
    and, with ``protect_first``, token 0 (the PyTorch path of ``triton_merge.match_window``)."""
    unit = metric / torch.linalg.vector_norm(metric, dim=-1, keepdim=True).clamp_min(1e-12)  # F.normalize less its expand_as
    score, dst = _match(unit[:, ::2], unit[:, 1::2], None if real is None else real[:, 1::2], window)
    if real is not None:
        score = score.masked_fill_(~real[:, ::2], float("-inf"))  # in place: the matcher's own output
    if protect_first:
        score[:, 0] = float("-inf")
    return score, dst


def _chosen(best: Tensor, r: Tensor | int) -> Tensor:
    """``[B, candidates]`` bool: whether each candidate pair merges (the first ``r_i`` of row ``i`` with a real match)."""
    candidates = best.shape[1]
    chosen = best > float("-inf")
    if isinstance(r, Tensor):
        chosen &= shape_cache.arange(candidates, best.device) < r[:, None]
    elif r < candidates:
        chosen[:, r:] = False
    return chosen


def _plan(
    real: Tensor | None, sizes: Tensor, src: Tensor, dst: Tensor, best: Tensor, r: Tensor | int, n: int, n_out: int
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """``(slot [B, N], merged sizes [B, n_out], share [B, N], None)``: ``_slots`` of the ``_chosen`` pairs, the sizes
    summed into their slots, and every token's share of its merged token's size (0 for padding).

    On CUDA the fused plan kernels compute them, choosing the pairs as they read them, and also the log of the
    merged sizes in place of ``None`` (``triton_merge.plan``).
    """
    if triton_merge.available(src):
        return triton_merge.plan(real, sizes, src, dst, best, r, n, n_out)
    slot = _slots(real, src, dst, _chosen(best, r), n, n_out)
    total = _scatter_to_slots(sizes, slot, n_out + int(real is not None), padded=False)  # padding's column kept, for the gather
    per_slot = total.gather(1, slot)  # >= 1 for a real token; 0 for padding only
    share = sizes / (per_slot if real is None else per_slot.clamp_min(1e-12))
    return slot, total if real is None else total[:, :n_out], share, None


def _slots(real: Tensor | None, src: Tensor, dst: Tensor, chosen: Tensor, n: int, n_out: int) -> Tensor:
    """Output column of every input column ``[B, N]``: kept tokens in order, merged A tokens with their match, padding ``n_out``.

    ``real [B, N]`` marks real tokens (``None``: all are). A padded row that keeps more
    than ``n_out`` tokens (an ``r`` too small) loses the last ones. Unpadded rows keep
    exactly ``n_out`` (more only if some scores are NaN: the extra tokens then join the
    last column), so they need no column ``n_out`` and no slicing after the scatter.
    """
    gone = torch.zeros(dst.shape[0], n, dtype=torch.bool, device=dst.device)
    merged = gone[:, ::2].scatter_(1, src, chosen)  # [B, Na], a view: the A tokens merged away
    if real is not None:
        gone = gone | ~real
    slot = _kept_rank(gone, n)
    if real is not None:
        slot.masked_fill_(gone, n_out)
    slot.clamp_max_(n_out if real is not None else n_out - 1)
    slot_a = slot[:, ::2]
    slot_a.copy_(torch.where(merged, slot[:, 1::2].gather(1, dst), slot_a))  # B tokens always stay
    return slot


def _kept_rank(gone: Tensor, n: int) -> Tensor:
    """``[B, N]`` long: each kept token's rank among the kept ones (``gone`` marks the others; their values are arbitrary).

    Eagerly ``arange - cumsum``. Compiled, a stable sort of ``gone`` instead: on CUDA, Inductor
    fails to generate the split scan that this cumsum becomes at large batches (an evaluation
    batch of 1,000 x 1,024 tokens, torch 2.11), and a sort has no scan. The kept tokens come
    first in the sorted order, in their own order, so a kept token's place there is its rank.
    """
    if not torch.compiler.is_compiling():
        return shape_cache.arange(n, gone.device) - gone.cumsum(1)
    order = compaction_order(~gone)  # kept first, in order
    return torch.empty_like(order).scatter_(1, order, shape_cache.arange(n, gone.device).expand_as(order))


def _scatter_to_slots(x: Tensor, slot: Tensor, n_out: int, padded: bool) -> Tensor:
    """Sum of the tokens of ``x [B, N, ...]`` that share a slot: ``[B, n_out, ...]`` (``padded``: slot ``n_out`` is dropped)."""
    index = slot if x.dim() == 2 else slot.view(*slot.shape, *[1] * (x.dim() - 2)).expand(x.shape)  # sizes: no view, no expand
    out = x.new_zeros(x.shape[0], n_out + int(padded), *x.shape[2:]).scatter_add_(1, index, x)  # int(): a SymInt plus a bool breaks dynamic shapes
    return out[:, :n_out] if padded else out  # no slice (nor its backward) without padding
