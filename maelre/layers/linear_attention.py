"""Kernelized linear attention (Katharopoulos et al. 2020; FAVOR+ of Choromanski et al. 2021).

``out_i = sum_j w_j phi(q_i).phi(k_j) v_j / (sum_j w_j phi(q_i).phi(k_j) + eps)`` with a
positive feature map ``phi`` and per-key weights ``w_j = exp(key_bias_j)`` (the token
size under proportional attention; 0 at padding). Associativity gives ``O(N F dh)`` time
and memory per head (``F`` features), never an ``N x N`` matrix. Same calling convention
as ``maelre.layers.exact_attention``. The sums run in float32 even under bf16 autocast:
they add up to N terms.
"""
from __future__ import annotations

import math
from functools import partial
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import maelre.layers.shape_cache as shape_cache
import maelre.layers.triton_linear_attention as fused
from maelre.layers.rope import rope_angles

FEATURE_MAPS = ("elu", "favor")


class FeatureMap(Protocol):
    def __call__(self, x: Tensor, *, is_query: bool, key_mask: Tensor | None = None) -> Tensor: ...


def elu_feature_map(x: Tensor, *, is_query: bool = True, key_mask: Tensor | None = None) -> Tensor:
    """``elu(x) + 1`` (Katharopoulos et al. 2020): ``[..., dh] -> [..., dh]``, positive."""
    return F.elu(x) + 1.0


def orthogonal_gaussian(num_rows: int, num_cols: int, generator: torch.Generator | None = None) -> Tensor:
    """``[num_rows, num_cols]`` Gaussian matrix with orthogonal rows in blocks of ``num_cols`` (Performer's ORF).

    Rows are rescaled by the norms of independent Gaussian rows, so each row has the
    marginal of an i.i.d. Gaussian row while blocks are exactly orthogonal.
    """
    blocks = []
    for _ in range(math.ceil(num_rows / num_cols)):
        q, _ = torch.linalg.qr(torch.randn(num_cols, num_cols, generator=generator))
        blocks.append(q.T)
    norms = torch.randn(num_rows, num_cols, generator=generator).norm(dim=1, keepdim=True)
    return torch.cat(blocks)[:num_rows] * norms


class FavorFeatureMap(nn.Module):
    """Positive orthogonal random features of the softmax kernel (FAVOR+).

    ``phi(x) = exp(W x' - |x'|^2 / 2 - c) / sqrt(F)`` with ``x' = x / dh^(1/4)``, so
    ``E[phi(q).phi(k)] = exp(q.k / sqrt(dh)) * exp(-c_q - c_k)``. The stabilizers ``c``
    cancel in the attention ratio: per query its own max logit, per key sequence the max
    over its real keys (padding must not shift it, or a padded row would differ from the
    same sequence alone).

    The projection ``W [F, dh]`` is a persistent buffer drawn from ``seed``; ``redraw``
    draws a new one (Performer redraws it during training).
    """

    def __init__(self, head_dim: int, num_features: int | None = None, seed: int = 0) -> None:
        super().__init__()
        if num_features is not None and num_features < 1:
            raise ValueError(f"num_features must be a positive int (or None for dh*log(dh)), got {num_features}")
        self.head_dim = head_dim
        self.num_features = num_features or max(head_dim, int(head_dim * math.log(head_dim)))
        self.register_buffer("projection", orthogonal_gaussian(self.num_features, head_dim, torch.Generator().manual_seed(seed)))

    @torch.no_grad()
    def redraw(self, generator: torch.Generator | None = None) -> None:
        """Draw a new projection in place (from the global RNG unless ``generator`` is given)."""
        self.projection.copy_(orthogonal_gaussian(self.num_features, self.head_dim, generator))

    def forward(self, x: Tensor, *, is_query: bool, key_mask: Tensor | None = None) -> Tensor:
        """``x [B, H, N, dh] -> [B, H, N, F]`` positive features; ``key_mask [B, N]`` marks real keys."""
        x = x * self.head_dim**-0.25
        logits = x @ self.projection.to(x.dtype).T - 0.5 * (x * x).sum(-1, keepdim=True)
        if is_query:
            stabilizer = logits.amax(dim=-1, keepdim=True)
        else:
            real = logits if key_mask is None else logits.masked_fill(~key_mask[:, None, :, None], float("-inf"))
            stabilizer = real.amax(dim=(-2, -1), keepdim=True)
        return torch.exp(logits - stabilizer.detach()) / math.sqrt(self.num_features)


