"""Masked-token self-pretraining on a task's own inputs (Amos et al. 2023, "Never Train from Scratch").

A share of each sequence's real tokens is replaced by one learned mask vector (their
positions stay), the backbone encodes the sequence, and a light head (``LayerNorm ->
Linear``) predicts the original token id of every masked token from the backbone's final
state at that position. Cross-entropy over the masked tokens is the loss. Fine-tuning
then starts from the adapter and backbone weights (``maelre fit --init-from RUN``).

Which tokens the final states stand for, per backbone:

* transformer, ecp, masformer keep all ``N`` tokens (a CLS token, if any, is dropped);
* perceiver_ar keeps its ``L`` latents, the last ``L`` real tokens: only masked tokens
  among them are predicted (masks elsewhere still hide context from the cross-attention);
* maelre merges tokens, and a merged state stands for several inputs. It pretrains with
  merging off (``KEEP_ALL_TOKENS``): matching and merging have no weights, so the
  weights are the same ones the merging model fine-tunes.

Adapters take part when they name their discrete inputs: ``token_ids_key`` (the batch
entry, ``[B, N]``, or ``[B, N, K]`` with ``token_channels = K`` ids per token) and
``num_token_ids`` (the vocabulary). The text and pixels adapters do.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from maelre.backbones.base import Backbone
from maelre.model import ClassifierHead

DEFAULT_MASK_RATIOS: dict[str, float] = {"pixels": 0.5, "text": 0.1}
"""Default share of masked tokens per adapter name (Amos et al.: 50% for pixels, 10% for ListOps/text)."""
FALLBACK_MASK_RATIO = 0.1
KEEP_ALL_TOKENS: dict[str, dict] = {"maelre": {"merge_schedule": "fraction", "merge_fraction": 0.0, "stage_targets": None}}
"""Backbone config overrides used while pretraining so that every input token keeps its own final state."""


def token_ids_of(adapter: nn.Module) -> tuple[str, int]:
    """``(batch key, vocabulary size)`` of the adapter's token ids; ``ValueError`` when it has none."""
    key = getattr(adapter, "token_ids_key", None)
    if key is None:
        raise ValueError(
            f"adapter {type(adapter).__name__} ({getattr(adapter, 'modality', '?')} data) has no token ids, so there is nothing to "
            "predict for masked-token pretraining; use an adapter with discrete inputs (text or pixels)"
        )
    return key, int(adapter.num_token_ids)


def pretraining_config(backbone: str, config: dict) -> dict:
    """``config`` with the overrides of ``KEEP_ALL_TOKENS`` for ``backbone`` (a copy)."""
    return {**config, **KEEP_ALL_TOKENS.get(backbone, {})}


def state_index(backbone: Backbone, real: Tensor) -> Tensor:
    """``[B, N']`` input position of each final state the backbone will return for ``real [B, N]``."""
    from maelre.backbones.perceiver_ar import PerceiverAR, last_real_positions

    if isinstance(backbone, PerceiverAR):
        return last_real_positions(real, backbone.config.num_latents)[0]
    return torch.arange(real.shape[1], device=real.device).expand(real.shape[0], -1)


IGNORE = -100
"""Target of an empty mask slot (``F.cross_entropy``'s default ``ignore_index``): loss and metrics skip it."""


@torch.compiler.disable  # builds a generator: dynamo cannot trace that; evaluation alone breaks the graph here
def _fixed_scores(real: Tensor) -> Tensor:
    return torch.rand(real.shape, device=real.device, generator=torch.Generator(real.device).manual_seed(0))


