"""MASFormer: local kernels against full attention under the equivalent N x N band mask (small N only)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from maelre import create_backbone
from maelre.backbones.masformer import sliding_window_attention, sliding_window_attention_flex
from maelre.layers import reference_attention

DIM, HEADS = 16, 2
CUDA = torch.cuda.is_available()


def band_mask(n: int, window: int, causal: bool) -> torch.Tensor:
    """``[N, N]`` bool, True where ``|i - j| <= window`` (``i - window <= j <= i`` if causal)."""
    offset = torch.arange(n)[None, :] - torch.arange(n)[:, None]
    return (offset >= -window) & (offset <= (0 if causal else window))


def _reference(q, k, v, window, causal, key_mask):
    allowed = band_mask(q.shape[-2], window, causal).to(q.device)
    if key_mask is not None:
        allowed = allowed & key_mask[:, None, None, :]
    return reference_attention(q, k, v, torch.zeros(allowed.shape, device=q.device).masked_fill(~allowed, float("-inf")))


def _qkv(b=2, n=23, device="cpu", dh=8):
    return tuple(torch.randn(b, HEADS, n, dh, device=device) for _ in range(3))


LENGTHS = torch.tensor([23, 14])


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("n, window", [(23, 4), (24, 4), (23, 1), (9, 8), (5, 8)])
def test_blocked_equals_band_masked_full_attention(causal, masked, n, window):
    q, k, v = _qkv(n=n)
    key_mask = torch.arange(n) < torch.tensor([n, n // 2 + 1])[:, None] if masked else None
    out = sliding_window_attention(q, k, v, window=window, causal=causal, key_mask=key_mask)
    ref = _reference(q, k, v, window, causal, key_mask)
    real = key_mask if masked else torch.ones(2, n, dtype=torch.bool)
    assert torch.isfinite(out).all()  # padded queries included
    torch.testing.assert_close(out.transpose(1, 2)[real].double(), ref.transpose(1, 2)[real], atol=1e-5, rtol=1e-5)


def test_blocked_is_one_sdpa_call_with_3w_keys(monkeypatch):
    shapes = []
    sdpa = F.scaled_dot_product_attention

    def recording(q, k, v, **kwargs):
        shapes.append((tuple(q.shape), tuple(k.shape)))
        return sdpa(q, k, v, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", recording)
    q, k, v = _qkv(n=22)
    sliding_window_attention(q, k, v, window=5)
    sliding_window_attention(q, k, v, window=5, causal=True)
    # 22 tokens -> 5 blocks of 5 (padded to 25); 3w keys, 2w when causal.
    assert shapes == [((10, HEADS, 5, 8), (10, HEADS, 15, 8)), ((10, HEADS, 5, 8), (10, HEADS, 10, 8))]


@pytest.mark.slow
def test_flex_equals_blocked_on_cpu():
    # torch 2.11 compiles FlexAttention for CPU too (first call compiles: ~20-40 s here).
    q, k, v = _qkv(n=21)
    key_mask = torch.arange(21) < LENGTHS[:, None] - 2
    flex = sliding_window_attention_flex(q, k, v, window=4, key_mask=key_mask)
    blocked = sliding_window_attention(q, k, v, window=4, key_mask=key_mask)
    torch.testing.assert_close(flex, blocked, atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(not CUDA, reason="FlexAttention block-sparse kernels need CUDA")
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_flex_equals_blocked_on_cuda(causal, masked):
    n = 300
    q, k, v = (t.requires_grad_(True) for t in _qkv(n=n, device="cuda", dh=16))
    key_mask = (torch.arange(n) < torch.tensor([n, 170])[:, None]).cuda() if masked else None
    flex = sliding_window_attention_flex(q, k, v, window=37, causal=causal, key_mask=key_mask)
    blocked = sliding_window_attention(q, k, v, window=37, causal=causal, key_mask=key_mask)
    torch.testing.assert_close(flex, blocked, atol=1e-4, rtol=1e-4)
    probe = torch.randn_like(flex)
    grads_flex = torch.autograd.grad((flex * probe).sum(), (q, k, v))
    grads_blocked = torch.autograd.grad((blocked * probe).sum(), (q, k, v))
    for a, b in zip(grads_flex, grads_blocked):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def _masformer(**overrides):
    config = dict(dim=DIM, depth=3, heads=HEADS, mlp_ratio=2.0, window=3, full_layers=[1], local_impl="blocked")
    config.update(overrides)
    return create_backbone("masformer", **config).eval()


@pytest.mark.parametrize("causal", [False, True])
def test_model_matches_band_masked_reference(causal):
    model = _masformer(causal=causal)
    n = 13
    tokens = torch.randn(2, n, DIM)
    mask = torch.arange(n) < torch.tensor([n, 8])[:, None]
    out = model(tokens, mask, return_states=True)
    band = band_mask(n, 3, causal)
    x = tokens
    for i, block in enumerate(model.blocks):
        allowed = torch.ones(n, n, dtype=torch.bool) if i in model.config.full_layers else band
        if causal:
            allowed = allowed & band_mask(n, n, causal=True)
        x = block(x, key_mask=mask, attn_mask=allowed)
    ref = model.norm(x)
    torch.testing.assert_close(out.states[mask], ref[mask], atol=1e-5, rtol=1e-5)


def test_wide_window_or_all_full_layers_is_the_transformer():
    n = 10
    tokens = torch.randn(2, n, DIM)
    mask = torch.arange(n) < torch.tensor([n, 6])[:, None]
    transformer = create_backbone("transformer", dim=DIM, depth=3, heads=HEADS, mlp_ratio=2.0).eval()
    expected = transformer(tokens, mask)
    for overrides in (dict(window=n), dict(full_layers=[0, 1, 2]), dict(full_layers=[], window=n - 1)):
        model = _masformer(**overrides)
        model.load_state_dict(transformer.state_dict())
        torch.testing.assert_close(model(tokens, mask), expected, atol=1e-5, rtol=1e-5)
    narrow = _masformer(full_layers=[], window=2)
    narrow.load_state_dict(transformer.state_dict())
    assert not torch.allclose(narrow(tokens, mask), expected, atol=1e-3)


def test_local_impl_resolution():
    model = _masformer(local_impl="auto", attn_dropout=0.1)
    assert model.local_impl(torch.device("cpu")) == "blocked"
    assert model.local_impl(torch.device("cuda")) == "flex"  # eval: no attention dropout
    model.train()
    assert model.local_impl(torch.device("cuda")) == "blocked"  # FlexAttention has no dropout
    assert _masformer(local_impl="flex").local_impl(torch.device("cpu")) == "flex"


def test_plan():
    model = _masformer(depth=3, full_layers=[0], window=4)
    plan = model.plan(30)
    assert [b.attention for b in plan] == ["exact", "local", "local"]
    assert plan[0].attn_flops == 4 * 30 * 30 * DIM
    # 30 tokens -> 8 blocks of 4 (32 queries) x 12 keys.
    assert plan[1].attn_flops == 4 * 32 * 12 * DIM and plan[1].extra == {"window": 4}
    assert _masformer(full_layers=[0], window=4, causal=True).plan(30)[2].attn_flops == 4 * 32 * 8 * DIM
    assert model.attention_flops(4096) < 0.4 * create_backbone("transformer", dim=DIM, depth=3, heads=HEADS).attention_flops(4096)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(full_layers=[3]), r"full_layers must hold layer indices in \[0, depth=3\)"),
        (dict(full_layers=[0, 0]), "repeated"),
        (dict(window=0), "window must be >= 1"),
        (dict(local_impl="triton"), "local_impl must be one of"),
        (dict(local_impl="flex", attn_dropout=0.1), "attn_dropout=0"),
        (dict(pool="cls"), "pool='mean'"),
    ],
)
def test_bad_config(overrides, message):
    with pytest.raises(ValueError, match=message):
        _masformer(**overrides)
