"""The classifier: modality adapter -> backbone -> head. A plain ``nn.Module`` (no training code)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from maelre.backbones.base import Backbone


class ClassifierHead(nn.Module):
    """``LayerNorm -> Dropout -> Linear``: ``[B, D] -> logits [B, C]``.

    ``hidden``: a hidden layer of that width first, ``Linear -> ReLU -> Linear`` (LRA's
    ``classifier_head``, whose hidden width is the model's ``mlp_dim``). ``norm=False``
    drops the LayerNorm on the pooled vector (LRA's and Skyformer's heads have none: their
    tokens are normalised once, before pooling, as every backbone here does too). With
    ``two_tower=True`` it takes two pooled vectors ``u, v`` and classifies
    ``[u, v, u * v, u - v]`` through a one-hidden-layer MLP (LRA Retrieval style).
    """

    def __init__(self, dim: int, num_classes: int, dropout: float = 0.0, two_tower: bool = False, hidden: int | None = None,
                 norm: bool = True) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        if hidden is not None and (two_tower or hidden < 1):
            why = "the two-tower head has its hidden layer already" if two_tower else f"got {hidden}"
            raise ValueError(f"head_hidden must be a width >= 1 for a single-tower head ({why}); leave it unset for a linear head")
        self.two_tower = two_tower
        in_dim = 4 * dim if two_tower else dim
        self.norm = nn.LayerNorm(in_dim) if norm else nn.Identity()
        self.drop = nn.Dropout(dropout)
        if two_tower:
            self.fc = nn.Sequential(nn.Linear(in_dim, dim), nn.GELU(), nn.Linear(dim, num_classes))
        elif hidden is not None:
            self.fc = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
        else:
            self.fc = nn.Linear(in_dim, num_classes)

    def forward(self, pooled: Tensor, other: Tensor | None = None) -> Tensor:
        if self.two_tower:
            if other is None:
                raise ValueError("two-tower head needs both pooled vectors (pooled, other)")
            pooled = torch.cat([pooled, other, pooled * other, pooled - other], dim=-1)
        return self.fc(self.drop(self.norm(pooled)))


POOL_DIVISORS = ("real", "length")


def check_pool_divisor(pool_divisor: str, pool: str) -> None:
    """``ValueError`` unless ``pool_divisor`` is known and, if ``"length"``, the backbone mean-pools."""
    if pool_divisor not in POOL_DIVISORS:
        raise ValueError(f"pool_divisor must be one of {', '.join(POOL_DIVISORS)}, got {pool_divisor!r}")
    if pool_divisor == "length" and pool != "mean":
        raise ValueError(f"pool_divisor 'length' scales a mean over tokens; the backbone pools by {pool!r}: set pool: mean or pool_divisor: real")


class SequenceClassifier(nn.Module):
    """adapter (raw batch -> tokens, mask) + backbone (-> pooled) + head (-> logits).

    ``pool_divisor``: ``"real"`` keeps the backbone's mean over real tokens; ``"length"`` divides
    their sum by the padded length instead (Skyformer's LRA models: ``sum / max_len`` with padding
    outputs zeroed), so the pooled vector also carries the share of real tokens (on Pathfinder
    with ``mask_zero``: of lit pixels). Same as ``"real"`` for unpadded batches.

    ``input_dropout``: dropout on the adapter's tokens ``[B, N, D]`` (values and positions) before
    the backbone, as Skyformer's LRA models drop their embedded input.

    ``forward(batch)`` takes the dict an adapter's ``collate`` made. For two-tower
    tasks (``two_tower=True``) the batch is ``{"left": {...}, "right": {...}}`` and both
    sides go through the same adapter and backbone.
    """

    def __init__(self, adapter: nn.Module, backbone: Backbone, num_classes: int, head_dropout: float = 0.0, two_tower: bool = False,
                 head_hidden: int | None = None, head_norm: bool = True, pool_divisor: str = "real", input_dropout: float = 0.0) -> None:
        super().__init__()
        if getattr(adapter, "dim", backbone.dim) != backbone.dim:
            raise ValueError(f"adapter emits width {adapter.dim} but the backbone has dim={backbone.dim}; give both the same dim")
        check_pool_divisor(pool_divisor, backbone.config.pool)
        self.adapter = adapter
        self.backbone = backbone
        self.two_tower = two_tower
        self.pool_divisor = pool_divisor
        if not 0.0 <= input_dropout < 1.0:
            raise ValueError(f"input_dropout must be in [0, 1), got {input_dropout}")
        self.input_drop = nn.Dropout(input_dropout) if input_dropout > 0 else nn.Identity()
        self.head = ClassifierHead(backbone.dim, num_classes, head_dropout, two_tower, head_hidden, head_norm)

    def encode(self, batch: dict) -> Tensor:
        """Pooled ``[B, D]`` for one adapter batch."""
        tokens, mask = self.adapter(batch)
        tokens = self.input_drop(tokens)
        grid = getattr(self.adapter, "token_grid", None)
        pooled = self.backbone(tokens, mask, layout=grid(tokens.shape[1]) if grid is not None else None)
        if self.pool_divisor == "length" and mask is not None:  # the mean over real tokens, times real tokens / padded length
            pooled = pooled * (mask.sum(dim=1, keepdim=True).to(pooled.dtype) / mask.shape[1])
        return pooled

    def forward(self, batch: dict) -> Tensor:
        """Logits ``[B, num_classes]``."""
        if self.two_tower:
            return self.head(self.encode(batch["left"]), self.encode(batch["right"]))
        return self.head(self.encode(batch))
