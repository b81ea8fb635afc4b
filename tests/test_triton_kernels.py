"""Fused Triton kernels against their PyTorch paths: linear attention and the state merge (values and gradients), windowed matching, the merge plan.

On CPU the kernels run under Triton's interpreter: ``TRITON_INTERPRET=1`` must be set
before triton is imported (its own library functions are jitted then), so
``test_kernels_under_the_interpreter`` runs this file's "interpret" cases in a fresh
process with it set. With a GPU the same cases also run the compiled kernels, in float32
and bf16.
"""
from __future__ import annotations

import importlib
import os
import subprocess
import sys
import warnings
from functools import partial

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode

from maelre.layers import _triton

la = importlib.import_module("maelre.layers.linear_attention")  # the module (maelre.layers exports a function of that name)

triton = pytest.importorskip("triton", reason="the fused kernels need triton (shipped with torch's CUDA wheels)")

B, H, N, DH = 1, 2, 70, 16  # two tiles of 64 tokens, one partial


@pytest.fixture(params=["interpret", "cuda"])
def kernels(request):
    """``(module, device)``: the kernel module, interpreted on CPU or compiled on CUDA."""
    if request.param == "cuda":
        if not torch.cuda.is_available():
            pytest.skip("compiled Triton kernels need a CUDA GPU; the interpreter case covers CPU")
        yield la.fused, "cuda"
        return
    if not _triton.INTERPRET:
        pytest.skip("interpreter cases run in test_kernels_under_the_interpreter's process (TRITON_INTERPRET=1)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy evaluates both sides of tl.where (-inf - -inf)
        yield la.fused, "cpu"


@pytest.mark.slow  # a fresh interpreter process: ~7 s idle, 30 s on a loaded 2-core machine
def test_kernels_under_the_interpreter():
    if _triton.INTERPRET:
        pytest.skip("this process is the interpreter run itself")
    cmd = [sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:cacheprovider", "-k", "interpret and not under_the"]
    run = subprocess.run(cmd, env={**os.environ, "TRITON_INTERPRET": "1"}, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "32 passed" in run.stdout, run.stdout[-1000:]  # every interpreter case ran, none skipped


def inputs(device: str, dtype: torch.dtype = torch.float32, n: int = N):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, n, H, DH, generator=g).transpose(1, 2) for _ in range(3))  # strided, as the backbones pass them
    key_bias = torch.rand(B, n, generator=g).mul(2).log1p()  # log token sizes (proportional attention)
    mask = torch.arange(n) < n - 9
    k[:, :, ~mask] = float("nan")  # padded keys may hold anything (the backbones zero padded values)
    to = dict(device=device)
    return [x.to(dtype=dtype, **to).requires_grad_() for x in (q, k, v)], key_bias.to(**to), mask.expand(B, n).to(**to)


def feature_map(kind: str, device: str):
    return la.elu_feature_map if kind == "elu" else la.FavorFeatureMap(DH, num_features=24, seed=0).to(device)


def compare(module, device, kind, dtype=torch.float32, tol=2e-5, n=N):
    (q, k, v), key_bias, mask = inputs(device, dtype, n)
    fmap = feature_map(kind, device)
    weights = la.key_weights(key_bias, mask)
    out = module.fused_linear_attention(q, k, v, weights, projection=None if kind == "elu" else fmap.projection)
    ref = la.linear_attention(*(x.float() for x in (q, k, v)), key_bias=key_bias, key_mask=mask, feature_map=fmap)
    assert out.dtype == dtype and out.shape == (B, H, n, DH)
    torch.testing.assert_close(out.float(), ref, atol=tol, rtol=tol)
    grad = torch.randn_like(ref)
    fused_grads = torch.autograd.grad(out, (q, k, v), grad.to(dtype))
    ref_grads = torch.autograd.grad(ref, (q, k, v), grad)
    real = mask[0]
    for name, got, want in zip("qkv", fused_grads, ref_grads):
        if name != "q":  # padded keys: exact zeros from the kernel, NaN (0 * NaN) from autograd's reference
            assert (got[:, :, ~real] == 0).all(), f"d{name} at padded keys"
            got, want = got[:, :, real], want[:, :, real]
        torch.testing.assert_close(got.float(), want.float(), atol=tol * 10, rtol=tol * 10, msg=f"d{name}")


@pytest.mark.parametrize("kind", ["elu", "favor"])
def test_fused_matches_reference_values_and_gradients(kernels, kind):
    compare(*kernels, kind)


def test_chunked_reductions_combine_exactly(kernels, monkeypatch):
    """One program per sequence (two tiles in a chunk) and one per tile: FAVOR's per-chunk stabilizers rescale to the same result."""
    module, device = kernels
    monkeypatch.setattr(module, "TARGET_PROGRAMS", 1)
    compare(module, device, "favor")


def test_linear_attention_dispatches_to_the_kernels(kernels, monkeypatch):
    module, device = kernels
    layer = la.LinearAttention(DH, "favor", num_features=24).to(device)
    (q, k, v), key_bias, mask = inputs(device)
    calls = []
    kernel = module.fused_linear_attention
    monkeypatch.setattr(module, "fused_linear_attention", lambda *a, **kw: calls.append(1) or kernel(*a, **kw))
    out = layer(q, k, v, key_bias=key_bias, key_mask=mask)
    assert calls == [1]
    monkeypatch.setattr(_triton, "ENABLED", False)
    torch.testing.assert_close(out, layer(q, k, v, key_bias=key_bias, key_mask=mask), atol=2e-5, rtol=2e-5)
    assert calls == [1]


def test_kernels_compile_without_graph_breaks(kernels):
    """The custom ops trace whole (fullgraph) and the compiled layer gives eager's values and gradients."""
    _, device = kernels
    layer = la.LinearAttention(DH, "favor", num_features=24).to(device)
    (q, k, v), key_bias, mask = inputs(device)
    torch._dynamo.reset()
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    results = []
    for forward in (layer, compiled):
        out = forward(q, k, v, key_bias=key_bias, key_mask=mask)
        results.append((out, torch.autograd.grad(out.square().sum(), (q, k, v))))
    (eager, eager_grads), (got, got_grads) = results
    torch.testing.assert_close(got, eager)
    for a, b in zip(got_grads, eager_grads):
        torch.testing.assert_close(a[:, :, mask[0]], b[:, :, mask[0]])


@pytest.mark.slow  # ~65 s for the four on a loaded 2-core machine (ptxas included)
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("favor", [False, True])
def test_kernels_compile_for_hopper(favor, dtype, tmp_path, monkeypatch):
    """Every kernel lowers to sm_90 machine code (no GPU needed): catches what the interpreter, which runs Python, lets through."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from maelre.layers import triton_merge

    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path))  # compile for real, not from an earlier run's cache
    fused = la.fused
    ptr, f32 = f"*{dtype}", "*fp32"
    consts = dict(IS_FAVOR=favor, SCALE=0.25, INV_SQRT_F=0.1, PREC="ieee" if dtype == "fp32" else "tf32", BN=fused.BLOCK_N, DHP=32, FP=128 if favor else 32)
    kernels = [
        (fused._state_kernel, dict(k_ptr=ptr, v_ptr=ptr, w_ptr=f32, proj_ptr=f32, st_ptr=f32, m_ptr=f32)),
        (fused._output_kernel, dict(q_ptr=ptr, proj_ptr=f32, st_ptr=f32, o_ptr=ptr, eps="fp32")),
        (fused._query_grad_kernel, dict(q_ptr=ptr, g_ptr=ptr, proj_ptr=f32, st_ptr=f32, dq_ptr=ptr, dst_ptr=f32, eps="fp32")),
        (fused._key_grad_kernel, dict(k_ptr=ptr, v_ptr=ptr, w_ptr=f32, proj_ptr=f32, m_ptr=f32, dst_ptr=f32, dk_ptr=ptr, dv_ptr=ptr)),
    ]
    if not favor:
        kernels.append((triton_merge._match_window_kernel, dict(m_ptr=ptr, real_ptr="*u8", score_ptr=ptr, index_ptr="*i64")))
        plan_pointers = dict(src_ptr="*i64", best_ptr=ptr, r_ptr="*i64", dst_ptr="*i64", real_ptr="*u8", sizes_ptr=f32, slot_ptr="*i64",
                             total_ptr=f32, share_ptr=f32, log_ptr=f32)  # fmt: skip
        plan_pointers.update(flag_ptr="*i8", count_ptr="*i32", dropped_ptr=f32)  # the tiled plan's scratch
        kernels += [(triton_merge._plan_kernel, plan_pointers)] + [
            (kernel, plan_pointers) for kernel in (triton_merge._plan_flags_kernel, triton_merge._plan_count_kernel,
                                                   triton_merge._plan_rank_kernel, triton_merge._plan_sizes_kernel, triton_merge._plan_shares_kernel)
        ]  # fmt: skip
        merge_pointers = dict(x_ptr=ptr, g_ptr=ptr, share_ptr=f32, slot_ptr="*i64", out_ptr=f32, dx_ptr=ptr)
        kernels += [(triton_merge._merge_states_kernel, merge_pointers), (triton_merge._merge_states_grad_kernel, merge_pointers)]
        consts.update(BA=triton_merge.BLOCK_A, CP=16, BLOCK=triton_merge.BLOCK_SLOTS, HAS_REAL=dtype == "fp32", HAS_R=dtype == "fp32", PROTECT_FIRST=dtype == "fp32",
                      BT=triton_merge.BLOCK_TOKENS, BC=triton_merge.BLOCK_CHANNELS)  # both specializations over the two dtypes
        if dtype == "bf16":  # an int argument of 1 becomes a constant: a tiled plan of one tile (a short row, the path forced)
            consts.update(TILES=1)
    for kernel, pointers in kernels:
        own = {name: consts[name] for name in kernel.arg_names if name in consts}
        signature = {name: "constexpr" if name in own else pointers.get(name, "i32") for name in kernel.arg_names}
        compiled = triton.compile(ASTSource(fn=kernel, signature=signature, constexprs=own), target=GPUTarget("cuda", 90, 32))
        assert compiled.asm["cubin"], kernel.fn.__name__


def test_plain_cpu_keeps_the_pytorch_path():
    assert not la.fused.available(torch.zeros(1)) or _triton.INTERPRET


def test_bad_shapes_name_the_fix():
    q = torch.zeros(1, 2, 8, 4)
    with pytest.raises(ValueError, match=r"weights must be \[B, N\]=\(1, 8\)"):
        la.fused.fused_linear_attention(q, q, q, torch.ones(1, 7))
    with pytest.raises(ValueError, match="q, k, v of one shape"):
        la.fused.fused_linear_attention(q, q[:, :, :4], q[:, :, :4], torch.ones(1, 8))


@pytest.mark.parametrize("kind", ["elu", "favor"])
def test_bf16_on_gpu_accumulates_in_float32(kind):
    if not torch.cuda.is_available():
        pytest.skip("bf16 kernels are compiled for CUDA; the interpreter has no bf16 tensor cores")
    compare(la.fused, "cuda", kind, torch.bfloat16, tol=2e-2, n=4096 + 70)


# --------------------------------------------------------------------------- windowed matching
@pytest.mark.parametrize("window", [1, 2, 5, 40])  # 40: the band is cut at both ends of the 38 A tokens
def test_fused_window_matching_matches_reference(kernels, monkeypatch, window):
    """The kernel reads A and B from the interleaved columns (odd N, strided metric) and masks padded A tokens and a
    protected token 0 itself: ``merge._match_scores``' scores and matches, without their slices and masking."""
    from maelre.layers import merge, triton_merge

    module, device = kernels
    g = torch.Generator().manual_seed(window)
    metric = (torch.randn(3, 75, 12, generator=g) * torch.rand(3, 75, 1, generator=g).mul(9).add(0.1)).to(device)  # rows of any norm
    metric = metric.transpose(1, 2).contiguous().transpose(1, 2)  # strided: the kernel takes any strides
    sizes = (torch.arange(75) < torch.tensor([75, 40, 3])[:, None]).float().to(device)  # one row with a single real B token
    real = sizes > 0
    fused = {(padded, protect): triton_merge.match_window(metric, real if padded else None, window, protect) for padded in (True, False) for protect in (True, False)}
    monkeypatch.setattr(_triton, "ENABLED", False)
    for (padded, protect), (score, index) in fused.items():
        want_score, want_index = merge._match_scores(metric, real if padded else None, protect, window)
        finite = want_score > float("-inf")
        assert torch.equal(score > float("-inf"), finite) and torch.equal(index[finite], want_index[finite]), (padded, protect)
        torch.testing.assert_close(score[finite], want_score[finite], atol=1e-6, rtol=1e-6)
        assert index.dtype == torch.long and ((index >= 0) & (index < 37)).all()


@pytest.fixture(params=["one_program", "tiled"])
def plan_path(request, monkeypatch):
    """Forces the merge plan's path whatever the row length: one program per row (``_plan_kernel``) or the tiled kernels."""
    from maelre.layers import triton_merge

    monkeypatch.setattr(triton_merge, "ONE_PROGRAM_MAX_N", 1 << 62 if request.param == "one_program" else 0)
    return request.param


def plan_case(device: str, g: torch.Generator, n: int, padded: bool, protect_first: bool, r_per_row: bool, window: int | None):
    """``(plan's arguments, n_out)`` for 3 rows of ``n`` tokens (lengths n, n/2, n/3 when ``padded``) of sizes 1-4:
    ``r`` a third of each row (``r_per_row``: a ``[B]`` tensor, else the full row's count for every row)."""
    from maelre.layers import merge

    metric = torch.randn(3, n, 6, generator=g).to(device)
    lengths = torch.tensor([n, max(2, n // 2), max(2, n // 3)]) if padded else torch.full((3,), n)
    sizes = torch.randint(1, 5, (3, n), generator=g).float()  # tokens merged earlier
    sizes = (sizes * (torch.arange(n) < lengths[:, None]) if padded else sizes).to(device)
    real = sizes > 0 if padded else None
    rows = (lengths // 3 - int(protect_first)).clamp_min(0)
    r = rows.to(device) if r_per_row else max(1, int(rows.max()))
    n_out = n - (int(rows.max()) if r_per_row else r)
    src, dst, best = merge._choose(metric, real, min(n - n_out, (n + 1) // 2), protect_first, window)
    return (real, sizes, src, dst, best, r, n, n_out), n_out


def assert_plan_is_the_reference(got, args, monkeypatch, case):
    """``got`` (the kernels' plan of ``args``) against ``merge._plan``: slots and sizes exactly, shares and logs to rounding."""
    from maelre.layers import merge

    monkeypatch.setattr(_triton, "ENABLED", False)
    want = merge._plan(*args)
    monkeypatch.setattr(_triton, "ENABLED", True)
    n_out = args[-1]
    assert got[0].dtype == torch.long and torch.equal(got[0], want[0]), case
    assert torch.equal(got[1], want[1]) and got[1].shape == (3, n_out), case
    torch.testing.assert_close(got[2], want[2], rtol=1e-6, atol=0)
    assert want[3] is None
    torch.testing.assert_close(got[3], want[1].log(), rtol=1e-6, atol=1e-6)  # -inf where a padded row's column is empty


def assert_both_plans_are_the_reference(args, monkeypatch, case):
    """The one-program and the tiled plan of ``args``: each the reference's, and each other's bit for bit."""
    from maelre.layers import triton_merge

    plans = []
    for path, limit in (("one_program", 1 << 62), ("tiled", 0)):
        monkeypatch.setattr(triton_merge, "ONE_PROGRAM_MAX_N", limit)
        plans.append(triton_merge.plan(*args))
        assert_plan_is_the_reference(plans[-1], args, monkeypatch, (path, *case))
    for one, tiled in zip(*plans):
        assert torch.equal(one, tiled), case


def test_fused_plan_equals_the_reference(kernels, monkeypatch):
    """Both plan paths give merge._plan's slots and sizes exactly and its shares: padded or not, r per row or one int,
    odd N, CLS kept, rows of several tiles, sizes above 1."""
    _, device = kernels
    g = torch.Generator().manual_seed(0)
    cases = [(2, False, False, False, None), (21, False, True, False, 4), (21, True, False, True, None), (21, True, True, False, 4),
             (21, False, False, True, 4), (2500, True, True, True, 32), (2049, False, False, False, 8)]  # fmt: skip
    for case in cases:
        args, _ = plan_case(device, g, *case)
        assert_both_plans_are_the_reference(args, monkeypatch, case)


def test_plan_paths_agree_over_many_tiles(kernels, monkeypatch):
    """With 16-column tiles, rows of 301 tokens span 19 tiles (more than one tile of per-tile counts for the tiled
    plan's scan) and 100 candidates 7: both paths give the reference's plan, bit for bit the same."""
    from maelre.layers import triton_merge

    _, device = kernels
    monkeypatch.setattr(triton_merge, "BLOCK_SLOTS", 16)
    g = torch.Generator().manual_seed(5)
    for case in [(301, True, True, True, 8), (301, False, False, False, 8), (300, True, False, False, None)]:
        args, _ = plan_case(device, g, *case)
        assert_both_plans_are_the_reference(args, monkeypatch, case)


def test_long_rows_take_the_tiled_plan(monkeypatch):
    """``plan`` runs one program per row up to ``ONE_PROGRAM_MAX_N`` tokens and the tiled kernels beyond (no kernel runs here)."""
    from maelre.layers import merge, triton_merge

    assert triton_merge.one_program_plan(triton_merge.ONE_PROGRAM_MAX_N) and not triton_merge.one_program_plan(triton_merge.ONE_PROGRAM_MAX_N + 1)
    calls = []

    class _Launch:
        def __getitem__(self, grid):
            return lambda *args, **kwargs: calls.append(("one_program", grid))

    monkeypatch.setattr(triton_merge, "_plan_kernel", _Launch())
    monkeypatch.setattr(triton_merge, "_plan_tiled", lambda *args, **kwargs: calls.append(("tiled", None)))
    for n in (triton_merge.ONE_PROGRAM_MAX_N, triton_merge.ONE_PROGRAM_MAX_N + 1):
        metric, sizes = torch.randn(2, n, 4), torch.ones(2, n)
        src, dst, best = merge._choose(metric, None, n // 4, False, 8)
        triton_merge._plan(None, sizes, src, dst, best, None, n // 4, n, n - n // 4)
    assert calls == [("one_program", (2,)), ("tiled", None)]


def test_fused_plan_cuts_a_row_that_keeps_too_many_like_the_reference(kernels, monkeypatch, plan_path):
    """A padded row whose ``r`` is too small keeps more than ``n_out`` tokens: its last ones go to the cut-off column,
    with the reference's shares (the kernel keeps no such column, only its size total)."""
    from maelre.layers import merge, triton_merge

    _, device = kernels
    g = torch.Generator().manual_seed(4)
    n, n_out = 21, 16
    metric = torch.randn(3, n, 6, generator=g).to(device)
    sizes = torch.randint(1, 5, (3, n), generator=g).float() * (torch.arange(n) < torch.tensor([n, n, 10])[:, None])
    sizes, r = sizes.to(device), torch.tensor([0, 5, 2], device=device)  # row 0 keeps all 21 > n_out
    real = sizes > 0
    src, dst, best = merge._choose(metric, real, n - n_out, False, 4)
    got = triton_merge.plan(real, sizes, src, dst, best, r, n, n_out)
    monkeypatch.setattr(_triton, "ENABLED", False)
    want = merge._plan(real, sizes, src, dst, best, r, n, n_out)
    assert (want[0][0] == n_out).sum() == 5 and torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    torch.testing.assert_close(got[2], want[2], rtol=1e-6, atol=0)
    assert got[1].is_contiguous() and got[1].shape == (3, n_out)


@pytest.mark.parametrize("padded", [True, False])
def test_fused_plan_fake_kernel_promises_its_real_strides(kernels, padded, plan_path):
    """The merge plan op's outputs have the shapes, strides and dtypes of its fake kernel: under torch.compile,
    Inductor asserts the fake strides on the real outputs (a padded plan once returned a [B, n_out] slice of a [B, n_out + 1] buffer)."""
    from maelre.layers import merge, triton_merge

    _, device = kernels
    g = torch.Generator().manual_seed(3)
    n = 21
    metric = torch.randn(3, n, 6, generator=g).to(device)
    lengths = torch.tensor([n, 10, 7])
    sizes = torch.ones(3, n)
    sizes = (sizes * (torch.arange(n) < lengths[:, None]) if padded else sizes).to(device)
    real = sizes > 0 if padded else None
    r_rows, r_all = ((lengths // 3).to(device), 0) if padded else (None, 7)
    n_out = n - (int(r_rows.max()) if padded else r_all)
    src, dst, best = merge._choose(metric, real, n - n_out, False, None)
    args = (real, sizes, src, dst, best, r_rows, r_all, n, n_out)
    got = triton_merge._plan_op(*args)
    with FakeTensorMode() as mode:
        promised = triton_merge._plan_op(*[mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args])
    assert [(t.shape, t.stride(), t.dtype) for t in got] == [(t.shape, t.stride(), t.dtype) for t in promised]


# --------------------------------------------------------------------------- state merge
def state_merge_plan(device: str, padded: bool):
    """``(plan, sizes)``: a global merge of 3 rows x 45 tokens (two token tiles) where every A token best matches
    B token 3, so several tokens share its slot; padded: rows of 45, 30 and 9 real tokens, the last merging nothing."""
    from maelre.layers import merge

    g = torch.Generator().manual_seed(1)
    n = 45
    metric = torch.randn(3, n, 6, generator=g)
    direction = torch.eye(6)[0]
    metric[:, 0::2] = direction + 0.01 * metric[:, 0::2]  # A tokens: nearly one direction
    metric[:, 7] = direction  # B token 3 points exactly there
    sizes = torch.randint(1, 4, (3, n), generator=g).float()
    r: torch.Tensor | int = 12
    if padded:
        sizes = sizes * (torch.arange(n) < torch.tensor([n, 30, 9])[:, None])
        r = torch.tensor([12, 8, 0])
    sizes = sizes.to(device)
    r = r.to(device) if padded else r
    return merge.bipartite_soft_matching(metric.to(device), sizes, r, n - 12, padded=padded), sizes


def count_state_merges(monkeypatch) -> list[int]:
    """Record every call of ``triton_merge.merge_states`` (one ``1`` each)."""
    from maelre.layers import triton_merge

    calls: list[int] = []
    kernel = triton_merge.merge_states
    monkeypatch.setattr(triton_merge, "merge_states", lambda *a, **kw: calls.append(1) or kernel(*a, **kw))
    return calls


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("padded", [True, False])
def test_fused_state_merge_matches_reference_values_and_gradients(kernels, monkeypatch, padded, dtype):
    """``merge_states`` (the size-weighted merge) against ``TokenMerge.merge``'s scatter: values and gradient, 70 channels
    (two channel blocks), duplicate slots, padding holding NaN, a row that merges nothing."""
    _, device = kernels
    plan, sizes = state_merge_plan(device, padded)
    real = sizes > 0
    monkeypatch.setattr(_triton, "ENABLED", False)
    assert plan.merge(real.float(), mode="sum").max() >= 3, "some slot should receive several tokens"
    if padded:
        assert torch.equal(plan.sizes[2, :9], sizes[2, :9]), "row 2 merges nothing"
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 45, 70, generator=g).to(device=device, dtype=dtype)
    x[~real] = float("nan")  # padding may hold anything
    x.requires_grad_()
    grad = torch.randn(3, 33, 70, generator=g).to(device=device, dtype=dtype)
    calls = count_state_merges(monkeypatch)
    results = []
    for enabled in (True, False):
        monkeypatch.setattr(_triton, "ENABLED", enabled)
        out = plan.merge(x)
        results.append((out, torch.autograd.grad(out, x, grad)[0]))
    assert calls == [1], "only the enabled pass runs the kernels"
    (out, dx), (ref, ref_dx) = results
    assert out.dtype == dtype and out.shape == (3, 33, 70) and dx.dtype == dtype
    # bf16: float32 sums in another order may round to the neighbouring bf16 value (the interpreter also truncates its casts)
    tol = dict(atol=1e-6, rtol=1e-6) if dtype == torch.float32 else dict(atol=1e-2, rtol=1e-2)
    torch.testing.assert_close(out, ref, **tol)
    assert (dx[~real] == 0).all(), "padding gets no gradient"
    torch.testing.assert_close(dx, ref_dx, **tol)


def test_fused_state_merge_in_float32_of_bf16_keys(kernels, monkeypatch):
    """``merge(keys, dtype=float32)`` (MAELRE's keys for a second merge site): the kernel and the scatter give the float32
    size-weighted mean of bf16 keys, which points where the size-weighted sum (what MAELRE merged before) points."""
    _, device = kernels
    plan, sizes = state_merge_plan(device, padded=False)
    keys = torch.randn(3, 45, 6, generator=torch.Generator().manual_seed(5)).to(device=device, dtype=torch.bfloat16)
    calls = count_state_merges(monkeypatch)
    got = plan.merge(keys, dtype=torch.float32)
    with torch.no_grad():  # nothing to differentiate: the kernels run without the autograd.Function, same values
        no_grad = plan.merge(keys.float().requires_grad_(), dtype=torch.float32)
    assert got.grad_fn is None and no_grad.grad_fn is None
    monkeypatch.setattr(_triton, "ENABLED", False)
    want = plan.merge(keys, dtype=torch.float32)
    assert calls == [1, 1] and got.dtype == want.dtype == torch.float32
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(no_grad, want, atol=1e-6, rtol=1e-6)
    summed = plan.merge(keys * sizes[..., None], mode="sum")
    torch.testing.assert_close(torch.nn.functional.normalize(got, dim=-1), torch.nn.functional.normalize(summed, dim=-1), atol=1e-6, rtol=1e-6)


def test_fused_state_merge_takes_any_trailing_shape(kernels, monkeypatch):
    """Positions ``[B, N]`` (one channel) and ``[B, N, 2, 3]`` states: the kernel sees them as ``[B, N, C]``."""
    _, device = kernels
    plan, _ = state_merge_plan(device, padded=True)
    calls = count_state_merges(monkeypatch)
    for shape in [(3, 45), (3, 45, 2, 3)]:
        x = torch.randn(shape).to(device)
        got = plan.merge(x)
        monkeypatch.setattr(_triton, "ENABLED", False)
        torch.testing.assert_close(got, plan.merge(x), atol=1e-6, rtol=1e-6)
        monkeypatch.setattr(_triton, "ENABLED", True)
    assert calls == [1, 1]


def test_deterministic_mode_keeps_the_pytorch_state_merge(kernels, monkeypatch):
    """The kernel's atomic adds land in no fixed order: under ``torch.use_deterministic_algorithms`` the merge scatters."""
    _, device = kernels
    plan, _ = state_merge_plan(device, padded=False)
    calls = count_state_merges(monkeypatch)
    x = torch.randn(3, 45, 8).to(device)
    fused = plan.merge(x)
    monkeypatch.setattr(torch, "are_deterministic_algorithms_enabled", lambda: True)
    torch.testing.assert_close(plan.merge(x), fused, atol=1e-6, rtol=1e-6)
    assert calls == [1]


class _CustomOpCalls(TorchDispatchMode):
    """Names of the ``maelre::`` custom ops that reach the dispatcher."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "maelre":
            self.names.append(func.__name__)
        return func(*args, **(kwargs or {}))


def test_eager_merge_skips_the_custom_ops_with_their_results(kernels):
    """Eager matching, plan and state merge call the kernels' functions directly (a custom op's dispatch is host time
    on a host-bound step); the custom ops, which torch.compile sees, give the same values and gradient."""
    from maelre.layers import triton_merge as tm

    _, device = kernels
    g = torch.Generator().manual_seed(3)
    metric, x = torch.randn(2, 45, 6, generator=g).to(device), torch.randn(2, 45, 5, generator=g).to(device).requires_grad_()
    sizes = (torch.arange(45) < torch.tensor([45, 30])[:, None]).float().to(device)
    real, grad = sizes > 0, torch.randn(2, 33, 5, generator=g).to(device)
    with _CustomOpCalls() as calls:
        score, dst = tm.match_window(metric, real, 8)
        best, src = score.topk(12, dim=1)
        plan = tm.plan(real, sizes, src, dst, best, 12, 45, 33)
        out = tm.merge_states(x, plan[2], plan[0], 33)
        dx = torch.autograd.grad(out, x, grad)[0]
    assert calls.names == []
    assert_equal = partial(torch.testing.assert_close, atol=0, rtol=0)
    for got, want in zip((score, dst), tm._match_window_op(metric, real, 8, False)):
        assert_equal(got, want)
    for got, want in zip(plan, tm._plan_op(real, sizes, src, dst, best, None, 12, 45, 33)):
        assert_equal(got, want)
    x_op = x.detach().requires_grad_()
    out_op = tm._merge_states_op(x_op, plan[2], plan[0], 33, x.dtype)
    torch.testing.assert_close(out, out_op, atol=1e-6, rtol=1e-6)  # atomic adds in any order
    assert_equal(dx, torch.autograd.grad(out_op, x_op, grad)[0])


def test_eager_linear_attention_skips_the_custom_ops_with_their_results(kernels):
    """Eager fused linear attention runs its kernels through an autograd.Function, not the custom ops torch.compile sees:
    the same values and gradients."""
    module, device = kernels
    (q, k, v), key_bias, mask = inputs(device)
    weights = la.key_weights(key_bias, mask).float().contiguous()
    grad = torch.randn(q.shape, generator=torch.Generator().manual_seed(4)).to(device)
    with _CustomOpCalls() as calls:
        out = module.fused_linear_attention(q, k, v, weights)
        grads = torch.autograd.grad(out, (q, k, v), grad)
    assert calls.names == []
    out_op = module._forward_op(q, k, v, weights, None, 1e-6)[0]
    torch.testing.assert_close(out, out_op, atol=0, rtol=0)
    for got, want in zip(grads, torch.autograd.grad(out_op, (q, k, v), grad)):
        torch.testing.assert_close(got, want, atol=0, rtol=0)


@pytest.mark.parametrize("kind", ["elu", "favor"])
def test_fused_outputs_come_in_the_projections_layout(kernels, kind):
    """out, dq, dk and dv are ``[B, H, N, dh]`` laid out as ``[B, N, H, dh]`` (so ``Attention.output`` merges the heads and
    ``split_heads``' backward takes the gradients without a copy), eager and through the custom ops alike; the fake kernels
    promise those strides; elu+1's key stabilizer is 0 (FAVOR+'s is finite)."""
    from maelre.layers.attention import Attention

    module, device = kernels
    (q, k, v), key_bias, mask = inputs(device)
    weights = la.key_weights(key_bias, mask).float().contiguous()
    projection = None if kind == "elu" else feature_map(kind, device).projection
    heads_last = (N * H * DH, DH, H * DH, 1)
    out = module.fused_linear_attention(q, k, v, weights, projection=projection)
    grads = torch.autograd.grad(out, (q, k, v), torch.ones_like(out))
    assert [t.stride() for t in (out, *grads)] == [heads_last] * 4
    merged = Attention(H * DH, H).to(device).output  # the heads merge into [B, N, D] as a view of out
    assert out.transpose(1, 2).reshape(B, N, H * DH).data_ptr() == out.data_ptr() and merged(out).shape == (B, N, H * DH)
    args = (q.detach(), k.detach(), v.detach(), weights, projection, 1e-6)
    real = module._forward_op(*args)
    with FakeTensorMode() as mode:
        fake = module._forward_op(*[mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args])
    assert [(t.shape, t.stride(), t.dtype) for t in real] == [(t.shape, t.stride(), t.dtype) for t in fake]
    back_args = (*args[:5], *real[1:], torch.ones_like(out), 1e-6)
    real_grads = module._backward_op(*back_args)
    with FakeTensorMode() as mode:
        fake_grads = module._backward_op(*[mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in back_args])
    assert [t.stride() for t in real_grads] == [t.stride() for t in fake_grads] == [heads_last] * 3
    m = real[-1]
    assert (m == 0).all() if kind == "elu" else m.isfinite().all()


def test_unweighted_keys_take_cached_ones(kernels, monkeypatch):
    """Without key bias or mask the kernels get the shape-cached ones as key weights (no fill per call): the PyTorch
    path's values and gradients, and the cached weights stay ones."""
    from maelre.layers import shape_cache

    module, device = kernels
    layer = la.LinearAttention(DH)
    (q, k, v), _, _ = inputs(device)
    k = k.detach().nan_to_num().requires_grad_()  # no padding here: every key is real
    results = []
    for enabled in (True, False):
        monkeypatch.setattr(_triton, "ENABLED", enabled)
        out = layer(q, k, v)
        results.append((out, torch.autograd.grad(out.square().sum(), (q, k, v))))
    (got, got_grads), (want, want_grads) = results
    torch.testing.assert_close(got, want, atol=2e-5, rtol=2e-5)
    for a, b in zip(got_grads, want_grads):
        torch.testing.assert_close(a, b, atol=2e-4, rtol=2e-4)
    cached = shape_cache.ones(B, N, q.device)
    assert cached is shape_cache.ones(B, N, q.device) and (cached == 1).all()


def test_log_sizes_come_with_the_kernel_plan_only(kernels, monkeypatch):
    """``return_log_sizes``: the plan kernel's ``log(sizes)`` (``-inf`` at empty padded columns); ``None`` on the PyTorch path."""
    from maelre.layers import merge

    _, device = kernels
    metric, sizes = torch.randn(2, 20, 4).to(device), (torch.arange(20) < torch.tensor([20, 7])[:, None]).float().to(device)
    plan, log_sizes = merge.bipartite_soft_matching(metric, sizes, torch.tensor([6, 2], device=device), 14, return_log_sizes=True)
    torch.testing.assert_close(log_sizes, plan.sizes.log(), atol=1e-6, rtol=1e-6)  # tl.log may round differently
    assert log_sizes[1, -1] == float("-inf")
    monkeypatch.setattr(_triton, "ENABLED", False)
    assert merge.bipartite_soft_matching(metric, sizes, torch.tensor([6, 2], device=device), 14, return_log_sizes=True)[1] is None


@pytest.mark.parametrize("padded", [True, False])
def test_maelre_through_the_kernels_matches_the_pytorch_path_and_compiles_whole(kernels, monkeypatch, padded):
    """The dispatch hooks end to end: a MAELRE batch (FAVOR+, windowed merging, proportional attention), padded
    or not, forward and backward, eager and compiled with ``fullgraph=True`` (both kernels are custom ops: no graph break)."""
    from maelre import create_backbone

    _, device = kernels
    model = create_backbone("maelre", dim=32, depth=2, heads=2, feature_map="favor", switch_threshold=8, merge_schedule="fraction", merge_fraction=0.3).to(device)
    tokens = torch.randn(2, 64, 32, device=device)
    mask = torch.arange(64, device=device) < torch.tensor([64, 41], device=device)[:, None] if padded else None
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    results = []
    for forward, enabled in ((model, False), (model, True), (compiled, True)):
        monkeypatch.setattr(_triton, "ENABLED", enabled)
        model.zero_grad()
        pooled = forward(tokens, mask)
        pooled.square().sum().backward()
        results.append((pooled.detach(), [p.grad.clone() for p in model.parameters()]))
    assert [b.attention for b in model(tokens, mask, return_trace=True).trace] == ["linear", "linear"]
    ref, ref_grads = results[0]
    for pooled, grads in results[1:]:
        torch.testing.assert_close(pooled, ref, atol=1e-5, rtol=1e-5)
        for got, want in zip(grads, ref_grads):
            torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
