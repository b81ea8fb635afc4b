"""Contract tests run on every registered backbone (tiny configs, CPU)."""
from __future__ import annotations

import pytest
import torch

from maelre import BackboneOutput, create_backbone, list_backbones
from maelre.layers import weighted_mean

DIM = 32
TINY = dict(dim=DIM, depth=2, heads=2, mlp_ratio=2.0)
# Per-backbone settings that make the tiny sequences below exercise the efficient path.
TWEAKS = {"maelre": dict(merge_schedule="fraction", merge_fraction=0.25, switch_threshold=4), "ecp": dict(segment_size=4), "perceiver_ar": dict(num_latents=4), "masformer": dict(window=2, full_layers=[0])}
# Backbones whose output for a sequence must not depend on the padding around it.
EXACT = {"transformer", "masformer", "ecp", "perceiver_ar"}
NAMES = list_backbones()
N = 12  # a multiple of every length_multiple() above
LENGTHS = [12, 7, 3]


def build(name: str, **overrides):
    return create_backbone(name, **{**TINY, **TWEAKS.get(name, {}), **overrides}).eval()


def padded_batch(lengths=LENGTHS, n=N):
    tokens = torch.randn(len(lengths), n, DIM)
    mask = torch.arange(n) < torch.tensor(lengths)[:, None]
    return tokens, mask


