"""Trainable pieces of the time-series adapter: the multi-scale convolutional stem and the
training-time augmentations. Both work on the step layout ``x [B, C, L]`` with a step mask
``[B, L]`` (True = observed step), so padding never leaks into real tokens.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

TS_AUGMENTATIONS = ("jitter", "scaling", "slice", "warp")
#: strength of each augmentation on standardized series (std of the noise / of the factor,
#: kept share of the window, std of the warp's knot speeds)
JITTER_STD = 0.03
SCALING_STD = 0.1
SLICE_KEEP = 0.9
WARP_STD = 0.2
WARP_KNOTS = 4
#: chance that a sample is resampled by ``slice`` / ``warp`` (jitter and scaling always apply)
RESAMPLE_PROB = 0.5
#: what normalizes each stem module's concatenated branches: per-step ``LayerNorm`` over the
#: channels, or ``MaskedBatchNorm`` (per channel over the batch's real steps)
STEM_NORMS = ("layer", "batch")


class MaskedBatchNorm(nn.Module):
    """``BatchNorm1d`` over ``[B, C, L]`` whose batch statistics count only real steps (step mask ``[B, L]``).

    Training: each channel is normalized by the mean and (biased) variance of its real steps in
    the batch, and the running statistics are updated from them (``momentum``, unbiased
    variance, as ``BatchNorm1d``); evaluation uses the running statistics. With every step real
    it computes what ``BatchNorm1d`` computes, so padding never changes a series' features
    (padded steps come out zero when the padding is a tail shared by the whole batch, and are
    left to the caller's mask otherwise).
    """

    def __init__(self, channels: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: Tensor, real: Tensor) -> Tensor:
        """``x [B, C, L]``, ``real [B, 1, L]`` (1.0 at real steps) -> ``[B, C, L]``."""
        if not self.training:
            mean, var = self.running_mean, self.running_var
        else:
            # padding only at the end, the same for every series (equal lengths padded to a token
            # multiple): BatchNorm1d's own fused kernel on the real steps; the tail stays zero
            n = int(real.amax(dim=(0, 1)).nonzero().max()) + 1 if real.any() else 0
            if x.shape[0] * n > 1 and bool(real[..., :n].all()):
                out = F.batch_norm(x[..., :n], self.running_mean, self.running_var, self.weight, self.bias, True, self.momentum, self.eps)
                return out if n == x.shape[-1] else F.pad(out, (0, x.shape[-1] - n))
            count = real.sum().clamp(min=1.0)
            mean = (x * real).sum(dim=(0, 2)) / count
            centred = (x - mean[:, None]) * real
            var = (centred * centred).sum(dim=(0, 2)) / count
            with torch.no_grad():
                unbiased = var * (count / (count - 1).clamp(min=1.0))
                self.running_mean.lerp_(mean.detach(), self.momentum)
                self.running_var.lerp_(unbiased.detach(), self.momentum)
        scale = self.weight * torch.rsqrt(var + self.eps)
        return x * scale[:, None] + (self.bias - mean * scale)[:, None]


class InceptionModule(nn.Module):
    """One InceptionTime module: an optional 1x1 bottleneck, one ``Conv1d`` branch per kernel
    size (and dilation) plus a max-pool(3) -> 1x1 branch, concatenated, normalized (``norm``:
    per-step ``LayerNorm`` over the channels, or ``MaskedBatchNorm``), GELU.

    ``pool="input"`` max-pools the module's input (InceptionTime); ``"bottleneck"`` pools the
    bottleneck's output instead, ``hidden`` channels rather than all the input's (cheaper).

    ``x [B, C_in, L]`` + step mask ``[B, L]`` -> ``[B, hidden * (len(kernels) + 1), L]``,
    zero at masked steps. Edges are zero-padded explicitly and masked steps are zeroed
    first, so a series' output does not depend on how much padding its batch adds.
    """

    def __init__(
        self, in_channels: int, hidden: int, kernels: Sequence[int], bottleneck: bool,
        dilations: Sequence[int] | None = None, pool: str = "input", norm: str = "layer",
    ) -> None:
        super().__init__()
        if norm not in STEM_NORMS:
            raise ValueError(f"stem norm must be one of {STEM_NORMS}, got {norm!r}")
        self.kernels = tuple(kernels)
        self.dilations = tuple(dilations) if dilations is not None else (1,) * len(self.kernels)
        self.bottleneck = nn.Conv1d(in_channels, hidden, 1, bias=False) if bottleneck else None
        width = hidden if bottleneck else in_channels
        self.branches = nn.ModuleList(nn.Conv1d(width, hidden, k, dilation=d) for k, d in zip(self.kernels, self.dilations))
        self.pool_bottleneck = pool == "bottleneck" and bottleneck
        self.pool_branch = nn.Conv1d(width if self.pool_bottleneck else in_channels, hidden, 1)
        self.out_channels = hidden * (len(self.kernels) + 1)
        self.norm = nn.LayerNorm(self.out_channels) if norm == "layer" else MaskedBatchNorm(self.out_channels)

    def forward(self, x: Tensor, steps: Tensor) -> Tensor:
        real = steps.unsqueeze(1).to(x.dtype)
        x = x * real
        z = x if self.bottleneck is None else self.bottleneck(x)
        outs = []
        for k, d, conv in zip(self.kernels, self.dilations, self.branches):
            span = d * (k - 1)
            left = span // 2  # "same" length for odd and even spans
            outs.append(conv(F.pad(z, (left, span - left))))
        pooled = z if self.pool_bottleneck else x
        outs.append(self.pool_branch(F.max_pool1d(F.pad(pooled, (1, 1)), 3, stride=1)))
        h = torch.cat(outs, dim=1)
        if isinstance(self.norm, MaskedBatchNorm):
            return F.gelu(self.norm(h, real)) * real
        h = F.gelu(self.norm(h.transpose(1, 2))).transpose(1, 2)
        return h * real


class ConvStem(nn.Module):
    """``layers`` stacked ``InceptionModule``s (residual from the second on), then non-overlapping patches.

    ``x [B, C, N * P]`` + step mask ``[B, N * P]`` -> tokens ``[B, N, dim]``: each patch of
    ``P`` steps of the last module's features is flattened and projected to ``dim``
    (PatchTST's patch embedding, on convolutional features instead of raw values).

    ``token_layers`` further modules (residual) run at token resolution: the last step-level
    module's features are max-pooled over each patch's real steps, and what these modules
    make of them is projected to ``dim`` and added to the tokens. Their dilations count
    tokens, so they see ``patch_len`` times further than a step-level module, at a
    ``patch_len``-th of its cost.
    """

    def __init__(
        self, channels: int, patch_len: int, dim: int, hidden: int, kernels: Sequence[int], layers: int = 1,
        dilations: Sequence[int] | None = None, pool: str = "input", norm: str = "layer", token_layers: int = 0,
    ) -> None:
        super().__init__()
        self.patch_len = patch_len
        first = InceptionModule(channels, hidden, kernels, bottleneck=False, dilations=dilations, norm=norm)
        width = first.out_channels
        more = (
            InceptionModule(width, hidden, kernels, bottleneck=True, dilations=dilations, pool=pool, norm=norm) for _ in range(layers - 1)
        )
        self.blocks = nn.ModuleList([first, *more])
        self.proj = nn.Linear(width * patch_len, dim)
        self.token_blocks = nn.ModuleList(
            InceptionModule(width, hidden, kernels, bottleneck=True, dilations=dilations, pool=pool, norm=norm) for _ in range(token_layers)
        )
        self.token_proj = nn.Linear(width, dim) if token_layers else None

    def forward(self, x: Tensor, steps: Tensor) -> Tensor:
        """``x [B, C, L]`` (``L`` a multiple of ``patch_len``), ``steps [B, L]`` bool -> ``[B, L / patch_len, dim]``."""
        h = self.blocks[0](x, steps)
        for module in self.blocks[1:]:
            h = h + module(h, steps)
        b, f, length = h.shape
        n = length // self.patch_len
        tokens = self.proj(h.transpose(1, 2).reshape(b, n, self.patch_len * f))
        if self.token_proj is None:
            return tokens
        real = steps.reshape(b, 1, n, self.patch_len)
        pooled = h.reshape(b, f, n, self.patch_len).masked_fill(~real, float("-inf")).amax(-1)  # [B, F, N]
        token_steps = real[:, 0].any(-1)  # [B, N]
        pooled = pooled.masked_fill(~token_steps[:, None], 0.0)
        for module in self.token_blocks:
            pooled = pooled + module(pooled, token_steps)
        return tokens + self.token_proj(pooled.transpose(1, 2))


def augment_steps(x: Tensor, steps: Tensor, kinds: Sequence[str]) -> Tensor:
    """Randomly perturb a batch of standardized series (training only; torch's global RNG).

    Args:
        x: ``[B, C, L]`` values.
        steps: ``[B, L]`` bool step mask; a series spans steps ``0 .. last observed``.
        kinds: any of ``"jitter"`` (add N(0, 0.03) noise), ``"scaling"`` (multiply each
            channel by N(1, 0.1)), ``"slice"`` (stretch a random 90% window to the full span),
            ``"warp"`` (resample along a smooth random monotone time map); slice and warp
            each hit a sample with probability 0.5.

    Returns:
        ``[B, C, L]``; masked steps are zero.
    """
    b, c, length = x.shape
    real = steps.to(x.dtype)
    if "slice" in kinds or "warp" in kinds:
        x = _resample(x, steps, "slice" in kinds, "warp" in kinds)
    if "scaling" in kinds:
        x = x * (1 + SCALING_STD * torch.randn(b, c, 1, dtype=x.dtype, device=x.device))
    if "jitter" in kinds:
        x = x + JITTER_STD * torch.randn_like(x)
    return x * real.unsqueeze(1)


def _resample(x: Tensor, steps: Tensor, slice_: bool, warp: bool) -> Tensor:
    """Linear-interpolation resampling of each series' span ``[0, n_b)`` along a random time map."""
    b, _, length = x.shape
    idx = torch.arange(length, device=x.device)
    n = torch.where(steps, idx + 1, 0).amax(dim=1).clamp(min=1)  # [B] span = last observed step + 1
    u = (idx.to(x.dtype) / (n - 1).clamp(min=1).to(x.dtype).unsqueeze(1)).clamp(max=1.0)  # [B, L] in [0, 1]
    target = u
    if warp:
        speeds = (1 + WARP_STD * torch.randn(b, 1, WARP_KNOTS, dtype=x.dtype, device=x.device)).clamp(min=0.1)
        speed = F.interpolate(speeds, size=length, mode="linear", align_corners=True)[:, 0]  # [B, L]
        cum = torch.cumsum(speed * (u > 0).to(x.dtype), dim=1)
        cum = cum / cum.gather(1, (n - 1).unsqueeze(1)).clamp(min=1e-6)
        use = torch.rand(b, 1, device=x.device) < RESAMPLE_PROB
        target = torch.where(use, cum.clamp(max=1.0), target)
    if slice_:
        start = (1 - SLICE_KEEP) * torch.rand(b, 1, dtype=x.dtype, device=x.device)
        use = torch.rand(b, 1, device=x.device) < RESAMPLE_PROB
        target = torch.where(use, start + SLICE_KEEP * target, target)
    pos = target * (n - 1).to(x.dtype).unsqueeze(1)  # [B, L] source positions
    lo = pos.floor().long().clamp(0, length - 1)
    hi = (lo + 1).clamp(max=(n - 1).unsqueeze(1))
    w = (pos - lo.to(x.dtype)).unsqueeze(1)
    gather = lambda i: x.gather(2, i.unsqueeze(1).expand_as(x))  # noqa: E731
    return gather(lo) * (1 - w) + gather(hi) * w


__all__ = ["ConvStem", "MaskedBatchNorm", "STEM_NORMS", "TS_AUGMENTATIONS", "augment_steps"]
