"""PerceiverAR: latents = last L real tokens per row, cross-attention vs a naive reference, causality, plan."""
from __future__ import annotations

import pytest
import torch

from maelre import create_backbone
from maelre.backbones.perceiver_ar import last_real_positions
from maelre.layers import reference_attention

DIM, HEADS = 16, 2


def _perceiver(**overrides):
    config = dict(dim=DIM, depth=2, heads=HEADS, mlp_ratio=2.0, num_latents=4)
    config.update(overrides)
    return create_backbone("perceiver_ar", **config).eval()


def _causal_bias(q_pos, k_pos, causal):
    blocked = k_pos[None, :] > q_pos[:, None] if causal else torch.zeros(len(q_pos), len(k_pos), dtype=torch.bool)
    return torch.zeros(blocked.shape).masked_fill(blocked, float("-inf"))


def _attend(block, x, context, bias):
    """``x + attn(norm1(x), norm1(context))`` then the MLP, for one unbatched row, in float64 attention."""
    q, k, v = block.attn.qkv(block.norm1(x)[None], block.norm1(context)[None])
    return block.mlp_residual(x + block.attn.output(reference_attention(q, k, v, bias).float())[0])


def naive_perceiver_row(model, tokens, mask, causal):
    """Row by row: pick the last L real tokens, cross-attend to all real tokens, then latent self-attention."""
    positions = mask.nonzero().flatten()
    real = tokens[positions]
    latent_pos = positions[-model.config.num_latents :]
    x = _attend(model.blocks[0], tokens[latent_pos], real, _causal_bias(latent_pos, positions, causal))
    for block in model.blocks[1:]:
        x = _attend(block, x, x, _causal_bias(latent_pos, latent_pos, causal))
    return model.norm(x)


MASKS = {
    # right padding, one row shorter than L
    "right": torch.arange(9) < torch.tensor([9, 6, 3])[:, None],
    # any layout of real tokens (left padding, holes)
    "holes": torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1, 1], [1, 0, 1, 1, 0, 1, 0, 0, 1], [0, 1, 0, 0, 0, 0, 0, 0, 0]], dtype=torch.bool),
}


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("depth", [1, 3])
@pytest.mark.parametrize("layout", list(MASKS))
def test_matches_naive_reference(causal, depth, layout):
    mask = MASKS[layout]
    model = _perceiver(depth=depth, causal=causal)
    tokens = torch.randn(*mask.shape, DIM)
    tokens[~mask] = float("nan")  # padding content must not matter
    out = model(tokens, mask, return_states=True)
    assert out.states.shape == (3, 4, DIM)
    assert torch.isfinite(out.states).all()
    for b in range(3):
        ref = naive_perceiver_row(model, tokens[b], mask[b], causal)
        n_real = len(ref)
        assert out.mask[b].tolist() == [True] * n_real + [False] * (4 - n_real)
        torch.testing.assert_close(out.states[b, :n_real], ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out.pooled[b], ref.mean(0), atol=1e-5, rtol=1e-5)


def test_last_real_positions():
    positions, latent_mask = last_real_positions(MASKS["holes"], 4)
    assert positions[0].tolist() == [5, 6, 7, 8]
    assert positions[1].tolist() == [2, 3, 5, 8]
    assert positions[2, :1].tolist() == [1] and latent_mask[2].tolist() == [True, False, False, False]
    # Fewer positions than latents: L' = N.
    positions, latent_mask = last_real_positions(torch.ones(2, 3, dtype=torch.bool), 8)
    assert positions.tolist() == [[0, 1, 2]] * 2 and latent_mask.all()


@pytest.mark.parametrize("causal", [False, True])
def test_causal_gradient(causal):
    n, lengths = 10, torch.tensor([10, 7])
    mask = torch.arange(n) < lengths[:, None]
    model = _perceiver(depth=2, causal=causal)
    tokens = torch.randn(2, n, DIM, requires_grad=True)
    states = model(tokens, mask, return_states=True).states  # latents: positions len-4 .. len-1
    probe = torch.randn(DIM)
    for b, length in enumerate(lengths.tolist()):
        for p in range(4):
            (grad,) = torch.autograd.grad(states[b, p] @ probe, tokens, retain_graph=True)
            influence = grad.abs().sum(-1)
            assert (influence[1 - b] == 0).all()
            latent_position = length - 4 + p
            seen = torch.arange(n) <= latent_position if causal else mask[b]
            assert (influence[b][seen & mask[b]] > 0).all()
            assert (influence[b][~(seen & mask[b])] == 0).all()


def test_short_sequences_use_all_tokens():
    model = _perceiver(num_latents=16)
    tokens = torch.randn(1, 5, DIM)
    out = model(tokens, return_states=True)
    assert out.states.shape == (1, 5, DIM) and out.mask.all()
    # With L >= N the first layer is ordinary self-attention over the whole sequence.
    ref = naive_perceiver_row(model, tokens[0], torch.ones(5, dtype=torch.bool), causal=False)
    torch.testing.assert_close(out.states[0], ref, atol=1e-5, rtol=1e-5)


def test_plan_flops():
    model = _perceiver(depth=3, num_latents=4)
    plan = model.plan(20)
    assert [(b.n_in, b.n_out, b.attention) for b in plan] == [(20, 4, "cross"), (4, 4, "exact"), (4, 4, "exact")]
    assert model.attention_flops(20) == 4 * 4 * 20 * DIM + 2 * 4 * 4 * 4 * DIM
    assert model.plan(3)[0].n_out == 3


@pytest.mark.parametrize("overrides, message", [(dict(num_latents=0), "num_latents"), (dict(pool="cls"), "pool='mean'")])
def test_bad_config(overrides, message):
    with pytest.raises(ValueError, match=message):
        _perceiver(**overrides)
