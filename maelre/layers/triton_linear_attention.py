"""Fused Triton kernels for non-causal linear attention (forward and backward).

Same math and calling convention as ``maelre.layers.linear_attention`` (the PyTorch path
is the reference and the CPU path): ``out_i = sum_j w_j phi(q_i).phi(k_j) v_j /
(sum_j w_j phi(q_i).phi(k_j) + eps)`` with ``w_j = exp(key_bias_j)``, 0 at padded keys.
The feature map (``elu(x) + 1`` or FAVOR+) is computed inside the kernels, so the
``[N, F]`` features never reach memory; q, k, v load in their own dtype (bf16 under
autocast) and every product and sum accumulates in float32.

Four kernels, each over ``(batch * heads, blocks of tokens)``:

* ``_state_kernel``: per chunk of keys, ``S = sum_j w_j phi(k_j) v_j^T [F, dh]`` and
  ``z = sum_j w_j phi(k_j) [F]``; chunks are summed in PyTorch (deterministic, no atomics).
  FAVOR's key stabilizer (the max logit over the real keys of a sequence) is kept per
  chunk with online rescaling, as FlashAttention keeps its softmax max, and the chunks
  are rescaled to the sequence max when summed: the result equals the reference's.
* ``_output_kernel``: ``out = phi(q) S / (phi(q).z + eps)``.
* ``_query_grad_kernel``: ``dq`` and, per chunk of queries, ``dS = phi(Q)^T dout/den``
  and ``dz``.
* ``_key_grad_kernel``: ``dk`` and ``dv`` from ``dS`` and ``dz``.

A chunk's ``S`` and ``z`` (and ``dS``, ``dz``) share one row of ``FP * DHP + FP`` floats, so
one sum over the chunks reduces both, in forward and in backward. ``out``, ``dq``, ``dk`` and ``dv`` are written as ``[B, N, H, dh]`` in memory (returned as its
``[B, H, N, dh]`` transpose): the layout the output projection reads and the q/k/v
projections' gradients take, so neither direction copies the heads into place.

Forward and backward are ``torch.library`` custom ops (``maelre::fused_linear_attention``
and its backward), so ``torch.compile`` keeps them in its graph and CUDA graphs capture
them. Backward recomputes the features from q and k (nothing but ``S``, ``z`` and the key
stabilizer is saved). The stabilizers are constants in backward, which is exact: each
scales the numerator and the normalizer alike. ``key_bias`` gets no gradient, as in
``LinearAttention(recompute=True)``.

When they run: ``maelre.layers._triton.available`` (CUDA, or CPU under
``TRITON_INTERPRET=1``; on by default, ``MAELRE_TRITON=0`` turns them off).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

import maelre.layers.shape_cache as shape_cache
from maelre.layers._triton import available, tl, triton

__all__ = ["available", "fused_linear_attention"]

BLOCK_N = 64  # tokens per tile; tl.dot needs at least 16
TARGET_PROGRAMS = 512  # split the key/query reductions until about this many programs run

if triton is not None:

    @triton.jit
    def _features(x, proj, real_f, IS_FAVOR: tl.constexpr, SCALE: tl.constexpr, PREC: tl.constexpr):
        """``x [BN, DHP]`` float32 -> FAVOR logits ``[BN, FP]`` or elu+1 features (0 at padded features)."""
        # if/else with one return: a constexpr branch is compiled alone only without early returns
        if IS_FAVOR:
            xs = x * SCALE
            logits = tl.dot(xs, tl.trans(proj), input_precision=PREC) - 0.5 * tl.sum(xs * xs, 1)[:, None]
            out = tl.where(real_f[None, :], logits, float("-inf"))
        else:
            out = tl.where(real_f[None, :], tl.where(x > 0, x + 1.0, tl.exp(x)), 0.0)
        return out

    @triton.jit
    def _features_backward(x, proj, phi, grad_phi, IS_FAVOR: tl.constexpr, SCALE: tl.constexpr, PREC: tl.constexpr):
        """``d phi / d x`` applied to ``grad_phi [BN, FP]`` -> ``grad_x [BN, DHP]`` (stabilizers held constant)."""
        if IS_FAVOR:
            grad_logits = grad_phi * phi
            xs = x * SCALE
            grad_x = (tl.dot(grad_logits, proj, input_precision=PREC) - tl.sum(grad_logits, 1)[:, None] * xs) * SCALE
        else:
            grad_x = grad_phi * tl.where(x > 0, 1.0, phi)
        return grad_x

    @triton.jit
    def _load_projection(proj_ptr, feats, cols, real_f, real_d, DH, IS_FAVOR: tl.constexpr, FP: tl.constexpr, DHP: tl.constexpr):
        """FAVOR's ``[F, dh]`` projection as ``[FP, DHP]`` float32, zero-padded; zeros for elu (nothing is read)."""
        if IS_FAVOR:
            proj = tl.load(proj_ptr + feats[:, None] * DH + cols[None, :], mask=real_f[:, None] & real_d[None, :], other=0.0)
        else:
            proj = tl.zeros((FP, DHP), tl.float32)
        return proj

    @triton.jit
    def _program_setup(bh, proj_ptr, H, DH, F, IS_FAVOR: tl.constexpr, FP: tl.constexpr, DHP: tl.constexpr):
        """Batch and head of program row ``bh``, the feature/column ranges with their masks, and the projection."""
        cols, feats = tl.arange(0, DHP), tl.arange(0, FP)
        real_d, real_f = cols < DH, feats < F
        return bh // H, bh % H, cols, feats, real_d, real_f, _load_projection(proj_ptr, feats, cols, real_f, real_d, DH, IS_FAVOR, FP, DHP)

    @triton.jit
    def _load_state(st_ptr, idx, feats, cols, FP: tl.constexpr, DHP: tl.constexpr):
        """``S [FP, DHP]`` and ``z [FP]`` of state row ``idx``: one row of ``FP * DHP + FP`` floats holds both (``_Setup.buffer``)."""
        base = st_ptr + idx * (FP * DHP + FP)
        return tl.load(base + feats[:, None] * DHP + cols[None, :]), tl.load(base + FP * DHP + feats)

    @triton.jit
    def _store_state(st_ptr, idx, s, z, feats, cols, FP: tl.constexpr, DHP: tl.constexpr):
        base = st_ptr + idx * (FP * DHP + FP)
        tl.store(base + feats[:, None] * DHP + cols[None, :], s)
        tl.store(base + FP * DHP + feats, z)

    @triton.jit
    def _load_rows(ptr, base, stride_n, stride_d, rows, cols, real_n, real_d):
        return tl.load(ptr + base + rows[:, None] * stride_n + cols[None, :] * stride_d, mask=real_n[:, None] & real_d[None, :], other=0.0).to(tl.float32)

    @triton.jit
    def _heads_last(b, h, rows, cols, N, H, DH):
        """Offsets of ``[B, H, N, dh]`` element ``(b, h, rows, cols)`` laid out as ``[B, N, H, dh]`` (``_heads_last_empty``)."""
        return b * N * H * DH + rows[:, None] * (H * DH) + h * DH + cols[None, :]

    @triton.jit
    def _state_kernel(
        k_ptr, v_ptr, w_ptr, proj_ptr, st_ptr, m_ptr,
        H, N, DH, F, tiles_per_chunk, num_chunks,
        skb, skh, skn, skd, svb, svh, svn, svd,
        IS_FAVOR: tl.constexpr, SCALE: tl.constexpr, INV_SQRT_F: tl.constexpr, PREC: tl.constexpr,
        BN: tl.constexpr, DHP: tl.constexpr, FP: tl.constexpr,
    ):  # fmt: skip
        bh, chunk = tl.program_id(0), tl.program_id(1)
        b, h, cols, feats, real_d, real_f, proj = _program_setup(bh, proj_ptr, H, DH, F, IS_FAVOR, FP, DHP)
        acc_s = tl.zeros((FP, DHP), tl.float32)
        acc_z = tl.zeros((FP,), tl.float32)
        m = tl.max(tl.full((BN,), float("-inf"), tl.float32), 0)
        t = 0
        while t < tiles_per_chunk:  # not range(): the interpreter (numpy 2) cannot take a runtime bound there
            rows = (chunk * tiles_per_chunk + t) * BN + tl.arange(0, BN)
            t += 1
            w = tl.load(w_ptr + b * N + rows, mask=rows < N, other=0.0)
            real_n = w > 0  # padded keys have weight exactly 0 and may hold anything, even NaN
            k = _load_rows(k_ptr, b * skb + h * skh, skn, skd, rows, cols, real_n, real_d)
            v = _load_rows(v_ptr, b * svb + h * svh, svn, svd, rows, cols, real_n, real_d)
            phi = _features(k, proj, real_f, IS_FAVOR, SCALE, PREC)
            if IS_FAVOR:
                m_new = tl.maximum(m, tl.max(tl.max(tl.where(real_n[:, None], phi, float("-inf")), 1), 0))
                alpha = tl.where(m_new == float("-inf"), 1.0, tl.exp(m - m_new))
                acc_s = acc_s * alpha
                acc_z = acc_z * alpha
                phi = tl.exp(phi - m_new) * INV_SQRT_F
                m = m_new
            phi = tl.where(real_n[:, None] & real_f[None, :], phi * w[:, None], 0.0)
            acc_s += tl.dot(tl.trans(phi), v, input_precision=PREC)
            acc_z += tl.sum(phi, 0)
        _store_state(st_ptr, bh * num_chunks + chunk, acc_s, acc_z, feats, cols, FP, DHP)
        if IS_FAVOR:  # one stabilizer per chunk, combined by _state
            tl.store(m_ptr + bh * num_chunks + chunk, m)
        else:  # elu+1 has none: m [BH] holds 0 (every chunk writes the same value)
            tl.store(m_ptr + bh, 0.0)

    @triton.jit
    def _query_features(q_ptr, base, sqn, sqd, rows, cols, real_n, real_d, real_f, proj, IS_FAVOR, SCALE, INV_SQRT_F, PREC):
        q = _load_rows(q_ptr, base, sqn, sqd, rows, cols, real_n, real_d)
        phi = _features(q, proj, real_f, IS_FAVOR, SCALE, PREC)
        if IS_FAVOR:
            phi = tl.where(real_f[None, :], tl.exp(phi - tl.max(phi, 1)[:, None]) * INV_SQRT_F, 0.0)
        return q, phi

    @triton.jit
    def _output_kernel(
        q_ptr, proj_ptr, st_ptr, o_ptr,
        H, N, DH, F, eps,
        sqb, sqh, sqn, sqd,
        IS_FAVOR: tl.constexpr, SCALE: tl.constexpr, INV_SQRT_F: tl.constexpr, PREC: tl.constexpr,
        BN: tl.constexpr, DHP: tl.constexpr, FP: tl.constexpr,
    ):  # fmt: skip
        bh, tile = tl.program_id(0), tl.program_id(1)
        b, h, cols, feats, real_d, real_f, proj = _program_setup(bh, proj_ptr, H, DH, F, IS_FAVOR, FP, DHP)
        rows = tile * BN + tl.arange(0, BN)
        real_n = rows < N
        s, z = _load_state(st_ptr, bh, feats, cols, FP, DHP)
        _, phi = _query_features(q_ptr, b * sqb + h * sqh, sqn, sqd, rows, cols, real_n, real_d, real_f, proj, IS_FAVOR, SCALE, INV_SQRT_F, PREC)
        out = tl.dot(phi, s, input_precision=PREC) / (tl.sum(phi * z[None, :], 1) + eps)[:, None]
        offs = _heads_last(b, h, rows, cols, N, H, DH)
        tl.store(o_ptr + offs, out.to(o_ptr.dtype.element_ty), mask=real_n[:, None] & real_d[None, :])

    @triton.jit
    def _query_grad_kernel(
        q_ptr, g_ptr, proj_ptr, st_ptr, dq_ptr, dst_ptr,
        H, N, DH, F, eps, tiles_per_chunk, num_chunks,
        sqb, sqh, sqn, sqd, sgb, sgh, sgn, sgd,
        IS_FAVOR: tl.constexpr, SCALE: tl.constexpr, INV_SQRT_F: tl.constexpr, PREC: tl.constexpr,
        BN: tl.constexpr, DHP: tl.constexpr, FP: tl.constexpr,
    ):  # fmt: skip
        bh, chunk = tl.program_id(0), tl.program_id(1)
        b, h, cols, feats, real_d, real_f, proj = _program_setup(bh, proj_ptr, H, DH, F, IS_FAVOR, FP, DHP)
        s, z = _load_state(st_ptr, bh, feats, cols, FP, DHP)
        acc_ds = tl.zeros((FP, DHP), tl.float32)
        acc_dz = tl.zeros((FP,), tl.float32)
        t = 0
        while t < tiles_per_chunk:  # not range(): the interpreter (numpy 2) cannot take a runtime bound there
            rows = (chunk * tiles_per_chunk + t) * BN + tl.arange(0, BN)
            t += 1
            real_n = rows < N
            q, phi = _query_features(q_ptr, b * sqb + h * sqh, sqn, sqd, rows, cols, real_n, real_d, real_f, proj, IS_FAVOR, SCALE, INV_SQRT_F, PREC)
            g = _load_rows(g_ptr, b * sgb + h * sgh, sgn, sgd, rows, cols, real_n, real_d)
            den = tl.sum(phi * z[None, :], 1) + eps
            out = tl.dot(phi, s, input_precision=PREC) / den[:, None]
            g_num = g / den[:, None]  # d out / d num
            g_den = -tl.sum(g * out, 1) / den  # d out / d den
            grad_phi = tl.dot(g_num, tl.trans(s), input_precision=PREC) + g_den[:, None] * z[None, :]
            dq = _features_backward(q, proj, phi, grad_phi, IS_FAVOR, SCALE, PREC)
            offs = _heads_last(b, h, rows, cols, N, H, DH)
            tl.store(dq_ptr + offs, dq.to(dq_ptr.dtype.element_ty), mask=real_n[:, None] & real_d[None, :])
            acc_ds += tl.dot(tl.trans(phi), g_num, input_precision=PREC)
            acc_dz += tl.sum(phi * g_den[:, None], 0)
        _store_state(dst_ptr, bh * num_chunks + chunk, acc_ds, acc_dz, feats, cols, FP, DHP)

    @triton.jit
    def _key_grad_kernel(
        k_ptr, v_ptr, w_ptr, proj_ptr, m_ptr, dst_ptr, dk_ptr, dv_ptr,
        H, N, DH, F,
        skb, skh, skn, skd, svb, svh, svn, svd,
        IS_FAVOR: tl.constexpr, SCALE: tl.constexpr, INV_SQRT_F: tl.constexpr, PREC: tl.constexpr,
        BN: tl.constexpr, DHP: tl.constexpr, FP: tl.constexpr,
    ):  # fmt: skip
        bh, tile = tl.program_id(0), tl.program_id(1)
        b, h, cols, feats, real_d, real_f, proj = _program_setup(bh, proj_ptr, H, DH, F, IS_FAVOR, FP, DHP)
        rows = tile * BN + tl.arange(0, BN)
        w = tl.load(w_ptr + b * N + rows, mask=rows < N, other=0.0)
        real_n = w > 0
        ds, dz = _load_state(dst_ptr, bh, feats, cols, FP, DHP)
        k = _load_rows(k_ptr, b * skb + h * skh, skn, skd, rows, cols, real_n, real_d)
        v = _load_rows(v_ptr, b * svb + h * svh, svn, svd, rows, cols, real_n, real_d)
        phi = _features(k, proj, real_f, IS_FAVOR, SCALE, PREC)
        if IS_FAVOR:
            phi = tl.exp(phi - tl.load(m_ptr + bh)) * INV_SQRT_F
        real = real_n[:, None] & real_f[None, :]
        phi = tl.where(real, phi, 0.0)
        dv = tl.dot(phi * w[:, None], ds, input_precision=PREC)
        grad_phi = tl.where(real, (tl.dot(v, tl.trans(ds), input_precision=PREC) + dz[None, :]) * w[:, None], 0.0)
        dk = _features_backward(k, proj, phi, grad_phi, IS_FAVOR, SCALE, PREC)
        offs = _heads_last(b, h, rows, cols, N, H, DH)
        store = real_n[:, None] & real_d[None, :]
        pad = (rows < N)[:, None] & real_d[None, :]  # padded keys get exact zero gradients
        tl.store(dk_ptr + offs, tl.where(store, dk, 0.0).to(dk_ptr.dtype.element_ty), mask=pad)
        tl.store(dv_ptr + offs, tl.where(store, dv, 0.0).to(dv_ptr.dtype.element_ty), mask=pad)


