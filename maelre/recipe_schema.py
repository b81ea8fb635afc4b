"""The recipe schema: one dataclass per section, the validated ``Recipe`` and its derived configs, and ``RecipeError``.

Loading, ``--set`` overrides and whole-recipe validation live in ``maelre.recipe`` and
``maelre.recipe_validation``; the YAML recipes themselves ship in the top-level ``recipes/`` folder.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from maelre.engine.fit_types import TrainerConfig
from maelre.engine.task import OptimConfig, check_optimizer, check_schedule
from maelre.fileio import plain_data
from maelre.suggest import did_you_mean

SECTIONS = ("name", "description", "data", "model", "optimizer", "schedule", "loss", "trainer", "output", "pretrain")


class RecipeError(ValueError):
    """A recipe problem; ``path`` is the offending key (``"trainer.max_epochs"``)."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


class RecipeWarning(UserWarning):
    """A recipe that runs but probably not as intended (e.g. bf16 on CPU)."""


def _hint(key: str, options: typing.Iterable[str]) -> str:
    return did_you_mean(key, options, cutoff=0.5)


# ---------------------------------------------------------------- sections
@dataclass
class DataSection:
    """``data``: what to load and how to batch it.

    Attributes:
        dataset: ``{"name": <modalities.datasets name>, **loader settings}``.
        adapter: ``{"name": <adapter name>, **adapter settings}``; ``dim`` is not allowed
            (it follows ``model.dim``).
        batch_size: training batch size per device.
        eval_batch_size: validation/test batch size (default ``2 * batch_size``).
        num_workers: data-loader worker processes.
        val_fraction: validation share carved (stratified, seeded) from train when the
            dataset has no validation split; passed to the loader when it takes one.
        bucket_by_length: length-bucketed training batches.
        cache: keep encoded samples in memory (deterministic adapters only).
        max_train_samples: use a stratified subset of this many training samples.
        max_eval_samples: cap validation and test sets likewise (quick runs).
        on_device: hold the whole data set on the training device and cut batches there
            (grayscale images with the "pixels" adapter: sCIFAR-10, LRA Image).
        augment: on-device augmentation of training images before flattening,
            ``{hflip: bool, shift: pixels}`` (needs ``on_device``).
        augment_inputs: label-preserving training augmentations of the raw inputs
            (``maelre.engine.train_data.AUGMENTATIONS``: ``listops_shuffle``, ``hflip``, ``vflip``).
        curriculum: easy-to-hard stages read before the recipe's own dataset, each
            ``{epochs: E, dataset: {<settings that differ from data.dataset>}}``; stage i is
            trained on for its E epochs, then the next; ``data.dataset`` itself comes last
            and runs to the end of the budget. Validation and test use ``data.dataset``.
    """

    dataset: dict = field(default_factory=dict)
    adapter: dict = field(default_factory=dict)
    batch_size: int = 32
    eval_batch_size: int | None = None
    num_workers: int = 0
    val_fraction: float = 0.1
    bucket_by_length: bool = False
    cache: bool = False
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    on_device: bool = False
    augment: dict | None = None
    augment_inputs: list[str] = field(default_factory=list)
    curriculum: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        from maelre.engine.device_data import AUGMENT_KEYS
        from maelre.engine.train_data import check_augmentations

        for key in self.augment or {}:
            if key not in AUGMENT_KEYS:
                raise ValueError(f"augment has no setting {key!r}{_hint(str(key), AUGMENT_KEYS)} Valid: {', '.join(AUGMENT_KEYS)}")
        if self.augment_config() is not None and not self.on_device:
            raise ValueError("augment runs on batches held on the device; set data.on_device: true (or remove data.augment)")
        if self.on_device and (self.bucket_by_length or self.cache):
            raise ValueError("on_device batches whole images on the device; bucket_by_length and cache do not apply, set them to false")
        check_augmentations(self.augment_inputs)
        if self.augment_inputs and self.cache:
            raise ValueError("augment_inputs draws new inputs at every read but cache=true would freeze the first draw; set data.cache=false")
        if self.on_device and (self.augment_inputs or self.curriculum):
            raise ValueError("on_device batches are cut on the device; augment_inputs and curriculum read samples on the host. Use data.augment for on-device flips and shifts, or set on_device: false")
        for key in ("batch_size", "eval_batch_size"):
            value = getattr(self, key)
            if value is not None and value < 1:  # eval_batch_size may be null (twice batch_size)
                raise ValueError(f"{key} must be >= 1, got {value}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        for name in ("max_train_samples", "max_eval_samples"):
            if getattr(self, name) is not None and getattr(self, name) < 2:
                raise ValueError(f"{name} must be >= 2 or null")

    def augment_config(self) -> "ImageAugment | None":
        """``augment`` as an ``ImageAugment`` (``None`` when absent or doing nothing)."""
        from maelre.engine.device_data import ImageAugment

        augment = ImageAugment(**self.augment) if self.augment else None
        return augment if augment is not None and augment.active else None


@dataclass
class ModelSection:
    """``model``: backbone choice and head. Shared backbone keys sit beside these (see module doc).

    Attributes:
        backbone: registry name (``maelre info``).
        backbone_config: per-backbone extra keys, ``{backbone_name: {key: value}}``.
        input_dropout: dropout on the adapter's tokens (values and positions) before the
            backbone, as Skyformer's LRA models drop their embedded input; 0: none.
        head_dropout: dropout before the classifier.
        head_hidden: a hidden layer of this width in the classifier head, ``Linear -> ReLU ->
            Linear`` (LRA's head, whose width is the model's ``mlp_dim``); unset: one linear layer.
        head_norm: a LayerNorm on the pooled vector before the head (``false``: none, as LRA's
            and Skyformer's heads).
        pool_divisor: ``real`` (default): mean pooling over the real tokens; ``length``: their
            sum over the padded length, as Skyformer's LRA models pool (see ``SequenceClassifier``).
        two_tower: pair classification (LRA Retrieval); the data must be ``(x1, x2)`` pairs.
        init_from: a ``maelre pretrain`` run or checkpoint directory; a new run starts from
            its adapter and backbone weights (the head is new). Ignored on ``--resume``.
    """

    backbone: str = "maelre"
    backbone_config: dict = field(default_factory=dict)
    input_dropout: float = 0.0
    head_dropout: float = 0.0
    head_hidden: int | None = None
    head_norm: bool = True
    pool_divisor: str = "real"
    two_tower: bool = False
    init_from: str | None = None

    def __post_init__(self) -> None:
        for name in ("input_dropout", "head_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.head_hidden is not None and (isinstance(self.head_hidden, bool) or not isinstance(self.head_hidden, int) or self.head_hidden < 1):
            raise ValueError(f"head_hidden must be a width >= 1 (or unset for a linear head), got {self.head_hidden!r}")
        if self.head_hidden is not None and self.two_tower:
            raise ValueError("head_hidden is for single-tower heads: the two-tower head has its hidden layer already; unset one of them")

    def head_kwargs(self) -> dict:
        """``build_model``'s keyword arguments beyond the backbone's: the head, pooling and input dropout."""
        return {"input_dropout": self.input_dropout, "head_dropout": self.head_dropout, "two_tower": self.two_tower, "head_hidden": self.head_hidden, "head_norm": self.head_norm,
                "pool_divisor": self.pool_divisor}


@dataclass
class OptimizerSection:
    """``optimizer``: ``name`` (adamw|sgd), ``lr``, ``weight_decay``, ``betas`` (AdamW), ``momentum`` (SGD)."""

    name: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    momentum: float = 0.9

    def __post_init__(self) -> None:
        check_optimizer(self.name, self.lr, self.weight_decay)


@dataclass
class ScheduleSection:
    """``schedule``: ``kind`` (cosine|linear|constant|rsqrt) after a linear warmup of ``warmup_steps`` or ``warmup_fraction``."""

    kind: str = "cosine"
    warmup_steps: int = 0
    warmup_fraction: float = 0.0
    min_lr_ratio: float = 0.0

    def __post_init__(self) -> None:
        check_schedule(self.kind, self.warmup_steps, self.warmup_fraction, self.min_lr_ratio)


@dataclass
class LossSection:
    """``loss``: ``label_smoothing`` and ``class_weights`` (``null``, ``"balanced"`` or one weight per class)."""

    label_smoothing: float = 0.0
    class_weights: str | list[float] | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if isinstance(self.class_weights, str) and self.class_weights != "balanced":
            raise ValueError(f"class_weights must be null, 'balanced' or a list of numbers, got {self.class_weights!r}")
        if isinstance(self.class_weights, list) and (min(self.class_weights, default=0.0) < 0 or not any(self.class_weights)):
            # a negative weight makes training maximise that class's loss; all zeros give a 0/0 (NaN) loss
            raise ValueError(f"class_weights must be >= 0 with at least one above 0 (one weight per class), got {self.class_weights}")


@dataclass
class OutputSection:
    """``output``: ``run_dir`` (default ``runs/<name>``) and ``versioned`` (new ``version_N`` subfolder per run)."""

    run_dir: str | None = None
    versioned: bool = True


@dataclass
class PretrainSection:
    """``pretrain``: settings of ``maelre pretrain`` (masked-token denoising on the training inputs).

    ``mask_ratio``: share of real tokens replaced by a learned mask vector and predicted;
    ``null`` = the adapter's default (``maelre.pretrain.DEFAULT_MASK_RATIOS``: 0.5 for
    pixels, 0.1 for text tokens, as in Amos et al. 2023).
    """

    mask_ratio: float | None = None

    def __post_init__(self) -> None:
        if self.mask_ratio is not None and not 0.0 < self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1) or null (the adapter's default), got {self.mask_ratio}")


@dataclass
class Recipe:
    """A validated recipe. ``shared`` holds the shared backbone keys given at ``model.*``."""

    name: str
    data: DataSection
    model: ModelSection
    optimizer: OptimizerSection
    schedule: ScheduleSection
    loss: LossSection
    trainer: TrainerConfig
    output: OutputSection
    pretrain: PretrainSection
    shared: dict = field(default_factory=dict)
    description: str = ""

    # ------------------------------------------------------------ derived configs
    def backbone_kwargs(self) -> dict:
        """Config of the active backbone: shared keys + its ``backbone_config`` entry."""
        return {**self.shared, **self.model.backbone_config.get(self.model.backbone, {})}

    def adapter_name(self) -> str:
        return self.data.adapter["name"]

    def adapter_kwargs(self) -> dict:
        """Adapter settings with ``dim`` tied to ``model.dim`` and ``pad_to_multiple`` to the backbone."""
        kwargs = {k: v for k, v in self.data.adapter.items() if k != "name"}
        kwargs["dim"] = self.shared["dim"]
        kwargs.setdefault("pad_to_multiple", _length_multiple(self.model.backbone, self.backbone_kwargs()))
        return kwargs

    def dataset_name(self) -> str:
        return self.data.dataset["name"]

    def dataset_kwargs(self) -> dict:
        return {k: v for k, v in self.data.dataset.items() if k != "name"}

    def optim_config(self) -> OptimConfig:
        o, s = self.optimizer, self.schedule
        return OptimConfig(
            name=o.name, lr=o.lr, weight_decay=o.weight_decay, betas=o.betas, momentum=o.momentum,
            schedule=s.kind, warmup_steps=s.warmup_steps, warmup_fraction=s.warmup_fraction, min_lr_ratio=s.min_lr_ratio,
        )

    def run_dir(self) -> Path:
        return Path(self.output.run_dir or f"runs/{self.name}")

    def to_dict(self) -> dict:
        """The resolved recipe (all defaults filled in), as plain YAML-able data.

        The optional keys ``data.augment_inputs``, ``data.curriculum``, ``model.input_dropout``, ``model.head_hidden``,
        ``model.head_norm``, ``model.pool_divisor`` and ``model.init_from`` appear only when set (``input_dropout``: when
        not 0, ``head_norm``: when false, ``pool_divisor``: when not ``real``), so runs saved before they existed still ``--resume``.
        ``trainer.stop_at`` never does: a deadline belongs to one call, and a saved recipe
        resumed later must not inherit a past one.
        """
        model = {"backbone": self.model.backbone, **self.shared, "backbone_config": self.model.backbone_config,
                 "head_dropout": self.model.head_dropout, "two_tower": self.model.two_tower}
        if self.model.input_dropout:
            model["input_dropout"] = self.model.input_dropout
        if self.model.head_hidden is not None:
            model["head_hidden"] = self.model.head_hidden
        if not self.model.head_norm:
            model["head_norm"] = False
        if self.model.pool_divisor != "real":
            model["pool_divisor"] = self.model.pool_divisor
        if self.model.init_from is not None:
            model["init_from"] = self.model.init_from
        data = {k: v for k, v in dataclasses.asdict(self.data).items() if v or k not in ("augment_inputs", "curriculum")}
        out = {"name": self.name}
        if self.description:
            out["description"] = self.description
        out |= {
            "data": data,
            "model": model,
            "optimizer": dataclasses.asdict(self.optimizer),
            "schedule": dataclasses.asdict(self.schedule),
            "loss": dataclasses.asdict(self.loss),
            "trainer": {k: v for k, v in dataclasses.asdict(self.trainer).items() if k != "stop_at"},
            "output": dataclasses.asdict(self.output),
            "pretrain": dataclasses.asdict(self.pretrain),
        }
        return plain_data(out)


_SECTION_CLASSES: dict[str, type] = {
    "data": DataSection,
    "model": ModelSection,
    "optimizer": OptimizerSection,
    "schedule": ScheduleSection,
    "loss": LossSection,
    "trainer": TrainerConfig,
    "output": OutputSection,
    "pretrain": PretrainSection,
}


def _length_multiple(backbone: str, kwargs: dict) -> int:
    """The divisor the backbone needs N to satisfy (built on the meta device: no memory used)."""
    import torch

    from maelre.registry import create_backbone

    with torch.device("meta"):
        return int(create_backbone(backbone, **kwargs).length_multiple())
