"""``exact_attention`` (SDPA) against the float64 naive ``reference_attention``."""
from __future__ import annotations

import pytest
import torch

from maelre.layers import exact_attention, reference_attention


def _relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.double() - ref).abs().max() / ref.abs().max())


def _inputs(b=2, h=3, nq=7, nk=7, dh=8):
    return torch.randn(b, h, nq, dh), torch.randn(b, h, nk, dh), torch.randn(b, h, nk, dh)


def _naive_bias(b, nq, nk, key_bias=None, key_mask=None, causal=False, attn_mask=None) -> torch.Tensor:
    """Additive logits ``[B, 1, Nq, Nk]`` built entry by entry from the definitions."""
    bias = torch.zeros(b, 1, nq, nk, dtype=torch.float64)
    for i in range(nq):
        for j in range(nk):
            for r in range(b):
                allowed = True
                if key_mask is not None and not key_mask[r, j]:
                    allowed = False
                if causal and j > nk - nq + i:  # queries are the last nq positions
                    allowed = False
                if attn_mask is not None and not attn_mask[r, 0, i, j]:
                    allowed = False
                if not allowed:
                    bias[r, 0, i, j] = float("-inf")
                elif key_bias is not None:
                    bias[r, 0, i, j] = float(key_bias[r, j])
    return bias


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("use_bias", [False, True])
@pytest.mark.parametrize("use_mask", [False, True])
@pytest.mark.parametrize("nq", [7, 4])
def test_exact_attention_matches_reference(causal, use_bias, use_mask, nq):
    b, nk = 2, 7
    q, k, v = _inputs(b=b, nq=nq, nk=nk)
    key_bias = torch.randn(b, nk).abs().log1p() if use_bias else None
    key_mask = torch.tensor([[True] * nk, [True] * 5 + [False] * 2]) if use_mask else None
    out = exact_attention(q, k, v, key_bias=key_bias, key_mask=key_mask, causal=causal)
    ref = reference_attention(q, k, v, _naive_bias(b, nq, nk, key_bias, key_mask, causal))
    assert out.dtype == torch.float32
    assert _relative_error(out, ref) < 1e-5


def test_exact_attention_bool_attn_mask_combines_with_key_mask():
    q, k, v = _inputs()
    key_mask = torch.tensor([[True] * 6 + [False], [True] * 7])
    attn_mask = torch.rand(2, 1, 7, 7) > 0.4
    attn_mask[..., 0] = True  # key 0 is real in both rows: no query is left without keys
    out = exact_attention(q, k, v, key_mask=key_mask, attn_mask=attn_mask)
    ref = reference_attention(q, k, v, _naive_bias(2, 7, 7, key_mask=key_mask, attn_mask=attn_mask))
    assert _relative_error(out, ref) < 1e-5


def test_masked_keys_have_no_influence():
    q, k, v = _inputs()
    key_mask = torch.tensor([[True] * 4 + [False] * 3] * 2)
    out = exact_attention(q, k, v, key_mask=key_mask)
    k2, v2 = k.clone(), v.clone()
    k2[..., 4:, :] = 1e3
    v2[..., 4:, :] = -1e3
    torch.testing.assert_close(exact_attention(q, k2, v2, key_mask=key_mask), out)
    torch.testing.assert_close(out, exact_attention(q, k[..., :4, :], v[..., :4, :]))