def test_expected_backbones_are_registered():
    assert {"transformer", "perceiver_ar", "ecp", "masformer"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_forward_backward_on_padded_batch(name):
    model = build(name).train()
    tokens, mask = padded_batch()
    tokens.requires_grad_(True)
    out = model(tokens, mask, return_states=True)
    assert isinstance(out, BackboneOutput)
    assert out.pooled.shape == (3, DIM)
    (out.pooled * torch.randn(3, DIM)).sum().backward()

    influence = tokens.grad.abs().sum(-1)
    assert (influence[mask] > 0).all(), "every real token should influence the pooled output"
    assert (influence[~mask] == 0).all(), "padding must not influence the pooled output"
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"parameters without (finite) gradients: {missing}"


@pytest.mark.parametrize("name", NAMES)
def test_states_and_trace_are_consistent(name):
    model = build(name)
    tokens, mask = padded_batch()
    pooled = model(tokens, mask)
    out = model(tokens, mask, return_trace=True)
    b, n_final, d = out.states.shape
    assert (b, d) == (3, DIM)
    assert out.sizes.shape == out.mask.shape == (3, n_final) and out.mask.dtype == torch.bool
    assert torch.equal(out.mask, out.sizes > 0)
    torch.testing.assert_close(out.pooled, pooled)
    torch.testing.assert_close(out.pooled, weighted_mean(out.states, out.sizes), atol=1e-5, rtol=1e-5)
    assert len(out.trace) == model.config.depth
    assert out.trace[0].n_in == N + (1 if model.config.pool == "cls" else 0)
    assert all(prev.n_out == nxt.n_in for prev, nxt in zip(out.trace, out.trace[1:]))
    assert out.trace[-1].n_out == n_final
    assert model(tokens, mask, return_states=True).trace == []


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("seq_len", [N, 64])
def test_plan_has_one_entry_per_block(name, seq_len):
    plan = build(name).plan(seq_len)
    assert [b.index for b in plan] == list(range(TINY["depth"]))
    assert all(b.attn_flops > 0 and b.n_out <= b.n_in for b in plan)


@pytest.mark.parametrize("name", sorted(EXACT & set(NAMES)))
def test_padding_invariance(name):
    model = build(name)
    tokens, mask = padded_batch()
    tokens[~mask] = float("nan")  # whatever the padding holds
    batched = model(tokens, mask)
    assert torch.isfinite(batched).all()
    multiple = model.length_multiple()
    for row, length in enumerate(LENGTHS):
        n = -(-length // multiple) * multiple  # alone, padded only as far as the backbone needs
        alone = model(tokens[row : row + 1, :n], mask[row : row + 1, :n])
        torch.testing.assert_close(batched[row : row + 1], alone, atol=1e-5, rtol=1e-5)


BAD_INPUTS = {
    "rank": (lambda t, m: (t[0], None), r"shape \[B, N, D\].*unsqueeze\(0\)"),
    "width": (lambda t, m: (torch.randn(2, N, DIM + 1), None), f"D={DIM + 1} does not match.*dim={DIM}"),
    "empty_row": (lambda t, m: (t, torch.cat([m[:1], torch.zeros_like(m[1:])])), r"rows \[1, 2\] are all padding; drop empty sequences"),
    "nan": (lambda t, m: (t.index_put((torch.tensor(1), torch.tensor(2)), torch.tensor(float("nan"))), m), r"NaN or inf in batch rows \[1\].*nan_policy"),
    "mask_dtype": (lambda t, m: (t, m.float()), r"mask must be bool.*mask\.bool\(\)"),
    "mask_shape": (lambda t, m: (t, m[:, :-1]), r"mask must be a bool tensor of shape \[B, N\]"),
    # escaped as torch's "mixed dtype (CPU): all inputs must share same datatype" from a layer norm
    "dtype": (lambda t, m: (t.double(), m), r"tokens are torch.float64 but the backbone's weights are torch.float32; convert the tokens"),
}


VALUE_CASES = {"empty_row", "nan"}  # read tensor values: checked in the collate, or in forward with check_values


@pytest.mark.parametrize("case", list(BAD_INPUTS))
@pytest.mark.parametrize("name", NAMES)
def test_bad_input_raises_with_fix(name, case):
    make, message = BAD_INPUTS[case]
    tokens, mask = make(*padded_batch())
    model = build(name)
    model.check_values = case in VALUE_CASES
    with pytest.raises(ValueError, match=message):
        model(tokens, mask)


@pytest.mark.parametrize("case", sorted(VALUE_CASES))
def test_forward_reads_no_values_unless_debugging(case, monkeypatch):
    """The training forward runs no host-synced value checks: ``bool(tensor)`` is never called."""
    import maelre.layers.validation as validation

    calls = []
    monkeypatch.setattr(validation, "check_token_values", lambda *a, **k: calls.append(a))
    model = build("transformer")
    model(*BAD_INPUTS[case][0](*padded_batch()))
    assert calls == []
    model.check_values = True
    model(*padded_batch())
    assert len(calls) == 1


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("key, value, error, message", [
    # failed inside a comparison or a layer: "'<=' not supported between instances of 'str' and 'int'"
    ("dim", "64", TypeError, "dim must be an integer, got '64'"),
    ("depth", 2.5, TypeError, "depth must be an integer, got 2.5"),
    ("max_len", 0, ValueError, r"max_len must be >= 1 or None \(no limit\), got 0"),  # was accepted: every input then too long
])
def test_config_of_a_wrong_type_names_the_key(name, key, value, error, message):
    with pytest.raises(error, match=message):
        create_backbone(name, **{key: value})


@pytest.mark.parametrize("name", NAMES)
def test_too_long_input_names_max_len(name):
    model = build(name, max_len=8)
    with pytest.raises(ValueError, match="N=12 exceeds max_len=8; truncate in the adapter"):
        model(*padded_batch())


@pytest.mark.parametrize("name", NAMES)
def test_length_multiple_is_enforced(name):
    model = build(name)
    multiple = model.length_multiple()
    if name == "ecp":
        assert multiple == TWEAKS["ecp"]["segment_size"] // 2
    if multiple == 1:
        model(*padded_batch([5], n=5))  # any length works
        return
    n = 3 * multiple + 1
    with pytest.raises(ValueError, match=f"N={n} must be divisible by {multiple}.*pad_to_multiple={multiple}"):
        model(*padded_batch([n], n=n))
