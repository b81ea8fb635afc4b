"""ToMe bipartite soft matching on padded batches (maelre.layers.merge)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from maelre.layers.merge import bipartite_soft_matching, compaction_order, match_global, match_window


def padded_batch(lengths: list[int], n: int, c: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random ``x [B, n, c]``, ``metric [B, n, 6]`` and ``sizes [B, n]`` (sizes 1..3 on a real prefix, 0 after)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), n, c, generator=g)
    metric = torch.randn(len(lengths), n, 6, generator=g)
    sizes = torch.randint(1, 4, (len(lengths), n), generator=g).float()
    for row, length in enumerate(lengths):
        sizes[row, length:] = 0
    return x, metric, sizes


def naive_merge(x, metric, sizes, r, protect_first=False, window=None):
    """One row at a time, in float64, straight from the ToMe description: returns (states, sizes) of the real tokens."""
    real = [p for p in range(len(sizes)) if sizes[p] > 0]
    a_pos = [p for p in real if p % 2 == 0 and not (protect_first and p == 0)]
    b_pos = [p for p in real if p % 2 == 1]
    unit = F.normalize(metric.double(), dim=-1)
    best = {}
    for pa in a_pos:
        candidates = [pb for pb in b_pos if window is None or abs(pa - pb) <= window]
        if candidates:
            sims = torch.stack([unit[pa] @ unit[pb] for pb in candidates])
            best[pa] = (float(sims.max()), candidates[int(sims.argmax())])
    ranked = sorted(best, key=lambda pa: -best[pa][0])  # sorted() is stable: ties keep position order
    sources = set(ranked[:r])
    total = {p: x[p].double() * sizes[p] for p in real}
    size = {p: float(sizes[p]) for p in real}
    for pa in sources:
        pb = best[pa][1]
        total[pb] = total[pb] + total.pop(pa)
        size[pb] += size.pop(pa)
    keep = sorted(size)
    return torch.stack([total[p] / size[p] for p in keep]), torch.tensor([size[p] for p in keep], dtype=torch.float64)


def test_compaction_order_puts_kept_first_in_original_order():
    keep = torch.tensor([[False, True, False, True, True], [True, False, False, False, True]])
    assert compaction_order(keep).tolist() == [[1, 3, 4, 0, 2], [0, 4, 1, 2, 3]]


@pytest.mark.parametrize("window", [None, 3])
@pytest.mark.parametrize("protect_first", [False, True])
def test_merge_matches_naive_tome(window, protect_first):
    lengths, n = [20, 13, 7, 2], 20
    x, metric, sizes = padded_batch(lengths, n)
    r = torch.tensor([6, 4, 2, 1]) - int(protect_first) * torch.tensor([0, 0, 0, 1])
    n_out = 14
    merge, _, new_sizes = bipartite_soft_matching(metric, sizes, r, n_out, protect_first=protect_first, window=window)
    states = merge(x)
    assert torch.equal(merge(sizes, mode="sum"), new_sizes)
    assert states.shape == (4, n_out, 8) and new_sizes.shape == (4, n_out)
    for row, length in enumerate(lengths):
        ref_states, ref_sizes = naive_merge(x[row], metric[row], sizes[row], int(r[row]), protect_first, window)
        kept = length - int(r[row])
        assert len(ref_sizes) == kept
        torch.testing.assert_close(new_sizes[row, :kept].double(), ref_sizes)
        torch.testing.assert_close(states[row, :kept].double(), ref_states, rtol=1e-5, atol=1e-6)
        assert (new_sizes[row, kept:] == 0).all()


@pytest.mark.parametrize("window", [None, 3])
@pytest.mark.parametrize("protect_first", [False, True])
def test_unpadded_merge_matches_naive_tome(window, protect_first):
    """``padded=False`` with one int ``r`` (MAELRE without an input mask): no padding masks, same merges."""
    n, r = 21, 7  # odd: one more A token than B tokens
    x, metric, sizes = padded_batch([n, n], n)
    merge, _, new_sizes = bipartite_soft_matching(metric, sizes, r, n - r, protect_first=protect_first, window=window, padded=False)
    states = merge(x)
    for row in range(2):
        ref_states, ref_sizes = naive_merge(x[row], metric[row], sizes[row], r, protect_first, window)
        torch.testing.assert_close(new_sizes[row].double(), ref_sizes)
        torch.testing.assert_close(states[row].double(), ref_states, rtol=1e-5, atol=1e-6)


def test_sizes_add_up_and_weighted_mean_is_preserved():
    x, metric, sizes = padded_batch([32, 25, 10], 32, c=16)
    r = torch.tensor([16, 12, 5])
    merge, _, _ = bipartite_soft_matching(metric, sizes, r, 16)
    new_sizes = merge(sizes, mode="sum")
    torch.testing.assert_close(new_sizes.sum(1), sizes.sum(1))
    assert (new_sizes > 0).sum(1).tolist() == [16, 13, 5]
    before = (x * sizes[..., None]).sum(1)
    after = (merge(x) * new_sizes[..., None]).sum(1)
    torch.testing.assert_close(after, before, rtol=1e-6, atol=1e-5)


def test_padding_never_mixes_with_real_tokens():
    n, lengths = 24, [24, 9, 4]
    _, metric, sizes = padded_batch(lengths, n)
    marker = torch.zeros(3, n, 2)
    marker[..., 0] = (sizes > 0).float()  # real marker
    marker[..., 1] = (sizes == 0).float()  # padding marker
    # make padding the most attractive match: identical metric to every real token's direction
    metric = torch.where((sizes > 0)[..., None], metric, metric[:, :1].expand_as(metric))
    merge, _, _ = bipartite_soft_matching(metric, sizes, torch.tensor([12, 4, 2]), 12)
    out, new_sizes = merge(marker), merge(sizes, mode="sum")
    real = new_sizes > 0
    assert torch.equal(out[..., 0][real], torch.ones(int(real.sum())))
    assert (out[..., 1][real] == 0).all()
    assert real.sum(1).tolist() == [12, 5, 2]
    assert (real.long().diff(dim=1) <= 0).all()  # real tokens first


def test_padded_row_merges_like_the_row_alone():
    x, metric, sizes = padded_batch([30, 17], 30)
    r = torch.tensor([15, 8])
    merge, _, _ = bipartite_soft_matching(metric, sizes, r, 15, window=4)
    alone, _, _ = bipartite_soft_matching(metric[1:, :17], sizes[1:, :17], r[1:], 9, window=4)
    torch.testing.assert_close(merge(x)[1, :9], alone(x[1:, :17])[0])
    torch.testing.assert_close(merge(sizes, mode="sum")[1, :9], alone(sizes[1:, :17], mode="sum")[0])


def test_window_wider_than_sequence_equals_global_matching():
    g = torch.Generator().manual_seed(1)
    a, b = F.normalize(torch.randn(3, 17, 5, generator=g), dim=-1), F.normalize(torch.randn(3, 16, 5, generator=g), dim=-1)
    b_real = torch.ones(3, 16, dtype=torch.bool)
    b_real[1, 9:] = False
    score_g, index_g = match_global(a, b, b_real)
    for window in (33, 64, 1000):
        score_w, index_w = match_window(a, b, b_real, window)
        torch.testing.assert_close(score_w, score_g)
        assert torch.equal(index_w, index_g)
    x, metric, sizes = padded_batch([33, 20], 33)
    r = torch.tensor([16, 10])
    merged_g, _, _ = bipartite_soft_matching(metric, sizes, r, 17)
    merged_w, _, _ = bipartite_soft_matching(metric, sizes, r, 17, window=66)
    torch.testing.assert_close(merged_w(x), merged_g(x))


@pytest.mark.parametrize("window", [1, 2, 5])
def test_window_matches_best_partner_within_reach(window):
    g = torch.Generator().manual_seed(2)
    a, b = F.normalize(torch.randn(2, 20, 4, generator=g), dim=-1), F.normalize(torch.randn(2, 19, 4, generator=g), dim=-1)
    b_real = torch.ones(2, 19, dtype=torch.bool)
    b_real[1, 12:] = False
    score, index = match_window(a, b, b_real, window)
    full = (a @ b.transpose(1, 2)).masked_fill(~b_real[:, None], float("-inf"))
    distance = (2 * torch.arange(20)[:, None] - (2 * torch.arange(19)[None] + 1)).abs()
    expected_score, expected_index = full.masked_fill(distance > window, float("-inf")).max(-1)
    finite = expected_score > float("-inf")
    torch.testing.assert_close(score, expected_score)
    assert torch.equal(index[finite], expected_index[finite])
    assert (distance[torch.arange(20), index][finite] <= window).all()


def test_protected_first_token_is_never_merged():
    x, metric, sizes = padded_batch([16, 16], 16)
    metric[:, 0] = metric[:, 1]  # token 0 would be everyone's best pick
    x[:, 0] = 100.0
    merge, _, _ = bipartite_soft_matching(metric, sizes, torch.tensor([7, 7]), 9, protect_first=True)
    out, new_sizes = merge(x), merge(sizes, mode="sum")
    assert (out[:, 0] == 100.0).all() and torch.equal(new_sizes[:, 0], sizes[:, 0])
    unprotected, _, _ = bipartite_soft_matching(metric, sizes, torch.tensor([8, 8]), 8)
    assert not (unprotected(x)[:, 0] == 100.0).all()  # without protection token 0 does merge


def test_unmerge_scatters_back_to_sources():
    x, metric, sizes = padded_batch([18, 11], 18)
    merge, unmerge, _ = bipartite_soft_matching(metric, sizes, torch.tensor([9, 5]), 9)
    merged = merge(x)
    back = unmerge(merged)
    assert back.shape == x.shape
    assert (back[1, 11:] == 0).all()  # padding
    for row, length in enumerate([18, 11]):
        values = {tuple(v.tolist()) for v in merged[row][merge(sizes, mode="sum")[row] > 0]}
        assert {tuple(v.tolist()) for v in back[row, :length]} == values  # every source maps to a merged token
        unchanged = (back[row, :length] == x[row, :length]).all(-1)
        assert 0 < int(unchanged.sum()) < length  # untouched tokens come back as they were
    # size-weighted: unmerged tokens carry their group's mean, so sum(size * unmerge(merge(x))) == sum(size * x)
    torch.testing.assert_close((back * sizes[..., None]).sum(1), (x * sizes[..., None]).sum(1), rtol=1e-5, atol=1e-5)


def test_gradients_flow_through_merge():
    x, metric, sizes = padded_batch([12, 8], 12)
    x.requires_grad_(True)
    merge, _, _ = bipartite_soft_matching(metric, sizes, torch.tensor([6, 4]), 6)
    (merge(x) * merge(sizes, mode="sum")[..., None]).sum().backward()
    # d/dx of sum(size * mean) = size for every real token, 0 for padding
    torch.testing.assert_close(x.grad, sizes[..., None].expand_as(x))


def test_bf16_metric_and_state():
    x, metric, sizes = padded_batch([16, 9], 16)
    merge, _, _ = bipartite_soft_matching(metric.bfloat16(), sizes, torch.tensor([8, 4]), 8, window=4)
    out = merge(x.bfloat16())
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()


def test_bad_arguments_raise_clear_errors():
    x, metric, sizes = padded_batch([8], 8)
    with pytest.raises(ValueError, match="n_out"):
        bipartite_soft_matching(metric, sizes, torch.tensor([2]), 9)
    with pytest.raises(ValueError, match=r"sizes must be \[B, N\]"):
        bipartite_soft_matching(metric, sizes[:, :5], torch.tensor([2]), 6)
    with pytest.raises(ValueError, match="window"):
        bipartite_soft_matching(metric, sizes, torch.tensor([2]), 6, window=0)
    merge, unmerge, _ = bipartite_soft_matching(metric, sizes, torch.tensor([2]), 6)
    with pytest.raises(ValueError, match="mode"):
        merge(x, mode="max")
    with pytest.raises(ValueError, match=r"per-token tensor"):
        merge(x[:, :4])
    with pytest.raises(ValueError, match="unmerge expects"):
        unmerge(x)


@pytest.mark.parametrize("window", [None, 8])
def test_compiled_merge_equals_eager(window):
    """Inductor once miscompiled the matching (right scores, wrong partners); it must stay eager-equal."""
    torch._dynamo.reset()
    metric, x = torch.randn(2, 64, 8), torch.randn(2, 64, 4)
    sizes = torch.ones(2, 64)
    sizes[1, 50:] = 0  # a padded row too

    def merged(metric, sizes, x):
        plan = bipartite_soft_matching(metric, sizes, 16, 48, window=window)
        return plan.merge(x), plan.sizes

    eager, compiled = merged(metric, sizes, x), torch.compile(merged)(metric, sizes, x)
    torch.testing.assert_close(compiled[1], eager[1])
    torch.testing.assert_close(compiled[0], eager[0])


def test_kept_rank_compiled_by_sort_equals_the_eager_cumsum_on_kept_tokens():
    """Compiled, the rank comes from a stable sort (Inductor's CUDA split scan of the cumsum fails at batch 1,000)."""
    from maelre.layers.merge import _kept_rank

    torch._dynamo.reset()
    gone = torch.rand(5, 37, generator=torch.Generator().manual_seed(0)) < 0.4
    gone[0] = False  # nothing gone
    gone[1, 30:] = True  # a padded tail
    eager = _kept_rank(gone, 37)
    compiled = torch.compile(_kept_rank, backend="eager", fullgraph=True)(gone, 37)
    assert torch.equal(compiled[~gone], eager[~gone]) and compiled.dtype == eager.dtype
    assert torch.equal(eager[0], torch.arange(37))
    torch._dynamo.reset()


@pytest.mark.parametrize("window", [None, 4])
def test_unordered_candidates_merge_like_ordered_ones(monkeypatch, window):
    """When ``r`` covers every candidate (MAELRE's unpadded merges), top-k skips its sort: the same plan and merge as
    with the candidates ordered, ties (repeated tokens) and a protected first token included, values and gradients."""
    import maelre.layers.merge as merge_module

    g = torch.Generator().manual_seed(7)
    x, metric = torch.randn(3, 40, 5, generator=g), torch.randn(3, 40, 6, generator=g)
    metric[:, 20:] = metric[:, :1]  # repeated tokens: ten A tokens tie at score 1, so r = 8 cuts through the tie
    sizes = torch.randint(1, 4, (3, 40), generator=g).float()
    choose = merge_module._choose
    calls = []

    def run(r: int, protect_first: bool, force_order: bool):
        def spy(*args):
            calls.append(args[-1])
            return choose(*args[:-1], args[-1] or force_order)

        monkeypatch.setattr(merge_module, "_choose", spy)
        xg = x.clone().requires_grad_()
        plan = bipartite_soft_matching(metric, sizes, r, 40 - r, protect_first=protect_first, window=window, padded=False)
        out = plan.merge(xg)
        out.square().sum().backward()
        return out, plan.sizes, plan.unmerge(out), xg.grad

    for r in (16, 8):
        for protect_first in (False, True):
            for got, want in zip(run(r, protect_first, False), run(r, protect_first, True)):
                assert torch.equal(got, want)
    assert calls == [False] * 8  # r = N - n_out candidates: unordered
    bipartite_soft_matching(metric, sizes, 10, 24, window=window, padded=False)
    bipartite_soft_matching(metric, sizes, torch.tensor([16, 10, 3]), 24, window=window)
    assert calls[-2:] == [True, True]  # fewer than the candidates, or a per-row r: ordered