def key_weights(key_bias: Tensor | None, key_mask: Tensor | None) -> Tensor | None:
    """Per-key weight ``exp(key_bias)`` ``[B, N]`` with 0 at padded keys (``None`` if all weights are 1)."""
    if key_bias is None and key_mask is None:
        return None
    weights = torch.ones(key_mask.shape, device=key_mask.device) if key_bias is None else key_bias.float().exp()
    return weights if key_mask is None else torch.where(key_mask, weights, 0.0)


def linear_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    key_bias: Tensor | None = None,
    key_mask: Tensor | None = None,
    feature_map: FeatureMap = elu_feature_map,
    eps: float = 1e-6,
    positions: Tensor | None = None,
    rope_base: float = 10000.0,
) -> Tensor:
    """Linear attention ``[B, H, N, dh]`` from ``q [B, H, Nq, dh]``, ``k, v [B, H, Nk, dh]``.

    Args:
        key_bias: ``[B, Nk]`` additive logit bias; enters as the key weight ``exp(key_bias)``.
        key_mask: ``[B, Nk]`` bool, True = real key (padded keys get weight 0).
        feature_map: ``elu_feature_map`` or a ``FavorFeatureMap``.
        eps: added to the normalizer.
        positions: ``[B, N]`` or ``[N]`` token positions (self-attention) for RoPE in feature
            space (RoFormer, Su et al. 2021, eq. 19): ``out_i = sum_j w_j (R_i phi(q_i)).(R_j
            phi(k_j)) v_j / sum_j w_j phi(q_i).phi(k_j)``. The numerator depends on relative
            positions; the normalizer stays unrotated and positive. ``None``: no RoPE.
        rope_base: RoPE frequency base.
    """
    b, h, n, dh = q.shape
    with torch.autocast(q.device.type, enabled=False):
        phi_q, phi_kw, v1 = _linear_inputs(q, k, v, key_bias, key_mask, feature_map)  # [B*H, N, F], [B*H, N, dh + 1]
        if positions is None:
            out = torch.bmm(phi_q, torch.bmm(phi_kw.transpose(1, 2), v1))  # [B*H, Nq, dh + 1]
            out = out[..., :-1] / (out[..., -1:] + eps)
        else:
            out, _, _ = _rotary_attention(phi_q, phi_kw, v1[..., :-1], *rotary_feature_angles(positions, phi_q.shape[-1], rope_base, h), eps)
    return out.view(b, h, n, dh).to(q.dtype)


def feature_angles(positions: Tensor, num_features: int, base: float = 10000.0) -> tuple[Tensor, Tensor]:
    """RoPE ``cos, sin`` ``[*positions.shape, F // 2]`` for ``F`` features: the first ``2 * (F // 2)`` rotate in pairs."""
    return rope_angles(positions, num_features - num_features % 2, base)


def rotary_feature_angles(positions: Tensor, num_features: int, base: float, heads: int) -> tuple[Tensor, Tensor]:
    """``feature_angles`` laid out for head-flattened features ``[B*H, N, F]``: ``[B*H, N, F // 2]`` from
    ``positions [B, N]`` (each row repeated per head), ``[N, F // 2]`` from ``positions [N]`` (broadcast)."""
    cos, sin = feature_angles(positions, num_features, base)
    if positions.dim() == 2:
        cos, sin = (t.repeat_interleave(heads, dim=0) for t in (cos, sin))
    return cos, sin


def rotate_features(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """RoPE on the first ``2 * cos.shape[-1]`` features of ``x [..., N, F]``, in ``x``'s dtype; an odd last feature stays."""
    rotated = 2 * cos.shape[-1]
    x1, x2 = x[..., :rotated].chunk(2, dim=-1)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos, x[..., rotated:]], dim=-1)


def _float32(x: Tensor) -> Tensor:
    """Contiguous float32 copy (a no-op for contiguous float32), so heads flatten into one bmm batch."""
    return x.to(torch.float32, memory_format=torch.contiguous_format)


def _weigh(x: Tensor, weights: Tensor | None, key_mask: Tensor | None) -> Tensor:
    """Per-key ``weights [B, Nk]`` times ``x [B, H, Nk, F]``, exactly 0 at padded keys."""
    if weights is None:
        return x
    w = weights.view(weights.shape[0], 1, weights.shape[1], 1)
    return x * w if key_mask is None else torch.where(w > 0, x * w, 0.0)  # a padded key may hold anything, even NaN