class MaskedTokenModel(nn.Module):
    """adapter + backbone + token head for masked-token denoising.

    ``forward(batch) -> (logits [B, S, V], targets [B, S])``: predictions and true ids for
    ``S`` mask slots per sequence, ``S = ceil(mask_ratio * N)`` (times ``K`` ids per token).
    A row masks ``round(mask_ratio * its real tokens)`` of them (at least one); its other
    slots have target ``IGNORE``. Fixed shapes for a fixed ``N`` let a compiled step keep
    one graph (boolean indexing would give every batch its own shape). In eval mode the masks
    come from a fixed seed, so validation scores are comparable.

    Args:
        adapter: a fitted sequence adapter with token ids (``token_ids_of``), whose
            ``embed(batch)`` gives the content vectors and ``positions(n)`` the positions.
        backbone: any registered backbone; it must keep one final state per token
            (see the module doc; build it with ``pretraining_config``).
        mask_ratio: share of real tokens to mask, in (0, 1).

    The adapter's ``token_channels`` (default 1) is K, the ids per token (3 for RGB pixels).
    """

    def __init__(self, adapter: nn.Module, backbone: Backbone, mask_ratio: float) -> None:
        super().__init__()
        self.token_key, vocab = token_ids_of(adapter)
        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1), got {mask_ratio}")
        if not (hasattr(adapter, "embed") and hasattr(adapter, "positions")):
            raise ValueError(f"{type(adapter).__name__} must provide embed(batch) and positions(n) (a SequenceAdapter) to be pretrained")
        self.adapter = adapter
        self.backbone = backbone
        self.mask_ratio = mask_ratio
        self.two_tower = False  # single sequences only (read by the training loop, like SequenceClassifier.two_tower)
        self.mask_token = nn.Parameter(torch.zeros(backbone.dim))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        channels = int(getattr(adapter, "token_channels", 1))
        self.channel_embed = nn.Parameter(torch.zeros(channels, backbone.dim)) if channels > 1 else None
        self.head = ClassifierHead(backbone.dim, vocab)

    def mask_slots(self, real: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
        """``(positions [B, S], used [B, S])``: the input positions of each row's mask slots, and which slots mask.

        A row's used slots are its ``round(mask_ratio * real tokens)`` lowest-scoring real tokens (at least one), the
        first always a token with a final state (``index [B, N']``), so that every row has something to predict.
        """
        slots = max(1, math.ceil(self.mask_ratio * real.shape[1]))
        scores = torch.rand(real.shape, device=real.device) if self.training else _fixed_scores(real)
        covered = torch.zeros_like(real).scatter(1, index, real.gather(1, index))
        first = scores.masked_fill(~covered, 2.0).argmin(dim=1, keepdim=True)
        scores = scores.scatter(1, first, -1.0).masked_fill(~real, 3.0)
        positions = scores.topk(slots, dim=1, largest=False).indices  # ascending: the forced token first
        count = (real.sum(dim=1, keepdim=True) * self.mask_ratio).round().clamp(min=1)
        used = (torch.arange(slots, device=real.device) < count) & real.gather(1, positions)
        return positions, used

    def choose_masked(self, real: Tensor, index: Tensor) -> Tensor:
        """``[B, N]`` bool: the tokens ``mask_slots`` masks."""
        positions, used = self.mask_slots(real, index)
        return torch.zeros_like(real).scatter(1, positions, used)

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        ids = batch[self.token_key]
        content, real = self.adapter.embed(batch)
        index = state_index(self.backbone, real)
        positions, used = self.mask_slots(real, index)
        masked = torch.zeros_like(real).scatter(1, positions, used)
        tokens = torch.where(masked[..., None], self.mask_token.to(content.dtype), content)
        pos = self.adapter.positions(tokens.shape[1])
        if pos is not None:
            tokens = tokens + pos.to(tokens.dtype)
        out = self.backbone(tokens.masked_fill(~real[..., None], 0.0), real, return_states=True)
        has_cls = getattr(self.backbone, "cls_token", None) is not None
        states, state_mask = (out.states[:, 1:], out.mask[:, 1:]) if has_cls else (out.states, out.mask)
        if states.shape[1] != index.shape[1]:
            raise ValueError(
                f"backbone {self.backbone.name!r} returned {states.shape[1]} final states for {index.shape[1]} tokens and no map back to "
                f"its inputs; masked-token pretraining needs one state per token (see maelre.pretrain.KEEP_ALL_TOKENS)"
            )
        # each slot's final state: input position -> state row (-1: the backbone keeps no state for it)
        state_of = torch.full_like(real, -1, dtype=torch.long).scatter(1, index, torch.arange(index.shape[1], device=real.device).expand_as(index))
        state = state_of.gather(1, positions)
        predicted = used & (state >= 0) & state_mask.gather(1, state.clamp(min=0))
        hidden = states.gather(1, state.clamp(min=0)[..., None].expand(-1, -1, states.shape[-1]))  # [B, S, D]
        targets = ids.gather(1, positions.view(*positions.shape, *[1] * (ids.dim() - 2)).expand(-1, -1, *ids.shape[2:]))
        targets = targets.masked_fill(~predicted.view(*predicted.shape, *[1] * (ids.dim() - 2)), IGNORE)
        if self.channel_embed is not None:
            hidden = (hidden[:, :, None] + self.channel_embed).flatten(1, 2)  # [B, S * K, D]
            targets = targets.flatten(1, 2)
        return self.head(hidden), targets


__all__ = ["DEFAULT_MASK_RATIOS", "IGNORE", "KEEP_ALL_TOKENS", "MaskedTokenModel", "pretraining_config", "state_index", "token_ids_of"]
