"""Recipe validation: each value checked against its section's type hints, then the cross-checks between sections
(model keys per backbone, dataset and adapter settings, curriculum, the backbone's plan, trainer vs schedule).
"""
from __future__ import annotations

import dataclasses
import inspect
import math
import os
import types
import typing
import warnings
from typing import Any

from maelre.engine.fit_types import TrainerConfig
from maelre.model import check_pool_divisor
from maelre.recipe_schema import DataSection, ModelSection, RecipeError, RecipeWarning, ScheduleSection, _hint, _length_multiple

def _join(path: str, key: str | int) -> str:
    return f"{path}[{key}]" if isinstance(key, int) else (f"{path}.{key}" if path else key)


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
            raise RecipeError(path, f"expected an integer, got {value!r}{_quoted_number_hint(value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecipeError(path, f"expected a number, got {value!r}{_quoted_number_hint(value)}")
        if not math.isfinite(value):
            raise RecipeError(path, f"expected a finite number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise RecipeError(path, f"expected a string, got {value!r}")
        return value
    if isinstance(hint, type) and not isinstance(value, hint):
        raise RecipeError(path, f"expected {hint.__name__}, got {value!r}")
    return value


def _quoted_number_hint(value: Any) -> str:
    """A hint for a number written as a string (``lr: "2e-3"``): YAML keeps quoted values as strings."""
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return ""
        return " (a string: remove the quotes to make it a number)"
    return ""


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


def _offending(path: str, err: Exception, keys: typing.Iterable[str]) -> str:
    """``path.<key>`` when ``err``'s message starts with one of ``keys`` (config checks lead with the key), after an
    ``owner:`` prefix if any (adapter configs: ``"timeseries: nan_policy must be ..."``), else ``path``."""
    words = str(err).split(" ", 2)
    key = words[1] if len(words) > 1 and words[0].endswith(":") else words[0]
    return _join(path, key) if key in keys else path


def _construct(cls: type, kwargs: dict, path: str) -> Any:
    try:
        return cls(**kwargs)
    except (ValueError, TypeError, OverflowError) as err:
        raise RecipeError(_offending(path, err, kwargs), str(err)) from err


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
        config = make_config(section.backbone, **shared, **entry)
    except (ValueError, TypeError, OverflowError) as err:
        where = _offending("model", err, shared)
        if where == "model" and entry:
            where = _offending(f"model.backbone_config.{section.backbone}", err, entry)
        raise RecipeError(where, f"backbone {section.backbone!r}: {err}") from err
    try:
        check_pool_divisor(section.pool_divisor, config.pool)
    except ValueError as err:
        raise RecipeError("model.pool_divisor", str(err)) from err
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
    hints = _loader_hints(loader)
    for key, value in raw.items():
        if key != "name" and key in hints:
            check_value(value, hints[key], f"data.dataset.{key}")


def _loader_hints(loader: typing.Callable) -> dict[str, Any]:
    """A dataset loader's parameter types as recipe types: a path (``str | os.PathLike``) is a YAML string."""
    try:
        hints = typing.get_type_hints(loader)
    except (NameError, TypeError):  # an annotation that does not resolve: leave the values to the loader
        return {}
    out = {}
    for key, hint in hints.items():
        args = typing.get_args(hint)
        if typing.get_origin(hint) in (typing.Union, types.UnionType) and os.PathLike in args:
            hint = typing.Union[tuple(a for a in args if a is not os.PathLike)]
        out[key] = hint
    out.pop("return", None)
    return out


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
    try:
        multiple = _length_multiple(model.backbone, backbone_kwargs)
    except (ValueError, TypeError, RuntimeError, OverflowError) as err:  # from torch, e.g. a size beyond int64
        first_line = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise RecipeError("model", f"backbone {model.backbone!r} cannot be built with these settings ({first_line}); check the sizes in model") from err
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
    if (trainer.devices != "auto") if isinstance(trainer.devices, str) else trainer.devices < 1:
        raise RecipeError("trainer.devices", f"expected a device count (>= 1) or 'auto', got {trainer.devices!r}")
    if schedule.kind != "constant" and trainer.max_epochs is None and trainer.max_steps is None:
        raise RecipeError("schedule.kind", f"{schedule.kind!r} decays over a known number of steps, but only trainer.max_time bounds training; set trainer.max_steps/max_epochs or schedule.kind=constant")
    if trainer.early_stopping_patience is not None and data.val_fraction == 0:
        warnings.warn("trainer.early_stopping_patience needs validation data; with data.val_fraction=0 the dataset must bring its own val split", RecipeWarning, stacklevel=3)
