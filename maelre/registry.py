"""Backbone registry: ``create_backbone(name, **config)`` and ``list_backbones()``."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, TypeVar

from maelre.backbones.base import Backbone, BackboneConfig
from maelre.suggest import did_you_mean

_REGISTRY: dict[str, type[Backbone]] = {}
B = TypeVar("B", bound=type[Backbone])


def register_backbone(name: str) -> Callable[[B], B]:
    """Class decorator adding a ``Backbone`` subclass to the registry under ``name``."""

    def wrap(cls: B) -> B:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"backbone {name!r} is already registered by {_REGISTRY[name].__qualname__}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def _ensure_loaded() -> None:
    import maelre.backbones  # noqa: F401  (importing registers every built-in backbone)


def list_backbones() -> list[str]:
    """Names accepted by ``create_backbone``, sorted."""
    _ensure_loaded()
    return sorted(_REGISTRY)


def get_backbone_class(name: str) -> type[Backbone]:
    _ensure_loaded()
    if name not in _REGISTRY:
        raise ValueError(f"unknown backbone {name!r}{did_you_mean(name, _REGISTRY)} Available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def config_fields(name: str) -> dict[str, dataclasses.Field]:
    """The config fields (name -> dataclass field) of backbone ``name``."""
    return {f.name: f for f in dataclasses.fields(get_backbone_class(name).config_class)}


def make_config(name: str, **overrides: Any) -> BackboneConfig:
    """Build backbone ``name``'s config dataclass, rejecting unknown keys with a suggestion."""
    fields = config_fields(name)
    for key in overrides:
        if key not in fields:
            raise ValueError(f"backbone {name!r} has no config key {key!r}{did_you_mean(key, fields)} Valid keys: {', '.join(fields)}")
    return get_backbone_class(name).config_class(**overrides)


def create_backbone(name: str, config: BackboneConfig | None = None, **overrides: Any) -> Backbone:
    """Instantiate a registered backbone.

    Args:
        name: registry name (see ``list_backbones()``).
        config: a ready config dataclass; if given, ``overrides`` replace its fields.
        **overrides: config fields, e.g. ``dim=128, depth=4``.
    """
    cls = get_backbone_class(name)
    if config is None:
        config = make_config(name, **overrides)
    elif overrides:
        config = dataclasses.replace(config, **overrides)
    return cls(config)
