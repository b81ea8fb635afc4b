"""The interface every backbone implements.

A backbone maps ``tokens [B, N, D]`` plus a boolean ``mask [B, N]`` (True = real token)
to a pooled representation ``[B, D]``. On request it also returns its final token
states, their sizes (how many input tokens each final token stands for) and a per-block
trace of what it did (token count in and out, attention kind, attention FLOPs).
"""
from __future__ import annotations

import numbers
from abc import abstractmethod
from dataclasses import asdict, dataclass, field
from typing import ClassVar

import torch
from torch import Tensor, nn

from maelre.layers import validation
from maelre.layers.rope import rotary_kernel


MAX_DEPTH = 1024
"""Deepest accepted backbone: far beyond any model here, and it keeps a mistyped depth from building for hours."""


@dataclass
class BackboneConfig:
    """Hyper-parameters shared by every backbone (timm-style config dataclass).

    Attributes:
        dim: token width D; the adapter must emit tokens of this width.
        depth: number of blocks.
        heads: attention heads; ``dim`` must be divisible by it.
        mlp_ratio: hidden width of each block's MLP as a multiple of ``dim``.
        dropout: dropout on attention output projection and MLP.
        attn_dropout: dropout on attention weights (exact paths only).
        drop_path: stochastic-depth rate at the last block (linearly scaled).
        pool: ``"mean"`` (size-weighted mean over real tokens) or ``"cls"``.
        max_len: longest accepted N (``None`` = unbounded); longer input is an error.
        norm_eps: LayerNorm epsilon.
        rope: rotary position embedding (RoPE, Su et al. 2021) on queries and keys at
            every attention layer, at the tokens' sequence positions (MAELRE: the
            size-weighted mean position of each merged token). Combine with the adapter's
            ``pos_embed: none`` for RoPE alone, or keep absolute positions as well.
        rope_base: RoPE frequency base.
    """

    dim: int = 256
    depth: int = 8
    heads: int = 8
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    attn_dropout: float = 0.0
    drop_path: float = 0.0
    pool: str = "mean"
    max_len: int | None = None
    norm_eps: float = 1e-6
    rope: bool = False
    rope_base: float = 10000.0

    def __post_init__(self) -> None:
        for name in ("dim", "depth", "heads", "max_len"):
            value = getattr(self, name)
            if not (isinstance(value, numbers.Integral) and not isinstance(value, bool)) and not (name == "max_len" and value is None):
                # a string or float failed later inside a comparison or a layer ("'<=' not supported ...")
                raise TypeError(f"{name} must be an integer{' or None' if name == 'max_len' else ''}, got {value!r}")
        if self.max_len is not None and self.max_len < 1:
            raise ValueError(f"max_len must be >= 1 or None (no limit), got {self.max_len}")
        if self.dim <= 0 or self.depth <= 0 or self.heads <= 0:
            raise ValueError(f"dim, depth and heads must be positive, got dim={self.dim}, depth={self.depth}, heads={self.heads}")
        if self.depth > MAX_DEPTH:
            raise ValueError(f"depth must be at most {MAX_DEPTH} blocks, got {self.depth}")
        if self.dim % self.heads:
            raise ValueError(f"dim={self.dim} is not divisible by heads={self.heads}; choose heads that divide dim (e.g. {_divisor_hint(self.dim, self.heads)})")
        if self.pool not in ("mean", "cls"):
            raise ValueError(f"pool must be 'mean' or 'cls', got {self.pool!r}")
        if self.rope and (self.dim // self.heads) % 2:
            raise ValueError(f"RoPE needs an even head dimension, got dim/heads={self.dim // self.heads}; choose dim/heads even or set rope=False")
        if self.rope_base <= 1:
            raise ValueError(f"rope_base must be > 1, got {self.rope_base}")
        for name in ("dropout", "attn_dropout", "drop_path"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")

    def to_dict(self) -> dict:
        return asdict(self)


def _divisor_hint(dim: int, heads: int) -> int:
    divisors = [h for h in range(1, dim + 1) if dim % h == 0]
    return min(divisors, key=lambda h: abs(h - heads))


@dataclass
class BlockInfo:
    """What one block does (or would do) to a sequence.

    ``attention`` names the kernel: ``exact``, ``linear``, ``nystrom``, ``local``,
    ``cross``, ``segment`` ... ``attn_flops`` counts the multiply-adds x2 of the
    score and value products for one sequence (batch 1), excluding projections.
    """

    index: int
    n_in: int
    n_out: int
    attention: str
    attn_flops: float
    extra: dict = field(default_factory=dict)


@dataclass
class BackboneOutput:
    """Full result of a backbone call.

    Attributes:
        pooled: ``[B, D]`` representation for the classification head.
        states: ``[B, N', D]`` final token states (N' <= N after merging/latents).
        sizes: ``[B, N']`` how many input tokens each final token represents (0 = padding).
        mask: ``[B, N']`` True where the final token is real.
        trace: per-block ``BlockInfo`` with the token counts actually seen.
    """

    pooled: Tensor
    states: Tensor
    sizes: Tensor
    mask: Tensor
    trace: list[BlockInfo] = field(default_factory=list)


class Backbone(nn.Module):
    """Base class: checks input shapes, then calls ``_forward``.

    Subclasses set ``config_class`` and implement ``_forward`` and ``plan``.
    ``length_multiple`` (default 1) is the divisor N must satisfy. Token values (NaN,
    all-padding rows) are checked where the batch is built (``validate_batch`` in the
    data loader), since reading them here would sync with the host on every call; set
    ``check_values = True`` (or ``MAELRE_DEBUG_CHECKS=1``) to check them here too.
    """

    config_class: ClassVar[type[BackboneConfig]] = BackboneConfig
    name: ClassVar[str] = "base"
    uses_layout: ClassVar[bool] = False  # True: ``_forward`` takes ``layout=(H, W)``

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config
        self.check_values = validation.DEBUG_CHECKS

    @property
    def dim(self) -> int:
        return self.config.dim

    def length_multiple(self) -> int:
        return 1

    @property
    def skips_parameters(self) -> bool:
        """True when a step can leave some parameters without a gradient (a block whose kernel,
        and so its weights, depends on the sequence length). DDP must then look for unused ones."""
        return False

    def rotary(self, kernel, positions: Tensor, key_positions: Tensor | None = None):
        """``kernel`` with RoPE folded in when ``config.rope`` is set, else ``kernel`` unchanged.

        ``positions``: ``[N]`` shared or ``[B, N]`` per-row query positions;
        ``key_positions`` (default ``positions``) for cross-attention.
        """
        if not self.config.rope:
            return kernel
        return rotary_kernel(kernel, positions, self.config.dim // self.config.heads, self.config.rope_base, key_positions)

    def forward(
        self,
        tokens: Tensor,
        mask: Tensor | None = None,
        *,
        return_states: bool = False,
        return_trace: bool = False,
        layout: tuple[int, int] | None = None,
    ) -> Tensor | BackboneOutput:
        """Encode a batch.

        Args:
            tokens: ``[B, N, D]`` float tokens from a modality adapter.
            mask: ``[B, N]`` bool, True = real token; ``None`` means all real.
            return_states: return a ``BackboneOutput`` instead of the pooled tensor.
            return_trace: fill ``BackboneOutput.trace`` (implies ``return_states``).
            layout: ``(H, W)`` when the N tokens are an ``H x W`` grid in raster order
                (images); backbones with ``uses_layout`` use it (MAELRE merges 2-D
                neighbours), the others ignore it.

        Returns:
            ``pooled [B, D]``, or a ``BackboneOutput`` when asked for states/trace.
        """
        validation.check_token_shapes(
            tokens, mask, dim=self.config.dim, max_len=self.config.max_len, multiple_of=self.length_multiple(), owner=self.name
        )
        weight = next(self.parameters(), None)
        if weight is not None and tokens.dtype != weight.dtype and not torch.is_autocast_enabled(tokens.device.type):
            raise ValueError(
                f"{self.name}: tokens are {tokens.dtype} but the backbone's weights are {weight.dtype}; "
                f"convert the tokens (tokens.to({weight.dtype})) or the backbone (.to(dtype)), or run under torch.autocast"
            )
        if self.check_values:
            validation.check_token_values(tokens, mask, owner=self.name)
        if mask is not None:
            # Padding may hold anything (validation allows NaN there); a masked NaN key still
            # poisons attention (0 * NaN), so padded tokens enter the backbone as zeros.
            tokens = tokens.masked_fill(~mask.unsqueeze(-1), 0.0)
        if layout is not None and self.uses_layout:
            if layout[0] * layout[1] != tokens.shape[1]:
                raise ValueError(f"{self.name}: layout {layout[0]}x{layout[1]} does not match the {tokens.shape[1]} tokens; pass layout=None for non-grid input")
            out = self._forward(tokens, mask, trace=return_trace, layout=layout)
        else:
            out = self._forward(tokens, mask, trace=return_trace)
        if return_states or return_trace:
            return out
        return out.pooled

    @abstractmethod
    def _forward(self, tokens: Tensor, mask: Tensor | None, trace: bool) -> BackboneOutput:
        """Backbone computation on validated input."""

    @abstractmethod
    def plan(self, seq_len: int) -> list[BlockInfo]:
        """Static per-block plan (token counts, attention kind, FLOPs) for one sequence of ``seq_len``."""

    def attention_flops(self, seq_len: int) -> float:
        """Total attention FLOPs for one sequence of ``seq_len`` tokens (from ``plan``)."""
        return float(sum(b.attn_flops for b in self.plan(seq_len)))

    def num_parameters(self, trainable_only: bool = True) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)


def dense_attention_flops(n_q: int, n_k: int, dim: int) -> float:
    """FLOPs of ``softmax(QK^T)V`` over all heads: two [n_q x n_k x dim] products."""
    return 4.0 * n_q * n_k * dim


def full_mask(tokens: Tensor, mask: Tensor | None) -> Tensor:
    """The mask to use inside a backbone: all-True when ``mask`` is None."""
    if mask is None:
        return torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
    return mask
