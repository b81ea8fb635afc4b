"""Pieces shared by the modality adapters: config checks, the length rule, batch padding,
absolute position embeddings and ``SequenceAdapter``, the base class whose ``forward`` is
``embed -> + positions -> zero the padding``.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pad_sequence

from modalities.base import AdapterConfig, ModalityAdapter

POS_EMBED_KINDS = ("learned", "sinusoidal", "none")


def check_choice(owner: str, name: str, value: Any, options: Sequence[Any]) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``options``."""
    if value not in options:
        raise ValueError(f"{owner}: {name} must be one of {', '.join(map(repr, options))}, got {value!r}")


def check_positive(owner: str, **values: Any) -> None:
    """Raise ``ValueError`` unless every keyword value is a positive int."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{owner}: {name} must be a positive integer, got {value!r}")


def as_pair(owner: str, name: str, value: int | Sequence[int]) -> tuple[int, int]:
    """``int`` or 2-sequence (a YAML list works) -> ``(a, b)`` of positive ints."""
    pair = (value, value) if isinstance(value, int) and not isinstance(value, bool) else tuple(value)
    if len(pair) != 2:
        raise ValueError(f"{owner}: {name} must be an int or a pair of ints, got {value!r}")
    check_positive(owner, **{f"{name}[0]": pair[0], f"{name}[1]": pair[1]})
    return pair


def round_up(n: int, multiple: int) -> int:
    """Smallest multiple of ``multiple`` that is >= ``n``."""
    return -(-n // multiple) * multiple


def length_buckets(max_length: int, multiple: int, count: int) -> tuple[int, ...]:
    """At most ``count`` padded lengths covering ``[1, max_length]``: a compiled fit's sequence lengths.

    Evenly spaced: multiples of ``step = round_up(ceil(top / count), multiple)`` up to
    ``top = round_up(max_length, multiple)`` (the last one capped at ``top``), so every
    length keeps the backbone's multiple (ECP's ``segment_size / 2``) and a batch pads at most
    ``step - 1`` extra positions. Even steps rather than powers of two: LRA's lengths mostly sit
    near ``max_len`` (ListOps 500-2,000 of 2,048, IMDB bytes cut at 4,000), where doubling would
    pad up to 2x (1,025 -> 2,048) and powers of two need ``log2(max_len)`` (12-13) lengths; a
    step of ``max_len / 8`` pads at most 12.5% of ``max_len``. ``max_len=4000, multiple=1, count=8``
    gives 500, 1000, ..., 4000; with ECP's multiple 128: 512, 1024, ..., 4096.
    """
    check_positive("length_buckets", max_length=max_length, multiple=multiple, count=count)
    top = round_up(max_length, multiple)
    step = round_up(-(-top // count), multiple)
    return tuple(sorted({min(i * step, top) for i in range(1, count + 1)}))


def bucket_length(n: int, lengths: Sequence[int]) -> int:
    """The smallest of ``lengths`` that is >= ``n`` (``n`` itself when all are shorter)."""
    return min((length for length in lengths if length >= n), default=n)


def kept_length(n: int, max_len: int, truncation: bool, *, owner: str, unit: str = "tokens") -> int:
    """How many of ``n`` tokens an adapter keeps: all of them, or the first ``max_len``.

    Raises ``ValueError`` when ``n > max_len`` and ``truncation`` is False.
    """
    if n <= max_len:
        return n
    if truncation:
        return max_len
    raise ValueError(
        f"{owner}: input is {n} {unit} long, longer than max_len={max_len}; "
        f"set truncation=True to keep the first {max_len} or raise max_len to at least {n}"
    )


def pad_batch(
    items: Sequence[Mapping[str, Tensor]],
    pad_to_multiple: int = 1,
    pad_values: Mapping[str, float] | None = None,
    *,
    owner: str = "adapter",
    buckets: Sequence[int] | None = None,
) -> dict[str, Tensor]:
    """Right-pad and stack encoded items into a batch.

    Every tensor of an item is a sequence along dim 0 (``[L_i, ...]``, the same ``L_i``
    for all keys of the item). Each key becomes ``[B, L, ...]`` with ``L`` the batch
    maximum rounded up to ``pad_to_multiple``, and then, when ``buckets`` is given (the
    buckets of ``length_buckets``), up to the smallest of them that holds it. ``"mask"`` is
    padded with False, other keys with ``pad_values.get(key, 0)``.
    """
    if not items:
        raise ValueError(f"{owner}: cannot collate an empty list of items")
    keys = list(items[0])
    if "mask" not in keys:
        raise ValueError(f"{owner}: encoded items must have a 'mask' entry, got keys {keys}")
    lengths = []
    for i, item in enumerate(items):
        if list(item) != keys:
            raise ValueError(f"{owner}: item {i} has keys {list(item)}, expected {keys}; collate only outputs of the same adapter")
        sizes = {key: item[key].shape[0] for key in keys}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"{owner}: item {i} has entries of different lengths {sizes}")
        lengths.append(sizes["mask"])
    target = round_up(max(lengths), pad_to_multiple)
    if buckets is not None:
        target = bucket_length(target, buckets)
    pad_values = pad_values or {}
    batch = {}
    for key in keys:
        value = False if key == "mask" else pad_values.get(key, 0)
        stacked = pad_sequence([item[key] for item in items], batch_first=True, padding_value=value)
        extra = target - stacked.shape[1]
        if extra:
            pad = [0, 0] * (stacked.dim() - 2) + [0, extra]
            stacked = F.pad(stacked, pad, value=value)
        batch[key] = stacked
    return batch


EMBED_INIT_STD = 0.02
"""Initial scale (std) of token embedding tables and of position embeddings alike (GPT-2, BERT, ViT).

