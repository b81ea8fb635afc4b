"""Model construction: fit an adapter, build a ``SequenceClassifier``, and the ``ModelSpec`` that rebuilds it.

Both the fit path (``maelre.engine.fit``) and the checkpoint loader
(``maelre.engine.checkpoint``) import from here, so neither imports the other to build a model.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from maelre.fileio import plain_data
from maelre.model import SequenceClassifier
from maelre.registry import create_backbone


@dataclass
class ModelSpec:
    """Everything needed to rebuild a ``SequenceClassifier`` before loading its weights.

    Attributes:
        backbone: registry name (``maelre.list_backbones()``).
        backbone_config: the backbone's full config (``config.to_dict()``).
        adapter: adapter registry name (``modalities.list_adapters()``).
        adapter_config: the adapter's config fields.
        num_classes: classifier outputs.
        head_dropout: dropout before the classifier.
        two_tower: pair classification head.
        head_hidden: width of the head's hidden layer (``None``: a linear head).
        head_norm: the head's LayerNorm on the pooled vector (``False``: none).
        pool_divisor: ``"real"`` (mean over real tokens) or ``"length"`` (their sum over the padded length).
        input_dropout: dropout on the adapter's tokens before the backbone.
    """

    backbone: str
    backbone_config: dict
    adapter: str
    adapter_config: dict
    num_classes: int
    head_dropout: float = 0.0
    two_tower: bool = False
    extra: dict = field(default_factory=dict)
    head_hidden: int | None = None
    head_norm: bool = True
    pool_divisor: str = "real"
    input_dropout: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelSpec":
        return cls(**data)


# ---------------------------------------------------------------- building
def prepare_adapter(name: str, config: dict[str, Any], train_samples: Sequence[tuple[Any, int]], two_tower: bool = False) -> Any:
    """Create adapter ``name`` with ``config`` and ``fit`` its preprocessing on the training inputs.

    For two-tower data (``x = (left, right)``) both sides are fitted on.
    """
    from modalities import create_adapter

    adapter = create_adapter(name, **config)
    inputs = _TrainInputs(train_samples, two_tower)
    try:
        adapter.fit(inputs)  # lazy: adapters that subsample (audio statistics) read only what they need
    except (TypeError, ValueError):
        adapter.fit(list(inputs))  # adapters that accept only in-memory panels (lists/arrays)
    return adapter


class _TrainInputs(Sequence):
    """The raw inputs of ``(x, y)`` samples (both sides of pairs, concatenated, for two-tower data)."""

    def __init__(self, samples: Sequence[tuple[Any, int]], two_tower: bool) -> None:
        self.samples = samples
        self.two_tower = two_tower

    def __len__(self) -> int:
        return len(self.samples) * (2 if self.two_tower else 1)

    def __getitem__(self, i: int) -> Any:  # type: ignore[override]
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} training inputs")
        if not self.two_tower:
            return self.samples[i][0]
        x, _ = self.samples[i % len(self.samples)]
        return x[i // len(self.samples)]


def build_model(
    adapter: Any,
    backbone_name: str,
    backbone_cfg: dict[str, Any],
    num_classes: int,
    head_dropout: float = 0.0,
    two_tower: bool = False,
    head_hidden: int | None = None,
    head_norm: bool = True,
    pool_divisor: str = "real",
    input_dropout: float = 0.0,
) -> SequenceClassifier:
    """adapter + registered backbone + head -> ``SequenceClassifier`` (``forward(batch) -> logits [B, C]``).

    The adapter (already ``fit``) fixes the width: ``backbone_cfg`` may omit ``dim``,
    and a different ``dim`` is an error. The returned model carries ``model.spec``
    (a ``ModelSpec``), which checkpoints store to rebuild it.
    """
    from modalities.base import registered_name

    cfg = dict(backbone_cfg)
    if cfg.setdefault("dim", adapter.dim) != adapter.dim:
        raise ValueError(f"backbone dim={cfg['dim']} differs from the adapter's dim={adapter.dim}; model.dim sets both, so leave the adapter's dim unset")
    backbone = create_backbone(backbone_name, **cfg)
    model = SequenceClassifier(adapter, backbone, num_classes, head_dropout, two_tower, head_hidden, head_norm, pool_divisor, input_dropout)
    model.spec = ModelSpec(
        backbone=backbone_name,
        backbone_config=backbone.config.to_dict(),
        adapter=registered_name(adapter),
        adapter_config=plain_data(dataclasses.asdict(adapter.config)),
        num_classes=num_classes,
        head_dropout=head_dropout,
        two_tower=two_tower,
        head_hidden=head_hidden,
        head_norm=head_norm,
        pool_divisor=pool_divisor,
        input_dropout=input_dropout,
    )
    return model


def model_from_spec(adapter: Any, spec: ModelSpec) -> SequenceClassifier:
    """The (untrained) model a checkpoint's ``spec`` describes, on ``adapter`` (its preprocessing already loaded)."""
    return build_model(adapter, spec.backbone, spec.backbone_config, spec.num_classes, spec.head_dropout, spec.two_tower, spec.head_hidden,
                       spec.head_norm, spec.pool_divisor, spec.input_dropout)


def num_classes_of(model: SequenceClassifier) -> int:
    """Output width of the classifier head."""
    fc = model.head.fc
    return (fc[-1] if isinstance(fc, torch.nn.Sequential) else fc).out_features