@pytest.mark.parametrize("shape", ["per_key", "per_query", "causal"])
@pytest.mark.parametrize(("nq", "nk"), [(7, 7), (3, 7), (8, 8), (1, 5)])
def test_padded_lengths_give_the_same_values_and_gradients(shape, nq, nk):
    """``attend_padded`` (CUDA's path with a bias: lengths up to a multiple, so cuDNN reuses its plans) changes nothing."""
    from maelre.layers.attention import attend_padded

    torch.manual_seed(0)
    b, h = 2, 3
    q, k, v = (t.requires_grad_() for t in _inputs(b, h, nq, nk))
    key_mask = torch.ones(b, nk, dtype=torch.bool)
    key_mask[0, -2:] = False
    bias = {
        "per_key": torch.zeros(b, 1, 1, nk).masked_fill(~key_mask[:, None, None, :], float("-inf")),
        "per_query": torch.randn(b, h, nq, nk).masked_fill(~key_mask[:, None, None, :], float("-inf")),
        "causal": torch.zeros(nq, nk).masked_fill(~torch.ones(nq, nk, dtype=torch.bool).tril(nk - nq), float("-inf")),
    }[shape]
    plain = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    grads = torch.autograd.grad(plain.square().sum(), (q, k, v))
    padded = attend_padded(q, k, v, bias, 0.0, multiple=4)
    assert padded.shape == plain.shape == (b, h, nq, 8)
    torch.testing.assert_close(padded, plain, atol=1e-5, rtol=1e-5)
    for got, want in zip(torch.autograd.grad(padded.square().sum(), (q, k, v)), grads):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_only_long_biased_calls_are_padded_on_cuda(monkeypatch):
    """Padding pays for itself only where cuDNN's per-length plans are costly: long key lengths on CUDA."""
    from types import SimpleNamespace

    from maelre.layers import attention

    cuda, cpu = SimpleNamespace(is_cuda=True), SimpleNamespace(is_cuda=False)
    minimum = attention.CUDA_PAD_MIN_KEYS
    assert attention.pads_lengths(cuda, minimum) and attention.pads_lengths(cuda, 4000)
    assert not attention.pads_lengths(cuda, minimum - 1)  # MAELRE's short exact block keeps its length
    assert not attention.pads_lengths(cpu, 4000)
    monkeypatch.setattr(attention, "CUDA_LENGTH_MULTIPLE", 1)  # MAELRE_ATTENTION_PAD=1
    assert not attention.pads_lengths(cuda, 4000)


@pytest.mark.parametrize("autocast", [False, True])
@pytest.mark.parametrize("qkv_bias", [True, False])
def test_self_attention_projects_qkv_in_one_gemm_with_the_two_layers_values_and_gradients(qkv_bias, autocast):
    """``Attention.qkv`` without context stacks ``q_proj`` and ``kv_proj`` into one GEMM: the same q, k, v and the same
    gradients (of the input and of both layers' weights and biases) as the two layers applied separately."""
    import torch.nn.functional as F

    from maelre.layers.attention import Attention

    torch.manual_seed(0)
    attn = Attention(32, 4, qkv_bias=qkv_bias)
    x = torch.randn(2, 9, 32, requires_grad=True)
    params = [p for p in (attn.q_proj.weight, attn.q_proj.bias, attn.kv_proj.weight, attn.kv_proj.bias) if p is not None]
    results = []
    for fused in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            if fused:
                q, k, v = attn.qkv(x)
            else:
                k, v = attn.kv_proj(x).chunk(2, dim=-1)
                q, k, v = attn.split_heads(attn.q_proj(x)), attn.split_heads(k), attn.split_heads(v)
            loss = sum((t.float() * torch.linspace(-1, 1, t.numel()).view(t.shape)).sum() for t in (q, k, v))
        results.append(((q, k, v), torch.autograd.grad(loss, [x, *params])))
    (want, want_grads), (got, got_grads) = results
    tol = dict(atol=2e-2, rtol=2e-2) if autocast else dict(atol=1e-6, rtol=1e-6)
    for a, b in zip(got, want):
        assert a.shape == b.shape == (2, 4, 9, 8) and a.dtype == b.dtype
        torch.testing.assert_close(a, b, **tol)
    for a, b in zip(got_grads, want_grads):
        torch.testing.assert_close(a, b, **tol)
    with torch.no_grad():  # cross-attention keeps the two layers
        context = torch.randn(2, 5, 32)
        q, k, v = attn.qkv(x, context)
        torch.testing.assert_close(k, attn.split_heads(attn.kv_proj(context).chunk(2, dim=-1)[0]))
        torch.testing.assert_close(q, attn.split_heads(F.linear(x, attn.q_proj.weight, attn.q_proj.bias)))


def test_dropout_free_blocks_call_no_dropout():
    """With ``dropout=0`` a block holds no ``nn.Dropout`` (timm's Mlp builds two with p=0); with dropout it keeps them."""
    from torch import nn

    from maelre.layers import Block

    assert not any(isinstance(m, nn.Dropout) for m in Block(16, 2).modules())
    assert sum(isinstance(m, nn.Dropout) and m.p == 0.1 for m in Block(16, 2, dropout=0.1).modules()) == 3