Both must start at one scale: with ``nn.Embedding``'s default N(0, 1) tokens beside positions
of std 0.02, a token's position is 2% of its vector, and on inputs where most tokens share one
value (Pathfinder's background pixels) every model starts position-blind."""


def token_embedding(num_embeddings: int, dim: int, padding_idx: int | None = None) -> nn.Embedding:
    """``nn.Embedding`` initialised like the position table: truncated normal, std ``EMBED_INIT_STD``; padding row 0."""
    embedding = nn.Embedding(num_embeddings, dim, padding_idx=padding_idx)
    nn.init.trunc_normal_(embedding.weight, std=EMBED_INIT_STD)
    if padding_idx is not None:
        with torch.no_grad():
            embedding.weight[padding_idx].zero_()
    return embedding


def sinusoidal_positions(length: int, dim: int, base: float = 10000.0) -> Tensor:
    """Fixed sinusoid table ``[length, dim]`` (Vaswani et al. 2017): sin on even, cos on odd columns."""
    half = (dim + 1) // 2
    inv_freq = base ** (-torch.arange(half, dtype=torch.float64) * 2 / (2 * half))
    angles = torch.arange(length, dtype=torch.float64)[:, None] * inv_freq
    table = torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(1)
    return table[:, :dim].float()


class PositionEmbedding(nn.Module):
    """Absolute positions for up to ``max_len`` tokens: learned table, fixed sinusoid, or none."""

    def __init__(self, kind: str, max_len: int, dim: int) -> None:
        super().__init__()
        check_choice("PositionEmbedding", "kind", kind, POS_EMBED_KINDS)
        self.kind = kind
        self.max_len = max_len
        self.table: Tensor | None
        if kind == "learned":
            self.table = nn.Parameter(torch.empty(max_len, dim))
            nn.init.trunc_normal_(self.table, std=EMBED_INIT_STD)
        elif kind == "sinusoidal":  # scaled to RMS EMBED_INIT_STD (a sinusoid's RMS is 1/sqrt(2)), like the tokens
            table = sinusoidal_positions(max_len, dim) * (EMBED_INIT_STD * math.sqrt(2))
            self.register_buffer("table", table, persistent=False)
        else:
            self.table = None

    def positions(self, n: int) -> Tensor | None:
        """``[n, dim]`` embeddings of positions ``0..n-1`` (``None`` for ``kind="none"``)."""
        if n > self.max_len:
            raise ValueError(f"{n} tokens exceed the {self.max_len} position embeddings; raise the adapter's max_len")
        return None if self.table is None else self.table[:n]

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, max_len={self.max_len}"


@dataclass
class SequenceAdapterConfig(AdapterConfig):
    """``AdapterConfig`` plus ``pos_embed``: ``"learned"``, ``"sinusoidal"`` or ``"none"``."""

    pos_embed: str = "learned"

    def __post_init__(self) -> None:
        owner = type(self).__name__
        check_positive(owner, dim=self.dim, max_len=self.max_len, pad_to_multiple=self.pad_to_multiple)
        check_choice(owner, "pos_embed", self.pos_embed, POS_EMBED_KINDS)


class SequenceAdapter(ModalityAdapter):
    """Adapter whose ``forward`` is ``embed(batch) -> + positions -> zero padded tokens``.

    Subclasses implement ``encode`` and ``embed(batch) -> (tokens [B, N, D], mask [B, N])``;
    the default ``collate`` is ``pad_batch`` with ``pad_values``. Positions come from
    ``positions(n)``, by default the first ``n`` rows of ``self.pos_embed``, a table of
    ``max_positions()`` rows.
    """

    config_class = SequenceAdapterConfig
    pad_values: ClassVar[dict[str, float]] = {}

    def __init__(self, config: SequenceAdapterConfig) -> None:
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}")
        super().__init__(config)

    def token_grid(self, n: int) -> tuple[int, int] | None:
        """``(H, W)`` when ``n`` tokens are an ``H x W`` grid in raster order (images), else ``None``.

        Backbones that know 2-D structure (MAELRE's merge order) use it; sequences have none.
        """
        return None

    def build_positions(self) -> None:
        """Create ``self.pos_embed``; call at the end of ``__init__`` once ``max_positions`` works."""
        self.pos_embed = PositionEmbedding(self.config.pos_embed, self.max_positions(), self.config.dim)

    def max_positions(self) -> int:
        """Longest padded token sequence: ``max_len`` rounded up to ``pad_to_multiple``."""
        return round_up(self.config.max_len, self.config.pad_to_multiple)

    def positions(self, n: int) -> Tensor | None:
        return self.pos_embed.positions(n)

    def bucket_lengths(self, count: int) -> tuple[int, ...] | None:
        """``length_buckets(max_positions(), pad_to_multiple, count)``: the token counts a compiled fit pads to."""
        return length_buckets(self.max_positions(), self.config.pad_to_multiple, count)

    def collate(self, items: list[dict[str, Tensor]], buckets: Sequence[int] | None = None) -> dict[str, Tensor]:
        return pad_batch(items, self.config.pad_to_multiple, self.pad_values, owner=self.modality, buckets=buckets)

    def embed(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Collated batch -> ``(tokens [B, N, dim] float, mask [B, N] bool)``; padded tokens are zero."""
        if "mask" not in batch:
            raise ValueError(f"{self.modality}: batch has no 'mask'; pass the dict returned by collate()")
        tokens, mask = self.embed(batch)
        pos = self.positions(tokens.shape[1])
        if pos is not None:
            tokens = tokens + pos.to(tokens.dtype)
        return tokens.masked_fill(~mask.unsqueeze(-1), 0.0), mask


__all__ = [
    "EMBED_INIT_STD",
    "POS_EMBED_KINDS",
    "PositionEmbedding",
    "SequenceAdapter",
    "SequenceAdapterConfig",
    "as_pair",
    "check_choice",
    "check_positive",
    "bucket_length",
    "kept_length",
    "length_buckets",
    "pad_batch",
    "round_up",
    "sinusoidal_positions",
    "token_embedding",
]
