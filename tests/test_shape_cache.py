"""Shape-keyed index tensors (maelre.layers.shape_cache) and the merge paths that use them."""
from __future__ import annotations

import pytest
import torch

import maelre
from maelre.layers import shape_cache
from maelre.layers.merge import _window_offsets, _window_outside, bipartite_soft_matching, take_tokens
from maelre.layers.rope import inverse_frequencies, rope_angles


def test_cached_tensors_are_right_for_every_shape_and_device_in_one_process():
    cpu, meta = torch.device("cpu"), torch.device("meta")
    for n in (5, 9, 5):
        assert torch.equal(shape_cache.arange(n, cpu), torch.arange(n))
    assert shape_cache.arange(5, cpu) is shape_cache.arange(5, cpu)  # built once
    assert shape_cache.arange(5, meta).device == meta and shape_cache.arange(5, meta).shape == (5,)
    for na, before in ((7, 3), (16, 1), (7, 0)):
        assert torch.equal(_window_offsets(na, before, cpu), torch.arange(na) - before)
    for head_dim, base in ((8, 10000.0), (16, 10000.0), (8, 500.0)):
        expected = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        assert torch.equal(inverse_frequencies(head_dim, base, cpu), expected)
        positions = torch.tensor([[0.0, 1.5, 7.0]])
        cos, _ = rope_angles(positions, head_dim, base)
        assert torch.equal(cos, (positions[..., None] * expected).cos())


@pytest.mark.parametrize("na, nb, window", [(8, 8, 4), (9, 8, 4), (5, 4, 32), (12, 12, 1)])
def test_window_ends_match_a_padded_all_real_mask(na, nb, window):
    """The cached band of slots off the sequence ends equals the mask built from an all-real row."""
    before, after = min((window + 1) // 2, na), min((window - 1) // 2, nb - 1)  # as match_window
    width, pad = before + after + 1, (before, na + after - nb)
    built = torch.nn.functional.pad(torch.ones(1, nb, dtype=torch.bool), pad, value=False).unfold(1, width, 1)[0]
    assert torch.equal(_window_outside(nb, width, *pad, torch.device("cpu")), ~built)


def test_a_cache_filled_in_inference_mode_still_serves_training():
    """Autograd may save a cached index for backward, so it must not be an inference tensor."""
    shape_cache.arange.cache_clear()
    with torch.inference_mode():
        take_tokens(torch.randn(3, 10, 4), torch.zeros(3, 2, dtype=torch.long))
    x = torch.randn(3, 10, 4, requires_grad=True)
    take_tokens(x, torch.ones(3, 5, dtype=torch.long)).sum().backward()  # reuses arange(3) from the cache
    assert x.grad[:, 1].eq(5).all() and x.grad.sum() == 60


@pytest.mark.parametrize("window", [None, 4])
@pytest.mark.parametrize("protect_first", [False, True])
def test_unpadded_plan_equals_the_padded_plan_on_a_full_batch(window, protect_first):
    g = torch.Generator().manual_seed(3)
    for n, n_out in ((20, 12), (33, 17)):  # two shapes in one process
        metric, x, sizes = torch.randn(2, n, 6, generator=g), torch.randn(2, n, 5, generator=g), torch.ones(2, n)
        kwargs = {"protect_first": protect_first, "window": window}
        full = bipartite_soft_matching(metric, sizes, n - n_out, n_out, padded=True, **kwargs)
        fast = bipartite_soft_matching(metric, sizes, n - n_out, n_out, padded=False, **kwargs)
        assert torch.equal(fast.sizes, full.sizes)
        assert torch.equal(fast.merge(x), full.merge(x))
        assert torch.equal(fast.unmerge(fast.merge(x)), full.unmerge(full.merge(x)))


def test_padding_never_reaches_real_tokens_even_when_it_holds_nan():
    g = torch.Generator().manual_seed(4)
    metric, x = torch.randn(2, 16, 6, generator=g), torch.randn(2, 16, 3, generator=g, requires_grad=True)
    sizes = torch.ones(2, 16)
    sizes[1, 9:] = 0
    plan = bipartite_soft_matching(metric, sizes, torch.tensor([8, 4]), 8, window=4)
    dirty = torch.where((sizes > 0)[..., None], x, float("nan"))
    real = plan.sizes > 0
    merged = plan.merge(dirty)
    assert torch.isfinite(merged[real]).all()
    torch.testing.assert_close(merged[real], plan.merge(x.detach())[real], rtol=0, atol=0)
    merged[real].sum().backward()
    assert torch.isfinite(x.grad).all() and (x.grad[1, 9:] == 0).all()


def test_maelre_unmasked_batch_equals_the_same_batch_with_an_all_true_mask():
    """No mask takes the unpadded fast path (no padding masks, cached window ends); it must agree with the masked path."""
    torch.manual_seed(0)
    model = maelre.create_backbone("maelre", dim=32, depth=4, heads=4, mlp_ratio=2.0).eval()
    tokens = torch.randn(2, 300, 32)
    with torch.no_grad():
        plain = model(tokens, None, return_trace=True)
        masked = model(tokens, torch.ones(2, 300, dtype=torch.bool), return_trace=True)
    assert [b.n_out for b in plain.trace] == [b.n_out for b in masked.trace]
    torch.testing.assert_close(plain.pooled, masked.pooled, rtol=1e-5, atol=1e-6)
