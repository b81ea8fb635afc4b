"""Input checks shared by every backbone: each error says what was wrong and how to fix it.

Shape checks (``check_token_shapes``) read only metadata and cost nothing. Value checks
(``check_token_values``, ``validate_batch``: NaN/inf, all-padding rows) read tensor values,
which on an accelerator is a host sync. So they run once where the batch is built (the
data loader's collate, on CPU), not in every forward; a backbone runs them too only with
its ``check_values`` debug flag (or ``MAELRE_DEBUG_CHECKS=1``).
"""
from __future__ import annotations

import os

import torch
from torch import Tensor

DEBUG_CHECKS = os.environ.get("MAELRE_DEBUG_CHECKS", "0") not in ("", "0", "false", "False")
"""Default of ``Backbone.check_values``: value checks in every forward (set ``MAELRE_DEBUG_CHECKS=1``)."""


def _rows(flags: Tensor, limit: int = 8) -> str:
    idx = flags.nonzero().flatten().tolist()
    shown = ", ".join(map(str, idx[:limit]))
    return shown + (f", ... ({len(idx)} rows)" if len(idx) > limit else "")


def validate_tokens(tokens: Tensor, mask: Tensor | None, *, owner: str = "backbone", **shape: int | None) -> None:
    """Raise ``ValueError`` naming the fix when ``tokens``/``mask`` cannot be encoded.

    ``check_token_shapes`` (``shape``: its ``dim``, ``max_len``, ``multiple_of``) then
    ``check_token_values``: rank 3 float ``[B, N, D]``, D matches ``dim``, N > 0,
    N <= ``max_len``, N divisible by ``multiple_of``, ``mask`` bool ``[B, N]`` with no
    all-padding row, and no NaN/inf in real tokens.
    """
    check_token_shapes(tokens, mask, owner=owner, **shape)
    check_token_values(tokens, mask, owner=owner)


def check_token_shapes(
    tokens: Tensor,
    mask: Tensor | None,
    *,
    dim: int,
    max_len: int | None = None,
    multiple_of: int = 1,
    owner: str = "backbone",
) -> None:
    """The checks of ``validate_tokens`` that read no tensor values (no host sync)."""
    if not isinstance(tokens, Tensor):
        raise ValueError(f"{owner}: tokens must be a torch.Tensor of shape [B, N, D], got {type(tokens).__name__}")
    if tokens.dim() != 3:
        hint = " (add a batch dimension with tokens.unsqueeze(0))" if tokens.dim() == 2 else ""
        raise ValueError(f"{owner}: tokens must have shape [B, N, D], got rank {tokens.dim()} shape {tuple(tokens.shape)}{hint}")
    if not tokens.is_floating_point():
        raise ValueError(f"{owner}: tokens must be floating point, got {tokens.dtype}; embed integer ids with a modality adapter first")
    b, n, d = tokens.shape
    if d != dim:
        raise ValueError(f"{owner}: token width D={d} does not match the backbone's dim={dim}; build the adapter with dim={dim} or set model.dim={d}")
    if n == 0 or b == 0:
        raise ValueError(f"{owner}: empty batch or sequence (shape {tuple(tokens.shape)}); every sequence needs at least one token")
    if max_len is not None and n > max_len:
        raise ValueError(f"{owner}: sequence length N={n} exceeds max_len={max_len}; truncate in the adapter (max_len/truncation) or raise model.max_len")
    if multiple_of > 1 and n % multiple_of:
        pad = (-n) % multiple_of
        raise ValueError(
            f"{owner}: sequence length N={n} must be divisible by {multiple_of}; pad {pad} more tokens "
            f"(adapter pad_to_multiple={multiple_of}) or change the segment size"
        )
    if mask is not None:
        if not isinstance(mask, Tensor) or mask.shape != (b, n):
            shape = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
            raise ValueError(f"{owner}: mask must be a bool tensor of shape [B, N]=({b}, {n}), got {shape}")
        if mask.dtype != torch.bool:
            raise ValueError(f"{owner}: mask must be bool (True = real token), got {mask.dtype}; use mask.bool()")


def _check_rows(mask: Tensor, owner: str) -> None:
    empty = ~mask.any(dim=1)
    if bool(empty.any()):
        raise ValueError(f"{owner}: batch rows [{_rows(empty)}] are all padding; drop empty sequences before encoding")


def check_token_values(tokens: Tensor, mask: Tensor | None, *, owner: str = "backbone") -> None:
    """Raise ``ValueError`` for an all-padding row of ``mask [B, N]`` or NaN/inf in real ``tokens [B, N, ...]``.

    Reads values (a host sync on an accelerator); shapes must already be checked.
    """
    if mask is not None:
        _check_rows(mask, owner)
    bad = ~torch.isfinite(tokens).reshape(*tokens.shape[:2], -1).all(dim=-1)
    if mask is not None:
        bad = bad & mask
    if bool(bad.any()):
        raise ValueError(
            f"{owner}: tokens contain NaN or inf in batch rows [{_rows(bad.any(dim=1))}]; "
            "clean the input or set the adapter's nan_policy (e.g. 'zero' or 'interpolate')"
        )


def validate_batch(batch: dict[str, Tensor], *, owner: str = "adapter") -> None:
    """``check_token_values`` on a collated adapter batch (CPU, in the data loader).

    ``batch["mask"]`` is ``[B, L]``; each floating entry ``[B, L, ...]`` is checked at
    real positions, any other floating entry (an image ``[B, C, H, W]``) everywhere.
    """
    mask = batch["mask"]
    _check_rows(mask, owner)
    for value in batch.values():
        if isinstance(value, Tensor) and value.is_floating_point():
            aligned = value.dim() >= 2 and value.shape[:2] == mask.shape
            check_token_values(value if aligned else value.reshape(len(value), 1, -1), mask if aligned else None, owner=owner)