@shape_cache.shape_cached
def _placeholder(device: torch.device) -> Tensor:
    return torch.zeros(1, dtype=torch.float32, device=device)


def _pow2(n: int) -> int:
    return max(16, triton.next_power_of_2(n))


def _chunks(bh: int, n: int) -> tuple[int, int]:
    """``(tiles_per_chunk, num_chunks)``: split N so that about ``TARGET_PROGRAMS`` programs run."""
    tiles = triton.cdiv(n, BLOCK_N)
    num_chunks = max(1, min(tiles, TARGET_PROGRAMS // max(bh, 1)))
    per = triton.cdiv(tiles, num_chunks)
    return per, triton.cdiv(tiles, per)


class _Setup:
    """Shapes, padded sizes and the FAVOR projection shared by the forward and backward launches."""

    def __init__(self, q: Tensor, projection: Tensor | None, eps: float) -> None:
        b, h, n, dh = q.shape
        self.b, self.h, self.n, self.dh, self.eps = b, h, n, dh, eps
        self.favor = projection is not None
        self.f = projection.shape[0] if self.favor else dh
        self.dhp, self.fp = _pow2(dh), _pow2(self.f)
        # A placeholder pointer for elu (never read: the feature branch is compiled out), built once per device.
        self.proj = projection.float().contiguous() if self.favor else _placeholder(q.device)
        self.consts = dict(
            IS_FAVOR=self.favor,
            SCALE=dh**-0.25,
            INV_SQRT_F=1.0 / math.sqrt(self.f),
            PREC="ieee" if q.dtype == torch.float32 else "tf32",
            BN=BLOCK_N,
            DHP=self.dhp,
            FP=self.fp,
        )

    @property
    def state_size(self) -> int:
        """Floats in one state row: ``S [FP, DHP]`` then ``z [FP]``, so that one sum over the chunks reduces both."""
        return self.fp * self.dhp + self.fp

    def buffer(self, chunks: int) -> Tensor:
        """Per-chunk states ``[BH, chunks, FP * DHP + FP]`` (``S`` and ``z`` of a chunk in one row)."""
        return torch.empty(self.b * self.h, chunks, self.state_size, device=self.proj.device)

    def stabilizer(self, chunks: int) -> Tensor:
        """The key stabilizer: ``[BH, chunks]`` for FAVOR+ (one per chunk), ``[BH]`` for elu+1 (the kernel writes 0 there)."""
        bh = self.b * self.h
        return torch.empty((bh, chunks) if self.favor else (bh,), device=self.proj.device)


def _heads_last_empty(b: int, h: int, n: int, dh: int, like: Tensor) -> Tensor:
    """An uninitialized ``[B, H, N, dh]`` tensor laid out as ``[B, N, H, dh]``: the kernels write out, dq, dk and dv so.

    That is the layout the attention projections read and their gradients take: ``Attention.output``'s
    ``transpose(1, 2).reshape`` and the backward of ``split_heads``' ``view`` are then views, not copies
    (one copy per block forward and one per gradient of q, k, v in backward on a contiguous ``[B, H, N, dh]``).
    """
    return torch.empty(b, n, h, dh, device=like.device, dtype=like.dtype).transpose(1, 2)


def _state(setup: _Setup, k: Tensor, v: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    """The state ``[BH, FP * DHP + FP]`` (``S [FP, DHP]`` and ``z [FP]`` per row) and the key stabilizer ``m [BH]`` (0 for elu)."""
    bh = setup.b * setup.h
    per, chunks = _chunks(bh, setup.n)
    state, m = setup.buffer(chunks), setup.stabilizer(chunks)
    _state_kernel[(bh, chunks)](
        k, v, w, setup.proj, state, m, setup.h, setup.n, setup.dh, setup.f, per, chunks, *k.stride(), *v.stride(), **setup.consts
    )
    if not setup.favor:
        return state.sum(1), m
    top = m.amax(1, keepdim=True)
    scale = torch.where(m == float("-inf"), 0.0, torch.exp(m - top))  # chunks without a real key hold zeros
    return (state * scale[..., None]).sum(1), top.squeeze(1)


# Custom ops under torch.compile (not an autograd.Function), so that it traces through them without a
# graph break: the compiler sees opaque ops with known output shapes. Eager calls run the same two
# functions through an autograd.Function (``_FusedLinearAttention``): a custom op's eager dispatch
# costs tens of microseconds of host time per call (see ``maelre.layers.triton_merge``).
def _forward(
    q: Tensor, k: Tensor, v: Tensor, weights: Tensor, projection: Tensor | None, eps: float
) -> tuple[Tensor, Tensor, Tensor]:
    """``(out [B, H, N, dh] laid out as [B, N, H, dh], state [BH, FP * DHP + FP], m [BH])``; the last two are saved for backward."""
    setup = _Setup(q, projection, eps)
    state, m = _state(setup, k, v, weights)
    out = _heads_last_empty(setup.b, setup.h, setup.n, setup.dh, q)
    _output_kernel[(setup.b * setup.h, triton.cdiv(setup.n, BLOCK_N))](
        q, setup.proj, state, out, setup.h, setup.n, setup.dh, setup.f, eps, *q.stride(), **setup.consts
    )
    return out, state, m


_forward_op = torch.library.custom_op("maelre::fused_linear_attention", _forward, mutates_args=())


@_forward_op.register_fake
def _(q: Tensor, k: Tensor, v: Tensor, weights: Tensor, projection: Tensor | None, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    b, h, _, dh = q.shape
    fp, dhp = _pow2(dh if projection is None else projection.shape[0]), _pow2(dh)
    state = dict(dtype=torch.float32, device=q.device)
    out = _heads_last_empty(b, h, q.shape[2], dh, q)
    return out, q.new_empty(b * h, fp * dhp + fp, **state), q.new_empty(b * h, **state)


def _backward_kernels(
    q: Tensor, k: Tensor, v: Tensor, weights: Tensor, projection: Tensor | None, state: Tensor, m: Tensor, grad_out: Tensor, eps: float
) -> tuple[Tensor, Tensor, Tensor]:
    """``(dq, dk, dv)``, each ``[B, H, N, dh]`` laid out as ``[B, N, H, dh]``: the features are recomputed from q and k."""
    setup = _Setup(q, projection, eps)
    bh = setup.b * setup.h
    per, chunks = _chunks(bh, setup.n)
    grad_state = setup.buffer(chunks)  # dS and dz per chunk, one row each
    dq, dk, dv = (_heads_last_empty(setup.b, setup.h, setup.n, setup.dh, x) for x in (q, k, v))
    _query_grad_kernel[(bh, chunks)](
        q, grad_out, setup.proj, state, dq, grad_state, setup.h, setup.n, setup.dh, setup.f, setup.eps, per, chunks,
        *q.stride(), *grad_out.stride(), **setup.consts,
    )  # fmt: skip
    _key_grad_kernel[(bh, triton.cdiv(setup.n, BLOCK_N))](
        k, v, weights, setup.proj, m, grad_state.sum(1), dk, dv, setup.h, setup.n, setup.dh, setup.f,
        *k.stride(), *v.stride(), **setup.consts,
    )  # fmt: skip
    return dq, dk, dv


_backward_op = torch.library.custom_op("maelre::fused_linear_attention_backward", _backward_kernels, mutates_args=())


@_backward_op.register_fake
def _(q: Tensor, k: Tensor, v: Tensor, weights: Tensor, projection: Tensor | None, state: Tensor, m: Tensor, grad_out: Tensor, eps: float):
    return tuple(_heads_last_empty(*x.shape, x) for x in (q, k, v))


def _setup_context(ctx, inputs: tuple, output: tuple) -> None:
    q, k, v, weights, projection, eps = inputs
    _, state, m = output
    ctx.save_for_backward(q, k, v, weights, projection, state, m)
    ctx.eps = eps


def _gradients(ctx, grad_out: Tensor, backward=_backward_op) -> tuple:
    """The inputs' gradients through ``backward`` (the custom op, or eagerly its function)."""
    dq, dk, dv = backward(*ctx.saved_tensors, grad_out, ctx.eps)
    return dq, dk, dv, None, None, None  # key weights and the projection get no gradient


def _backward(ctx, grad_out: Tensor, *unused: Tensor) -> tuple:
    return _gradients(ctx, grad_out)


_forward_op.register_autograd(_backward, setup_context=_setup_context)


class _FusedLinearAttention(torch.autograd.Function):
    """The eager ``_forward_op`` with its autograd: the same kernels without the custom ops' dispatch."""

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, weights: Tensor, projection: Tensor | None, eps: float) -> Tensor:
        inputs = (q, k, v, weights, projection, eps)
        output = _forward(*inputs)
        _setup_context(ctx, inputs, output)
        return output[0]

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple:
        return _gradients(ctx, grad_out, _backward_kernels)


def fused_linear_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    weights: Tensor,
    *,
    projection: Tensor | None = None,
    eps: float = 1e-6,
) -> Tensor:
    """Fused linear attention ``[B, H, N, dh]`` (non-causal, self-attention: q, k, v share N), laid out as ``[B, N, H, dh]``.

    The output and the gradients of q, k, v come in the layout of the projections around attention
    (``_heads_last_empty``), so merging the heads back and splitting the gradients into heads copy nothing.

    Args:
        q, k, v: ``[B, H, N, dh]``, float32 or bf16/fp16 (any strides).
        weights: ``[B, N]`` float32 key weights ``exp(key_bias)``, exactly 0 at padded keys
            (``linear_attention.key_weights``).
        projection: FAVOR+'s ``[F, dh]`` random features, or ``None`` for ``elu(x) + 1``.
        eps: added to the normalizer.
    """
    if triton is None:
        raise RuntimeError("fused_linear_attention needs triton (it ships with torch's CUDA wheels); use linear_attention on this machine")
    if q.shape != k.shape or k.shape != v.shape:
        raise ValueError(f"fused linear attention needs q, k, v of one shape [B, H, N, dh], got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if weights.shape != (q.shape[0], q.shape[2]):
        raise ValueError(f"weights must be [B, N]=({q.shape[0]}, {q.shape[2]}), got {tuple(weights.shape)}")
    weights = weights.float().contiguous()
    if torch.compiler.is_compiling():
        return _forward_op(q, k, v, weights, projection, eps)[0]
    return _FusedLinearAttention.apply(q, k, v, weights, projection, eps)
