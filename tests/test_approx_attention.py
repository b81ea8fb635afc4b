"""Approximate attention kernels (linear, FAVOR+, Nystrom) against naive float64 references."""
from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from maelre.layers import (
    FavorFeatureMap,
    LinearAttention,
    NystromAttention,
    elu_feature_map,
    exact_attention,
    iterative_pinv,
    key_logit_bias,
    linear_attention,
    linear_attention_reference,
    nystrom_attention,
    nystrom_attention_reference,
    reference_attention,
)

B, H, N, DH = 2, 3, 40, 8


def qkv(n: int = N, scale: float = 1.0, seed: int = 0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, n, DH, generator=g, dtype=dtype) * s for s in (scale, scale, 1.0)]


def padding(n: int = N, length: int = 25, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``key_mask`` (row 1 padded after ``length``) and ``key_bias = log(size)`` with sizes 1..4."""
    mask = torch.ones(B, n, dtype=torch.bool)
    mask[1, length:] = False
    sizes = torch.randint(1, 5, (B, n), generator=torch.Generator().manual_seed(seed)).float()
    return mask, sizes.log()


def assert_close_relative(actual: torch.Tensor, expected: torch.Tensor, mask: torch.Tensor | None, rtol: float = 1e-5) -> None:
    """``|actual - expected| <= rtol * max|expected|`` over the real query rows."""
    rows = torch.ones(B, actual.shape[2], dtype=torch.bool) if mask is None else mask
    a, e = actual.double().transpose(1, 2)[rows], expected.double().transpose(1, 2)[rows]
    err = (a - e).abs().max() / e.abs().max()
    assert err <= rtol, f"relative error {err:.2e} > {rtol:.0e}"


class LargestTensor(TorchDispatchMode):
    """Records the element count of the largest tensor any op produces."""

    def __init__(self) -> None:
        super().__init__()
        self.numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        sizes = [t.numel() for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        self.numel = max([self.numel, *sizes])
        return out


@pytest.mark.parametrize("padded", [False, True])
def test_exact_attention_with_size_bias_matches_reference(padded):
    q, k, v = qkv()
    mask, bias = padding()
    mask = mask if padded else None
    out = exact_attention(q, k, v, key_bias=bias, key_mask=mask)
    ref = reference_attention(q, k, v, key_logit_bias(bias, mask, torch.float64))
    assert_close_relative(out, ref, mask)


@pytest.mark.parametrize("feature", ["elu", "favor"])
@pytest.mark.parametrize("padded,sized", [(False, False), (False, True), (True, False), (True, True)])
def test_linear_attention_matches_reference(feature, padded, sized):
    q, k, v = qkv(scale=0.5)
    mask, bias = padding()
    mask, bias = (mask if padded else None), (bias if sized else None)
    fmap = elu_feature_map if feature == "elu" else FavorFeatureMap(DH, num_features=32, seed=3)
    out = linear_attention(q, k, v, key_bias=bias, key_mask=mask, feature_map=fmap)
    ref = linear_attention_reference(q, k, v, key_bias=bias, key_mask=mask, feature_map=fmap)
    assert out.shape == q.shape and out.dtype == torch.float32
    assert_close_relative(out, ref, mask)


@pytest.mark.parametrize("padded,sized", [(False, False), (False, True), (True, True)])
@pytest.mark.parametrize("landmarks", [8, 64])  # 64 > N: empty segments are dropped
def test_nystrom_attention_matches_reference(landmarks, padded, sized):
    q, k, v = qkv()
    mask, bias = padding()
    mask, bias = (mask if padded else None), (bias if sized else None)
    out = nystrom_attention(q, k, v, key_bias=bias, key_mask=mask, num_landmarks=landmarks)
    ref = nystrom_attention_reference(q, k, v, key_bias=bias, key_mask=mask, num_landmarks=landmarks)
    assert out.shape == q.shape
    assert_close_relative(out, ref, mask)


def test_nystrom_with_a_landmark_per_token_is_exact_attention():
    # landmarks = the tokens themselves: A pinv(A) softmax(QK^T + b) = softmax(QK^T + b) once pinv has converged
    q, k, v = qkv(dtype=torch.float64)
    mask, bias = padding()
    out = nystrom_attention(q, k, v, key_bias=bias, key_mask=mask, num_landmarks=N, pinv_iterations=20)
    ref = reference_attention(q, k, v, key_logit_bias(bias, mask, torch.float64))
    assert_close_relative(out, ref, mask, rtol=1e-4)


def test_iterative_pinv_converges_to_moore_penrose():
    g = torch.Generator().manual_seed(0)
    a = torch.softmax(torch.randn(3, 16, 16, generator=g, dtype=torch.float64) * 2 + 4 * torch.eye(16, dtype=torch.float64), -1)
    torch.testing.assert_close(iterative_pinv(a, 30), torch.linalg.pinv(a), rtol=1e-8, atol=1e-8)
    residual = [(a @ iterative_pinv(a, it) @ a - a).abs().max() for it in (0, 6)]
    assert residual[1] < 0.02 < residual[0]  # the paper's 6 iterations already nearly invert it


def test_favor_features_approximate_softmax_attention():
    q, k, v = qkv(scale=0.5)
    mask, bias = padding()
    exact = reference_attention(q, k, v, key_logit_bias(bias, mask, torch.float64))
    approx = linear_attention(q, k, v, key_bias=bias, key_mask=mask, feature_map=FavorFeatureMap(DH, num_features=2048))
    uniform = linear_attention(q, k, v, key_bias=bias, key_mask=mask, feature_map=lambda x, **_: torch.ones_like(x))
    error = (approx.double() - exact)[0].norm() / exact[0].norm()
    assert error < 0.1
    assert error < 0.5 * (uniform.double() - exact)[0].norm() / exact[0].norm()


def test_favor_redraw_changes_projection_and_is_seeded():
    a, b = FavorFeatureMap(DH, 16, seed=1), FavorFeatureMap(DH, 16, seed=1)
    assert torch.equal(a.projection, b.projection)
    rows = a.projection[:DH] / a.projection[:DH].norm(dim=1, keepdim=True)
    torch.testing.assert_close(rows @ rows.T, torch.eye(DH), atol=1e-5, rtol=0)  # orthogonal block
    a.redraw(torch.Generator().manual_seed(7))
    assert not torch.equal(a.projection, b.projection)
    assert "projection" in a.state_dict()


@pytest.mark.parametrize("kernel", ["elu", "favor", "nystrom", "nystrom_conv"])
def test_padding_does_not_change_real_outputs(kernel):
    """A padded row (padding full of huge values) gives the same outputs as the row alone."""
    q, k, v = qkv()
    mask, bias = padding(length=25)
    for t in (q, k, v):
        t[1, :, 25:] = 1e4
    module = {
        "elu": LinearAttention(DH),
        "favor": LinearAttention(DH, "favor", num_features=16),
        "nystrom": NystromAttention(H, num_landmarks=6),
        "nystrom_conv": NystromAttention(H, num_landmarks=6, conv_kernel=5),
    }[kernel]
    batch = module(q, k, v, key_bias=bias, key_mask=mask)
    alone = module(q[1:, :, :25], k[1:, :, :25], v[1:, :, :25], key_bias=bias[1:, :25])
    torch.testing.assert_close(batch[1:, :, :25], alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel", ["linear", "favor", "nystrom"])
def test_no_quadratic_tensor(kernel):
    n = 1024
    q, k, v = (t[:1, :1] for t in qkv(n))
    mask, bias = (t[:1] for t in padding(n, length=1000))
    fn = {
        "linear": lambda: linear_attention(q, k, v, key_bias=bias, key_mask=mask),
        "favor": lambda: LinearAttention(DH, "favor", num_features=16)(q, k, v, key_bias=bias, key_mask=mask),
        "nystrom": lambda: nystrom_attention(q, k, v, key_bias=bias, key_mask=mask, num_landmarks=16),
    }[kernel]
    with LargestTensor() as largest:
        fn()
    assert largest.numel <= 32 * n, f"largest intermediate has {largest.numel} elements (N = {n})"


def test_bf16_inputs_are_accumulated_in_float32():
    q, k, v = qkv(n=512, scale=0.5, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outs = linear_attention(q, k, v), nystrom_attention(q, k, v, num_landmarks=16)
    refs = linear_attention_reference(q, k, v), nystrom_attention_reference(q, k, v, num_landmarks=16)
    for out, ref in zip(outs, refs):
        assert out.dtype == torch.bfloat16
        # only the final rounding to bf16 remains (relative 2^-8)
        assert ((out.double() - ref).abs() <= 2**-8 * ref.abs() + 1e-6).all()


def test_modules_validate_their_settings():
    with pytest.raises(ValueError, match="feature map"):
        LinearAttention(DH, "relu")
    with pytest.raises(ValueError, match="num_features"):
        FavorFeatureMap(DH, 0)
    with pytest.raises(ValueError, match="odd"):
        NystromAttention(H, conv_kernel=4)
    with pytest.raises(ValueError, match="num_landmarks"):
        NystromAttention(H, num_landmarks=0)


def test_flops_models_scale_linearly():
    elu, favor, nys = LinearAttention(DH), LinearAttention(DH, "favor", num_features=16), NystromAttention(H, num_landmarks=8)
    for module in (elu, favor, nys):
        assert module.flops(8192, 64) < 0.6 * module.flops(16384, 64) < module.flops(16384, 64)
    assert elu.flops(1000, 64) == 4 * 1000 * 64 * DH


@pytest.mark.parametrize(
    "module",
    [LinearAttention(DH), LinearAttention(DH, "favor", num_features=16), NystromAttention(H, num_landmarks=8, conv_kernel=3)],
    ids=["elu", "favor", "nystrom"],
)
def test_recomputed_backward_matches_stored_backward(module):
    mask, bias = padding()
    grads = []
    for recompute in (True, False):
        module.recompute = recompute
        q, k, v = (t.requires_grad_(True) for t in qkv())
        module(q, k, v, key_bias=bias, key_mask=mask).pow(2).sum().backward()
        grads.append([t.grad for t in (q, k, v)])
    for recomputed, stored in zip(*grads):
        torch.testing.assert_close(recomputed, stored)


@pytest.mark.parametrize("feature_map", ["elu", "favor"])
@pytest.mark.parametrize("per_row", [True, False], ids=["positions-per-row", "shared-positions"])
def test_rotary_recomputed_backward_matches_plain_autograd(feature_map, per_row):
    """RoPE in feature space through the recomputing backward: same values and q/k/v gradients as autograd."""
    module = LinearAttention(DH, feature_map, num_features=16 if feature_map == "favor" else None)
    mask, bias = padding()
    q0, k0, v0 = qkv()
    positions = torch.rand(q0.shape[0], q0.shape[2]) * 40 if per_row else torch.arange(q0.shape[2], dtype=torch.float32) * 1.5
    results = []
    for recompute in (True, False):
        module.recompute = recompute
        q, k, v = (t.clone().requires_grad_(True) for t in (q0, k0, v0))
        out = module(q, k, v, key_bias=bias, key_mask=mask, positions=positions)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        results.append([out.detach(), q.grad, k.grad, v.grad])
    for recomputed, stored in zip(*results):
        torch.testing.assert_close(recomputed, stored, rtol=1e-4, atol=1e-5)
    assert results[0][1].abs().sum() > 0 and results[0][2].abs().sum() > 0
