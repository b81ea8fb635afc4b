"""Recipes: a YAML file describing one training run, validated completely before anything runs.

Sections (every key is documented in ``docs/recipes.md``)::

    name: audio_fsdd                  # optional; default: the file name
    data:     dataset: {name, **loader settings}   adapter: {name, **adapter settings}
              batch_size, eval_batch_size, num_workers, val_fraction, bucket_by_length,
              cache, max_train_samples, max_eval_samples, on_device, augment, augment_inputs, curriculum
    model:    backbone, <shared backbone keys: dim depth heads mlp_ratio dropout ...>,
              backbone_config: {<backbone name>: {<keys of that backbone only>}},
              head_dropout, two_tower, init_from
    optimizer: name, lr, weight_decay, betas, momentum
    schedule:  kind, warmup_steps, warmup_fraction, min_lr_ratio
    loss:      label_smoothing, class_weights
    trainer:   maelre.engine.TrainerConfig fields
    output:    run_dir, versioned
    pretrain:  mask_ratio                          (``maelre pretrain``: masked-token self-pretraining)

Switching backbone (``--set model.backbone=ecp``) never breaks a recipe: the shared keys
at ``model.*`` are fields of every backbone's config, and backbone-specific keys live in
``model.backbone_config.<name>``, of which only the active backbone's entry is used
(the keys and types of all entries are checked against their backbone; values only
when that backbone is active). ``model.dim`` is the single
width: the adapter's ``dim`` follows it, and the adapter's ``pad_to_multiple`` follows
the backbone's length requirement unless set explicitly.

Errors are ``RecipeError`` (a ``ValueError``) naming the key path, with the closest valid
key when a key is unknown.
"""
from __future__ import annotations

import dataclasses
import inspect
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from maelre.engine.fit import TrainerConfig
from maelre.engine.task import OptimConfig, check_optimizer, check_schedule
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


def _join(path: str, key: str | int) -> str:
    return f"{path}[{key}]" if isinstance(key, int) else (f"{path}.{key}" if path else key)


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
        if self.batch_size < 1 or (self.eval_batch_size is not None and self.eval_batch_size < 1):
            raise ValueError("batch sizes must be >= 1")
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
        head_dropout: dropout before the classifier.
        two_tower: pair classification (LRA Retrieval); the data must be ``(x1, x2)`` pairs.
        init_from: a ``maelre pretrain`` run or checkpoint directory; a new run starts from
            its adapter and backbone weights (the head is new). Ignored on ``--resume``.
    """

    backbone: str = "maelre"
    backbone_config: dict = field(default_factory=dict)
    head_dropout: float = 0.0
    two_tower: bool = False
    init_from: str | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.head_dropout < 1.0:
            raise ValueError(f"head_dropout must be in [0, 1), got {self.head_dropout}")


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

        The optional keys ``data.augment_inputs``, ``data.curriculum`` and ``model.init_from``
        appear only when set, so runs saved before they existed still ``--resume``.
        """
        model = {"backbone": self.model.backbone, **self.shared, "backbone_config": self.model.backbone_config,
                 "head_dropout": self.model.head_dropout, "two_tower": self.model.two_tower}
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
            "trainer": dataclasses.asdict(self.trainer),
            "output": dataclasses.asdict(self.output),
            "pretrain": dataclasses.asdict(self.pretrain),
        }
        return _plain(out)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


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


# ---------------------------------------------------------------- type checking
_TYPE_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string", dict: "a mapping", type(None): "null"}


