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
from torch.utils.checkpoint import checkpoint

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
) -> Tensor:
    """Linear attention ``[B, H, N, dh]`` from ``q [B, H, Nq, dh]``, ``k, v [B, H, Nk, dh]``.

    Args:
        key_bias: ``[B, Nk]`` additive logit bias; enters as the key weight ``exp(key_bias)``.
        key_mask: ``[B, Nk]`` bool, True = real key (padded keys get weight 0).
        feature_map: ``elu_feature_map`` or a ``FavorFeatureMap``.
        eps: added to the normalizer.
    """
    out_dtype = q.dtype
    with torch.autocast(q.device.type, enabled=False):
        q, k, v = q.float(), k.float(), v.float()
        phi_q = feature_map(q, is_query=True, key_mask=key_mask)
        phi_k = feature_map(k, is_query=False, key_mask=key_mask)
        weights = key_weights(key_bias, key_mask)
        if weights is not None:
            # where, not a product: a padded key may hold anything, even NaN
            phi_k = torch.where(weights[:, None, :, None] > 0, phi_k * weights[:, None, :, None], 0.0)
        kv = phi_k.transpose(-1, -2) @ v  # [B, H, F, dh]
        normalizer = phi_q @ phi_k.sum(dim=-2).unsqueeze(-1)  # [B, H, Nq, 1]
        out = (phi_q @ kv) / (normalizer + eps)
    return out.to(out_dtype)


def linear_attention_reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    key_bias: Tensor | None = None,
    key_mask: Tensor | None = None,
    feature_map: FeatureMap = elu_feature_map,
    eps: float = 1e-6,
) -> Tensor:
    """Naive float64 quadratic form of ``linear_attention`` (builds ``[B, H, Nq, Nk]``), for tests."""
    q, k, v = q.double(), k.double(), v.double()
    scores = feature_map(q, is_query=True, key_mask=key_mask) @ feature_map(k, is_query=False, key_mask=key_mask).transpose(-1, -2)
    weights = torch.ones(k.shape[0], k.shape[2], dtype=torch.float64) if key_bias is None else key_bias.double().exp()
    if key_mask is not None:
        weights = weights * key_mask.double()
    scores = scores * weights[:, None, None, :]
    return (scores @ v) / (scores.sum(-1, keepdim=True) + eps)


def linear_attention_flops(n: int, dim: int, head_dim: int, num_features: int | None = None) -> float:
    """FLOPs for one sequence: ``phi(K)^T V`` and ``phi(Q) (.)`` (``4 N F D``), plus FAVOR's projections of q and k (``4 N F D``)."""
    if num_features is None:  # elu+1: F = dh, no projection
        return 4.0 * n * dim * head_dim
    return 8.0 * n * dim * num_features


def recomputed(kernel, q: Tensor, k: Tensor, v: Tensor, **kwargs) -> Tensor:
    """``kernel(q, k, v, **kwargs)`` keeping only its inputs for backward and recomputing the rest.

    Like FlashAttention for exact attention: the float32 intermediates (features, landmark
    kernels) are several times the size of q, k, v and cheap to recompute.
    """
    if not (torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)):
        return kernel(q, k, v, **kwargs)
    return checkpoint(partial(kernel, **kwargs), q, k, v, use_reentrant=False, preserve_rng_state=False)


class LinearAttention(nn.Module):
    """``linear_attention`` with its feature map as a module (so FAVOR's projection is a buffer).

    Call as a kernel: ``module(q, k, v, key_bias=..., key_mask=...) -> [B, H, N, dh]``. With
    ``recompute`` (default) backward recomputes the kernel's intermediates (see ``recomputed``).
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

    def forward(self, q: Tensor, k: Tensor, v: Tensor, *, key_bias: Tensor | None = None, key_mask: Tensor | None = None) -> Tensor:
        kwargs = {"key_bias": key_bias, "key_mask": key_mask, "feature_map": elu_feature_map if self.favor is None else self.favor, "eps": self.eps}
        if self.recompute:
            return recomputed(linear_attention, q, k, v, **kwargs)
        return linear_attention(q, k, v, **kwargs)

    def flops(self, n: int, dim: int) -> float:
        return linear_attention_flops(n, dim, self.head_dim, None if self.favor is None else self.favor.num_features)
