"""ECP: batched pairwise half-segment attention against a per-segment loop, receptive field, plan, config."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from maelre import create_backbone
from maelre.layers import apply_rope, reference_attention, rope_angles

DIM, HEADS = 16, 2


def _ecp(**overrides):
    config = dict(dim=DIM, depth=2, heads=HEADS, mlp_ratio=2.0, segment_size=4)
    config.update(overrides)
    return create_backbone("ecp", **config).eval()


def naive_ecp_layer(block, x, mask, half, causal, rope_base):
    """One ECP layer, half-segment by half-segment: h0 attends itself, hi attends [h(i-1), hi]."""
    n = x.shape[1]
    q, k, v = block.attn.qkv(block.norm1(x))
    if rope_base is not None:
        cos, sin = rope_angles(torch.arange(n), q.shape[-1], rope_base)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    outs = []
    for i in range(n // half):
        qs, ks = torch.arange(i * half, (i + 1) * half), torch.arange(max(0, (i - 1) * half), (i + 1) * half)
        blocked = ~mask[:, None, None, ks].expand(-1, 1, half, -1)
        if causal:
            blocked = blocked | (ks[None, :] > qs[:, None])
        bias = torch.zeros(blocked.shape).masked_fill(blocked, float("-inf"))
        outs.append(reference_attention(q[:, :, qs], k[:, :, ks], v[:, :, ks], bias))
    x = x + block.attn.output(torch.cat(outs, dim=2).float())
    x = block.mlp_residual(x)
    # Padded queries whose keys are all padding come out NaN here; they never feed real tokens.
    return torch.where(mask[..., None], x, 0.0)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("rope", [True, False])
def test_batched_layers_match_per_segment_loop(causal, rope):
    model = _ecp(depth=2, causal=causal, rope=rope)
    tokens = torch.randn(3, 12, DIM)
    mask = torch.arange(12) < torch.tensor([12, 7, 2])[:, None]
    out = model(tokens, mask, return_states=True)

    x = tokens
    for block in model.blocks:
        x = naive_ecp_layer(block, x, mask, half=2, causal=causal, rope_base=10000.0 if rope else None)
    ref = model.norm(x)
    assert torch.isfinite(out.states).all()
    torch.testing.assert_close(out.states[mask], ref[mask], atol=1e-5, rtol=1e-5)
    assert torch.equal(out.mask, mask)


def test_one_attention_call_per_layer(monkeypatch):
    calls = []
    sdpa = F.scaled_dot_product_attention

    def counting(q, k, v, **kwargs):
        calls.append((tuple(q.shape), tuple(k.shape)))
        return sdpa(q, k, v, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", counting)
    model = _ecp(depth=3, segment_size=8)
    model(torch.randn(2, 16, DIM))
    # 16 tokens = 4 half-segments of 4: queries [2*4, H, 4, dh] against keys [2*4, H, 8, dh].
    assert calls == [((8, HEADS, 4, DIM // HEADS), (8, HEADS, 8, DIM // HEADS))] * 3


def _influence(model, tokens):
    """``[N_out, N_in]``: |d <states[i], w> / d tokens[j]| summed over features, w random."""
    tokens = tokens.clone().requires_grad_(True)
    states = model(tokens, return_states=True).states[0]
    probe = torch.randn(states.shape[-1])
    rows = [torch.autograd.grad(states[i] @ probe, tokens, retain_graph=True)[0][0].abs().sum(-1) for i in range(states.shape[0])]
    return torch.stack(rows)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("depth", [1, 2, 5])
def test_receptive_field_grows_one_half_segment_per_layer(causal, depth):
    n, half = 12, 2
    model = _ecp(depth=depth, causal=causal)
    influence = _influence(model, torch.randn(1, n, DIM))
    pos = torch.arange(n)
    seg = pos // half
    expected = (seg[None, :] >= seg[:, None] - depth) & (seg[None, :] <= seg[:, None])
    if causal:
        expected &= pos[None, :] <= pos[:, None]
    assert (influence[~expected] == 0).all(), "a token depends on input outside its receptive field"
    assert (influence[expected] > 0).all(), "a token ignores input inside its receptive field"
    # 6 half-segments: only 5 layers carry the first token to the last one.
    assert bool(influence[n - 1, 0] > 0) == (depth >= 5)
    assert model.plan(n)[-1].extra["receptive_field"] == min(n, (depth + 1) * half)


def test_rope_makes_attention_position_aware():
    # Without positions a single layer is permutation-equivariant within a half-segment pair.
    tokens = torch.randn(1, 4, DIM)
    swapped = tokens[:, [1, 0, 2, 3]]
    for rope, equivariant in ((False, True), (True, False)):
        torch.manual_seed(0)
        model = _ecp(depth=1, rope=rope)
        out, out_swapped = (model(t, return_states=True).states for t in (tokens, swapped))
        assert torch.allclose(out[:, [1, 0, 2, 3]], out_swapped, atol=1e-6) == equivariant


def test_plan_counts_computed_blocks():
    model = _ecp(depth=3, segment_size=8)
    plan = model.plan(32)
    assert [b.attention for b in plan] == ["segment"] * 3
    # 8 half-segments x (4 queries x 8 keys) x 4D, per layer.
    assert all(b.attn_flops == 8 * 4 * 8 * 4 * DIM for b in plan)
    assert model.attention_flops(32) == 3 * 4 * 32 * 8 * DIM
    with pytest.raises(ValueError, match="multiple of segment_size/2=4"):
        model.plan(30)


def test_length_must_be_multiple_of_half_segment():
    model = _ecp(segment_size=8)
    assert model.length_multiple() == 4
    with pytest.raises(ValueError, match="divisible by 4.*pad_to_multiple=4"):
        model(torch.randn(1, 10, DIM))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(segment_size=5), "even number"),
        (dict(segment_size=0), "even number"),
        (dict(pool="cls"), "pool='mean'"),
        (dict(dim=12, heads=4), "even head dimension"),
        (dict(rope_base=1.0), "rope_base"),
    ],
)
def test_bad_config(overrides, message):
    with pytest.raises(ValueError, match=message):
        _ecp(**overrides)