def _type_name(hint: Any) -> str:
    if hint in _TYPE_WORDS:
        return _TYPE_WORDS[hint]
    if typing.get_origin(hint) in (list, tuple):
        return "a list"
    if typing.get_origin(hint) is dict:
        return "a mapping"
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def check_value(value: Any, hint: Any, path: str) -> Any:
    """Check ``value`` (from YAML) against type ``hint``; return it converted (int->float, list->tuple).

    Raises ``RecipeError`` naming ``path`` and the expected type.
    """
    if hint is Any:
        return value
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return check_value(value, option, path)
            except RecipeError:
                continue
        raise RecipeError(path, f"expected {' or '.join(map(_type_name, options))}, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise RecipeError(path, f"expected a list, got {value!r}")
        args = typing.get_args(hint)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise RecipeError(path, f"expected a list of {len(args)} values, got {len(value)}")
            return tuple(check_value(v, a, _join(path, i)) for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        items = [check_value(v, item, _join(path, i)) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise RecipeError(path, f"expected a mapping, got {value!r}")
        return value
    if origin is typing.Literal:
        if value not in typing.get_args(hint):
            raise RecipeError(path, f"expected one of {typing.get_args(hint)}, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise RecipeError(path, f"expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecipeError(path, f"expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecipeError(path, f"expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise RecipeError(path, f"expected a string, got {value!r}")
        return value
    if isinstance(hint, type) and not isinstance(value, hint):
        raise RecipeError(path, f"expected {hint.__name__}, got {value!r}")
    return value


def _hints(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def check_keys(raw: dict, hints: dict[str, Any], path: str, what: str = "key") -> dict:
    """Type-check every key of ``raw`` against ``hints``; unknown keys fail with the closest valid one."""
    out = {}
    for key, value in raw.items():
        where = _join(path, str(key))
        if key not in hints:
            raise RecipeError(where, f"unknown {what}{_hint(str(key), hints)} Valid: {', '.join(hints)}")
        out[key] = check_value(value, hints[key], where)
    return out


def _construct(cls: type, kwargs: dict, path: str) -> Any:
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as err:
        raise RecipeError(path, str(err)) from err


def _mapping(raw: Any, path: str) -> dict:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise RecipeError(path, f"expected a mapping of keys, got {type(raw).__name__} {raw!r}")
    return raw


# ---------------------------------------------------------------- cross-checks
def _shared_hints() -> dict[str, Any]:
    from maelre.backbones.base import BackboneConfig

    return _hints(BackboneConfig)


def _backbone_hints(name: str) -> dict[str, Any]:
    from maelre.registry import get_backbone_class

    return _hints(get_backbone_class(name).config_class)


def _length_multiple(backbone: str, kwargs: dict) -> int:
    """The divisor the backbone needs N to satisfy (built on the meta device: no memory used)."""
    import torch

    from maelre.registry import create_backbone

    with torch.device("meta"):
        return int(create_backbone(backbone, **kwargs).length_multiple())


def _unknown_model_key(key: str, prefix: str = "") -> RecipeError:
    """The error for ``model.<key>``: points backbone-specific keys to ``model.backbone_config``."""
    from maelre.registry import list_backbones

    specific = [name for name in list_backbones() if key in _backbone_hints(name)]
    if specific:
        return RecipeError(f"model.{key}", f"{prefix}{key!r} belongs to backbone {specific[0]!r} only; put it under model.backbone_config.{specific[0]}.{key}")
    valid = [*_hints(ModelSection), *_shared_hints()]
    return RecipeError(f"model.{key}", f"{prefix}unknown key{_hint(key, valid)} Valid: {', '.join(valid)}")


def _validate_model(raw: dict) -> tuple[ModelSection, dict]:
    from maelre.registry import config_fields, list_backbones, make_config

    raw = _mapping(raw, "model")
    shared_hints = _shared_hints()
    own_hints = _hints(ModelSection)
    unknown = [k for k in raw if k not in own_hints and k not in shared_hints]
    if unknown:
        raise _unknown_model_key(str(unknown[0]))
    section = _construct(ModelSection, check_keys({k: v for k, v in raw.items() if k in own_hints}, own_hints, "model"), "model")
    shared = check_keys({k: v for k, v in raw.items() if k in shared_hints}, shared_hints, "model")
    backbones = list_backbones()
    if section.backbone not in backbones:
        raise RecipeError("model.backbone", f"unknown backbone {section.backbone!r}{_hint(section.backbone, backbones)} Available: {', '.join(backbones)}")
    specific_cfg = {}
    for name, entry in section.backbone_config.items():
        where = f"model.backbone_config.{name}"
        if name not in backbones:
            raise RecipeError(where, f"unknown backbone{_hint(str(name), backbones)} Available: {', '.join(backbones)}")
        entry = _mapping(entry, where)
        hints = {k: v for k, v in _backbone_hints(name).items() if k not in shared_hints}
        for key in entry:
            if key in shared_hints:
                raise RecipeError(f"{where}.{key}", f"{key!r} is shared by every backbone; set it once as model.{key}")
        specific_cfg[name] = check_keys(entry, hints, where)
    section.backbone_config = specific_cfg
    shared.setdefault("dim", config_fields(section.backbone)["dim"].default)
    # Keys and types of every entry are checked above; values only for the active backbone, since
    # an inactive entry may legitimately not fit the shared keys (full_layers beyond a reduced depth).
    entry = specific_cfg.get(section.backbone, {})
    try:
        make_config(section.backbone, **shared, **entry)
    except (ValueError, TypeError) as err:
        raise RecipeError(f"model.backbone_config.{section.backbone}" if entry else "model", f"backbone {section.backbone!r}: {err}") from err
    return section, shared


def _validate_dataset(raw: dict) -> None:
    from modalities.datasets import get_dataset_loader, list_datasets

    if "name" not in raw:
        raise RecipeError("data.dataset.name", f"missing; one of {', '.join(list_datasets())}")
    name = raw["name"]
    if not isinstance(name, str):
        raise RecipeError("data.dataset.name", f"expected a string, got {name!r}")
    try:
        loader = get_dataset_loader(name)
    except ValueError as err:
        raise RecipeError("data.dataset.name", str(err)) from err
    params = inspect.signature(loader).parameters
    if "val_fraction" in raw:
        raise RecipeError("data.dataset.val_fraction", "set data.val_fraction instead (it is passed to loaders that take it)")
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        valid = [p.name for p in params.values() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "val_fraction"]
        for key in raw:
            if key != "name" and key not in valid:
                raise RecipeError(f"data.dataset.{key}", f"dataset {name!r} has no setting {key!r}{_hint(str(key), valid)} Valid: {', '.join(valid)}")


def _validate_curriculum(data: DataSection) -> None:
    for i, stage in enumerate(data.curriculum):
        where = f"data.curriculum[{i}]"
        stage = _mapping(stage, where)
        if set(stage) != {"epochs", "dataset"}:
            raise RecipeError(where, f"a stage is {{epochs: E, dataset: {{settings}}}}, got keys {sorted(stage)}")
        epochs = check_value(stage["epochs"], int, f"{where}.epochs")
        if epochs < 1:
            raise RecipeError(f"{where}.epochs", f"must be >= 1, got {epochs}")
        settings = _mapping(stage["dataset"], f"{where}.dataset")
        if "name" in settings:
            raise RecipeError(f"{where}.dataset.name", "every stage reads data.dataset.name; give only the settings that differ (e.g. difficulty)")
        try:
            _validate_dataset({**data.dataset, **settings})
        except RecipeError as err:
            raise RecipeError(err.path.replace("data.dataset", f"{where}.dataset"), str(err).split(": ", 1)[-1]) from err


def _validate_adapter(raw: dict, model: ModelSection, shared: dict) -> None:
    from modalities import list_adapters
    from modalities.base import adapter_config_class

    if "name" not in raw:
        raise RecipeError("data.adapter.name", f"missing; one of {', '.join(list_adapters())}")
    name = raw["name"]
    if name not in list_adapters():
        raise RecipeError("data.adapter.name", f"unknown adapter {name!r}{_hint(str(name), list_adapters())} Available: {', '.join(list_adapters())}")
    cls = adapter_config_class(name)
    hints = _hints(cls)
    settings = {k: v for k, v in raw.items() if k != "name"}
    if "dim" in settings:
        raise RecipeError("data.adapter.dim", f"the adapter width follows model.dim (={shared['dim']}); remove data.adapter.dim and set model.dim")
    settings = check_keys(settings, hints, "data.adapter", what="adapter setting")
    backbone_kwargs = {**shared, **model.backbone_config.get(model.backbone, {})}
    multiple = _length_multiple(model.backbone, backbone_kwargs)
    pad = settings.get("pad_to_multiple")
    if pad is not None and pad % multiple:
        raise RecipeError(
            "data.adapter.pad_to_multiple",
            f"{pad} does not satisfy backbone {model.backbone!r}, which needs sequence lengths divisible by {multiple}; "
            f"remove the key (it then follows the backbone) or use a multiple of {multiple}",
        )
    settings = {**settings, "dim": shared["dim"], "pad_to_multiple": pad or multiple}
    config = _construct(cls, settings, "data.adapter")
    max_len = shared.get("max_len")
    padded = -(-config.max_len // config.pad_to_multiple) * config.pad_to_multiple
    if max_len is not None and padded > max_len:
        raise RecipeError("model.max_len", f"{max_len} is below the adapter's longest padded output ({padded} tokens from data.adapter.max_len={config.max_len}); raise model.max_len or lower data.adapter.max_len")
    _check_backbone_plan(model.backbone, backbone_kwargs, padded)


def _check_backbone_plan(backbone: str, kwargs: dict, seq_len: int) -> None:
    """Fail before any data loads if the backbone cannot plan the adapter's longest input (MAELRE's merge plan)."""
    from maelre.registry import make_config

    config = make_config(backbone, **kwargs)
    check = getattr(config, "check_plan", None)
    if check is None:
        return
    try:
        check(seq_len + int(config.pool == "cls"))
    except ValueError as err:
        raise RecipeError(f"model.backbone_config.{backbone}", f"{err} (at data.adapter.max_len, {seq_len} tokens padded)") from err


def _check_trainer(trainer: TrainerConfig, schedule: ScheduleSection, data: DataSection) -> None:
    import torch

    on_cpu = trainer.accelerator == "cpu" or (trainer.accelerator == "auto" and not torch.cuda.is_available())
    if trainer.precision != "32" and on_cpu:
        if trainer.precision == "16-mixed":
            raise RecipeError("trainer.precision", "16-mixed needs a GPU; use '32' (or 'bf16-mixed') on CPU")
        warnings.warn("trainer.precision=bf16-mixed on CPU runs under CPU autocast, usually slower than '32'", RecipeWarning, stacklevel=3)
    if trainer.accelerator not in ("auto", "cpu", "gpu", "cuda"):
        raise RecipeError("trainer.accelerator", f"expected 'auto', 'cpu', 'gpu' or 'cuda', got {trainer.accelerator!r}")
    if isinstance(trainer.devices, str) and trainer.devices != "auto":
        raise RecipeError("trainer.devices", f"expected a device count or 'auto', got {trainer.devices!r}")
    if schedule.kind != "constant" and trainer.max_epochs is None and trainer.max_steps is None:
        raise RecipeError("schedule.kind", f"{schedule.kind!r} decays over a known number of steps, but only trainer.max_time bounds training; set trainer.max_steps/max_epochs or schedule.kind=constant")
    if trainer.early_stopping_patience is not None and data.val_fraction == 0:
        warnings.warn("trainer.early_stopping_patience needs validation data; with data.val_fraction=0 the dataset must bring its own val split", RecipeWarning, stacklevel=3)


# ---------------------------------------------------------------- loading
def parse_recipe(raw: Any, name: str = "recipe") -> Recipe:
    """Validate a raw recipe mapping into a ``Recipe`` (raises ``RecipeError``)."""
    raw = _mapping(raw, "")
    for key in raw:
        if key not in SECTIONS:
            raise RecipeError(str(key), f"unknown section{_hint(str(key), SECTIONS)} Valid: {', '.join(SECTIONS)}")
    recipe_name = check_value(raw.get("name", name), str, "name")
    description = check_value(raw.get("description", ""), str, "description")
    sections: dict[str, Any] = {}
    for key, cls in _SECTION_CLASSES.items():
        if key == "model":
            continue
        body = _mapping(raw.get(key), key)
        hints = _hints(cls)
        sections[key] = _construct(cls, check_keys(body, hints, key), key)
    model, shared = _validate_model(raw.get("model"))
    data: DataSection = sections["data"]
    data.dataset = _mapping(data.dataset, "data.dataset")
    data.adapter = _mapping(data.adapter, "data.adapter")
    _validate_dataset(data.dataset)
    _validate_curriculum(data)
    _validate_adapter(data.adapter, model, shared)
    if data.on_device and data.adapter.get("name") != "pixels":
        raise RecipeError("data.on_device", f"batches on the device are built for the 'pixels' adapter (grayscale images), not {data.adapter.get('name')!r}; set data.on_device: false")
    _check_trainer(sections["trainer"], sections["schedule"], data)
    return Recipe(name=recipe_name, description=description, model=model, shared=shared, **sections)


def apply_overrides(raw: dict, overrides: typing.Sequence[str]) -> dict:
    """Apply ``key.path=value`` overrides (values parsed as YAML) to a raw recipe mapping, in place.

    Paths into fixed sections must name existing keys (a typo fails with the closest
    key); paths into open mappings (``data.dataset``, ``data.adapter``,
    ``model.backbone_config.<name>``) may add keys, which full validation then checks.
    """
    shared = set(_shared_hints())
    for item in overrides:
        if "=" not in item:
            raise RecipeError("", f"--set {item!r}: expected KEY.PATH=VALUE, e.g. --set trainer.max_epochs=3")
        path, text = item.split("=", 1)
        keys = [k for k in path.strip().split(".")]
        if not all(keys):
            raise RecipeError(path, f"--set {item!r}: empty key in the path")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise RecipeError(path, f"--set {item!r}: value is not valid YAML ({err.problem})") from err
        _check_override_path(keys, shared, item)
        node = raw
        for i, key in enumerate(keys[:-1]):
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            elif not isinstance(child, dict):
                raise RecipeError(".".join(keys[: i + 1]), f"--set {item!r}: {'.'.join(keys[: i + 1])} is a value, not a section")
            node = child
        node[keys[-1]] = value
    return raw


def _check_override_path(keys: list[str], shared: set[str], item: str) -> None:
    top = keys[0]
    if top not in SECTIONS:
        raise RecipeError(top, f"--set {item!r}: unknown section{_hint(top, SECTIONS)} Valid: {', '.join(SECTIONS)}")
    if top in ("name", "description"):
        if len(keys) > 1:
            raise RecipeError(".".join(keys), f"--set {item!r}: {top} is a value, not a section")
        return
    if len(keys) == 1:
        raise RecipeError(top, f"--set {item!r}: name a key inside {top}, e.g. {top}.{next(iter(_hints(_SECTION_CLASSES[top])))}")
    key = keys[1]
    valid = set(_hints(_SECTION_CLASSES[top]))
    if top == "model":
        valid |= shared
    if key not in valid:
        if top == "model":
            raise _unknown_model_key(key, prefix=f"--set {item!r}: ")
        raise RecipeError(f"{top}.{key}", f"--set {item!r}: unknown key{_hint(key, valid)}")
    open_maps = {("data", "dataset"), ("data", "adapter"), ("model", "backbone_config")}
    if len(keys) > 2 and (top, key) not in open_maps:
        raise RecipeError(".".join(keys[:2]), f"--set {item!r}: {top}.{key} is a value, not a section")


def load_recipe(path: str | Path, overrides: typing.Sequence[str] = ()) -> Recipe:
    """Read a YAML recipe (``yaml.safe_load``), apply ``overrides`` and validate it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"recipe {path} not found; recipes ship in recipes/*.yaml")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise RecipeError("", f"{path} is not valid YAML: {err}") from err
    raw = apply_overrides(_mapping(raw, ""), overrides)
    return parse_recipe(raw, name=path.stem)


def recipe_from_dict(raw: dict, overrides: typing.Sequence[str] = (), name: str = "recipe") -> Recipe:
    """Validate an in-memory recipe (e.g. ``recipe.yaml`` from a checkpoint)."""
    import copy

    return parse_recipe(apply_overrides(copy.deepcopy(raw), overrides), name=name)


def describe_keys() -> dict[str, dict[str, str]]:
    """Every fixed recipe key and its type, per section (used by docs and ``maelre info``)."""
    def spell(hint: Any) -> str:
        return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")

    out = {key: {k: spell(v) for k, v in _hints(cls).items()} for key, cls in _SECTION_CLASSES.items()}
    out["model"] |= {k: spell(v) for k, v in _shared_hints().items()}
    return out


__all__ = ["Recipe", "RecipeError", "RecipeWarning", "apply_overrides", "describe_keys", "load_recipe", "parse_recipe", "recipe_from_dict"]