def _linear_inputs(
    q: Tensor, k: Tensor, v: Tensor, key_bias: Tensor | None, key_mask: Tensor | None, feature_map: FeatureMap
) -> tuple[Tensor, Tensor, Tensor]:
    """float32 ``phi(q)``, weighted ``w * phi(k)`` and ``[v, 1]``, heads flattened: ``[B*H, N, *]``.

    The ones column on V makes the normalizer ``sum_j w_j phi(q).phi(k_j)`` come out of
    the same two products as the numerator.
    """
    phi_q = feature_map(_float32(q), is_query=True, key_mask=key_mask)
    phi_k = _weigh(feature_map(_float32(k), is_query=False, key_mask=key_mask), key_weights(key_bias, key_mask), key_mask)
    v1 = F.pad(_float32(v), (0, 1), value=1.0)
    return phi_q.flatten(0, 1), phi_k.flatten(0, 1), v1.flatten(0, 1)


def _rotary_attention(phi_q: Tensor, phi_kw: Tensor, v: Tensor, cos: Tensor, sin: Tensor, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """RoPE in feature space on head-flattened float32 inputs ``[B*H, N, *]``: ``(out, kv [B*H, F, dh], k_sum [B*H, F, 1])``.

    ``out = R phi(Q) (R w phi(K))^T V / (phi(Q) sum_j w_j phi(k_j) + eps)``: the rotated
    numerator, the unrotated (positive) normalizer.
    """
    kv = torch.bmm(rotate_features(phi_kw, cos, sin).transpose(1, 2), v)
    k_sum = phi_kw.sum(dim=1, keepdim=True).transpose(1, 2)
    return torch.bmm(rotate_features(phi_q, cos, sin), kv) / (torch.bmm(phi_q, k_sum) + eps), kv, k_sum


def _recompute_features(q: Tensor, k: Tensor, key_bias: Tensor | None, key_mask: Tensor | None, feature_map: FeatureMap):
    """Backward's features, recomputed from ``q, k [B, H, N, dh]``.

    Returns the detached float32 ``phi(q)`` and weighted ``w * phi(k)``, heads flattened to
    ``[B*H, N, F]`` (as ``_linear_inputs`` builds them), and ``backprop(grad_phi_q,
    grad_phi_kw)``, which takes their gradients (``[B*H, N, F]``) back to ``q`` and ``k``.
    """
    weights = key_weights(key_bias, key_mask)
    with torch.enable_grad():
        qf, kf = _float32(q.detach()).requires_grad_(), _float32(k.detach()).requires_grad_()
        phi_q4, phi_k4 = feature_map(qf, is_query=True, key_mask=key_mask), feature_map(kf, is_query=False, key_mask=key_mask)

    def backprop(grad_phi_q: Tensor, grad_phi_kw: Tensor) -> tuple[Tensor, Tensor]:
        grad_phi_k = _weigh(grad_phi_kw.view(phi_k4.shape), weights, key_mask)
        grad_q, grad_k = torch.autograd.grad((phi_q4, phi_k4), (qf, kf), (grad_phi_q.view(phi_q4.shape), grad_phi_k))
        return grad_q.to(q.dtype), grad_k.to(k.dtype)

    phi_kw = _weigh(phi_k4.detach(), weights, key_mask)
    return phi_q4.detach().flatten(0, 1), phi_kw.flatten(0, 1), backprop


class _RecomputedLinearAttention(torch.autograd.Function):
    """``linear_attention`` that keeps only q, k, v and the ``[F, dh + 1]`` state for backward.

    Like FlashAttention for exact attention: the float32 features are several times the
    size of q, k, v and cheap to recompute. Backward applies the closed-form gradient of
    ``out = num / den`` with ``[num, den] = phi(Q) (w phi(K))^T [V, 1]``; only the feature
    map is differentiated by autograd. ``key_bias`` gets no gradient.
    """

    @staticmethod
    def forward(ctx, q, k, v, key_bias, key_mask, feature_map, eps):
        b, h, n, dh = q.shape
        with torch.autocast(q.device.type, enabled=False):
            phi_q, phi_kw, v1 = _linear_inputs(q, k, v, key_bias, key_mask, feature_map)
            kv = torch.bmm(phi_kw.transpose(1, 2), v1)
            out = torch.bmm(phi_q, kv)
            out = out[..., :-1] / (out[..., -1:] + eps)
        ctx.save_for_backward(q, k, v, key_bias, key_mask, kv)
        ctx.feature_map, ctx.eps = feature_map, eps
        return out.view(b, h, n, dh).to(q.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, key_bias, key_mask, kv = ctx.saved_tensors
        b, h, n, dh = q.shape
        with torch.autocast(q.device.type, enabled=False):
            phi_q, phi_kw, backprop = _recompute_features(q, k, key_bias, key_mask, ctx.feature_map)
            summed = torch.bmm(phi_q, kv)  # [num, den - eps]
            den = summed[..., -1:] + ctx.eps
            grad = grad_out.float().reshape(b * h, n, dh)
            grad_summed = torch.cat([grad / den, -(grad * summed[..., :-1]).sum(-1, keepdim=True) / den**2], dim=-1)
            grad_kv = torch.bmm(phi_q.transpose(1, 2), grad_summed)
            grad_v = torch.bmm(phi_kw, grad_kv)[..., :-1]
            v1 = F.pad(_float32(v), (0, 1), value=1.0).flatten(0, 1)
            grad_q, grad_k = backprop(torch.bmm(grad_summed, kv.transpose(1, 2)), torch.bmm(v1, grad_kv.transpose(1, 2)))
        return grad_q, grad_k, grad_v.view(b, h, n, dh).to(v.dtype), None, None, None, None


class _RecomputedRotaryLinearAttention(torch.autograd.Function):
    """``linear_attention`` with RoPE in feature space, keeping only q, k, v and two small states for backward.

    ``num = R phi(Q) (R w phi(K))^T V`` and ``den = phi(Q) (sum_j w_j phi(k_j))``, with ``R``
    the per-position rotation (``cos, sin`` ``[B*H or 1, N, F // 2]``). Backward recomputes the
    features; the rotation is orthogonal, so its adjoint is the rotation by ``-sin``.
    ``key_bias`` gets no gradient.
    """

    @staticmethod
    def forward(ctx, q, k, v, key_bias, key_mask, feature_map, eps, cos, sin):
        b, h, n, dh = q.shape
        with torch.autocast(q.device.type, enabled=False):
            phi_q, phi_kw, v1 = _linear_inputs(q, k, v, key_bias, key_mask, feature_map)
            out, kv, k_sum = _rotary_attention(phi_q, phi_kw, v1[..., :-1], cos, sin, eps)
        ctx.save_for_backward(q, k, v, key_bias, key_mask, kv, k_sum, cos, sin)
        ctx.feature_map, ctx.eps = feature_map, eps
        return out.view(b, h, n, dh).to(q.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, key_bias, key_mask, kv, k_sum, cos, sin = ctx.saved_tensors
        b, h, n, dh = q.shape
        with torch.autocast(q.device.type, enabled=False):
            phi_q, phi_kw, backprop = _recompute_features(q, k, key_bias, key_mask, ctx.feature_map)
            rot_q = rotate_features(phi_q, cos, sin)
            num, den = torch.bmm(rot_q, kv), torch.bmm(phi_q, k_sum) + ctx.eps
            grad = grad_out.float().reshape(b * h, n, dh)
            grad_num, grad_den = grad / den, -(grad * num).sum(-1, keepdim=True) / den**2  # [B*H, N, dh], [B*H, N, 1]
            grad_kv = torch.bmm(rot_q.transpose(1, 2), grad_num)
            grad_v = torch.bmm(rotate_features(phi_kw, cos, sin), grad_kv)
            unrotate = partial(rotate_features, cos=cos, sin=-sin)
            grad_phi_q = unrotate(torch.bmm(grad_num, kv.transpose(1, 2))) + grad_den * k_sum.transpose(1, 2)
            grad_phi_kw = unrotate(torch.bmm(_float32(v).flatten(0, 1), grad_kv.transpose(1, 2))) + torch.bmm(grad_den.transpose(1, 2), phi_q)
            grad_q, grad_k = backprop(grad_phi_q, grad_phi_kw)
        return grad_q, grad_k, grad_v.view(b, h, n, dh).to(v.dtype), None, None, None, None, None, None


def linear_attention_reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    key_bias: Tensor | None = None,
    key_mask: Tensor | None = None,
    feature_map: FeatureMap = elu_feature_map,
    eps: float = 1e-6,
    positions: Tensor | None = None,
    rope_base: float = 10000.0,
) -> Tensor:
    """Naive float64 quadratic form of ``linear_attention`` (builds ``[B, H, Nq, Nk]``), for tests; RoPE rotates every score explicitly."""
    q, k, v = q.double(), k.double(), v.double()
    phi_q = feature_map(q, is_query=True, key_mask=key_mask)
    phi_k = feature_map(k, is_query=False, key_mask=key_mask)
    weights = torch.ones(k.shape[0], k.shape[2], dtype=torch.float64) if key_bias is None else key_bias.double().exp()
    if key_mask is not None:
        weights = weights * key_mask.double()
    scores = (phi_q @ phi_k.transpose(-1, -2)) * weights[:, None, None, :]
    numerator = scores
    if positions is not None:
        cos, sin = feature_angles(positions, phi_q.shape[-1], rope_base)
        if positions.dim() == 2:
            cos, sin = cos[:, None], sin[:, None]
        rotated = rotate_features(phi_q, cos, sin) @ rotate_features(phi_k, cos, sin).transpose(-1, -2)
        numerator = rotated * weights[:, None, None, :]
    return (numerator @ v) / (scores.sum(-1, keepdim=True) + eps)


def linear_attention_flops(n: int, dim: int, head_dim: int, num_features: int | None = None) -> float:
    """FLOPs for one sequence: ``phi(K)^T V`` and ``phi(Q) (.)`` (``4 N F D``), plus FAVOR's projections of q and k (``4 N F D``)."""
    if num_features is None:  # elu+1: F = dh, no projection
        return 4.0 * n * dim * head_dim
    return 8.0 * n * dim * num_features


class LinearAttention(nn.Module):
    """``linear_attention`` with its feature map as a module (so FAVOR's projection is a buffer).

    Call as a kernel: ``module(q, k, v, key_bias=..., key_mask=...) -> [B, H, N, dh]``. With
    ``recompute`` (default) backward recomputes the float32 features from q and k instead of
    storing them (FlashAttention-style; ``key_bias`` then gets no gradient), RoPE in feature
    space included (at N=1,024, dim 64, 3 blocks, 25% less saved activation memory). On CUDA, when
    triton imports, self-attention with ``recompute`` runs the fused Triton kernels
    (``maelre.layers.triton_linear_attention``, same math; ``MAELRE_TRITON=0`` keeps this PyTorch path).
    """

    def __init__(
        self,
        head_dim: int,
        feature_map: str = "elu",
        num_features: int | None = None,
        seed: int = 0,
        eps: float = 1e-6,
        recompute: bool = True,
    ) -> None:
        super().__init__()
        if feature_map not in FEATURE_MAPS:
            raise ValueError(f"unknown feature map {feature_map!r}; choose one of {FEATURE_MAPS}")
        self.head_dim = head_dim
        self.eps = eps
        self.recompute = recompute
        self.favor = FavorFeatureMap(head_dim, num_features, seed) if feature_map == "favor" else None

    def forward(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        *,
        key_bias: Tensor | None = None,
        key_mask: Tensor | None = None,
        positions: Tensor | None = None,
        rope_base: float = 10000.0,
    ) -> Tensor:
        """``[B, H, N, dh]``; with ``positions [B, N]`` RoPE enters in feature space (see ``linear_attention``)."""
        feature_map = elu_feature_map if self.favor is None else self.favor
        # Under torch.compile the recomputing autograd.Functions would break the graph (their backward
        # calls torch.autograd.grad); the plain form is the same forward, and the compiler's own
        # partitioner decides what backward recomputes.
        recompute = self.recompute and not torch.compiler.is_compiling()
        if positions is not None:  # RoPE: the recomputing backward has a rotary form; the fused kernels have none
            if recompute and torch.is_grad_enabled() and q.shape == k.shape:
                features = getattr(feature_map, "num_features", q.shape[-1])  # FAVOR+ has its own count; elu+1 keeps dh
                cos, sin = rotary_feature_angles(positions.float(), features, rope_base, q.shape[1])
                return _RecomputedRotaryLinearAttention.apply(q, k, v, key_bias, key_mask, feature_map, self.eps, cos, sin)
            return linear_attention(q, k, v, key_bias=key_bias, key_mask=key_mask, feature_map=feature_map, eps=self.eps, positions=positions, rope_base=rope_base)
        if (self.recompute or not torch.is_grad_enabled()) and q.shape == k.shape and fused.available(q):
            b, _, n, _ = q.shape
            weights = key_weights(key_bias, key_mask)
            weights = shape_cache.ones(b, n, q.device) if weights is None else weights  # read-only, as the kernels treat it
            return fused.fused_linear_attention(q, k, v, weights, projection=None if self.favor is None else self.favor.projection, eps=self.eps)
        if recompute and torch.is_grad_enabled():
            return _RecomputedLinearAttention.apply(q, k, v, key_bias, key_mask, feature_map, self.eps)
        return linear_attention(q, k, v, key_bias=key_bias, key_mask=key_mask, feature_map=feature_map, eps=self.eps)

    def flops(self, n: int, dim: int) -> float:
        return linear_attention_flops(n, dim, self.head_dim, None if self.favor is None else self.favor.num_features)
