"""Dataset registry: ``load_dataset(name, **kwargs) -> DatasetSplits`` and ``list_datasets()``.

A loader is a function ``load_x(root=None, **settings) -> DatasetSplits`` registered with
the ``@register_dataset("x")`` decorator; ``load_dataset`` checks the settings against
the loader's signature, so a misspelt one fails with a suggestion instead of being ignored.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, TypeVar

from maelre.suggest import did_you_mean
from modalities.base import DatasetSplits

_DATASETS: dict[str, Callable[..., DatasetSplits]] = {}
L = TypeVar("L", bound=Callable[..., DatasetSplits])


def register_dataset(name: str) -> Callable[[L], L]:
    """Function decorator adding loader ``def load_x(root=None, **kwargs) -> DatasetSplits`` under ``name``.

    Names are case-insensitive; registering a second loader under a taken name is an error.
    """
    key = name.lower()

    def wrap(loader: L) -> L:
        if key in _DATASETS and _DATASETS[key] is not loader:
            raise ValueError(f"dataset {name!r} is already registered by {_DATASETS[key].__qualname__}")
        _DATASETS[key] = loader
        return loader

    return wrap


def list_datasets() -> list[str]:
    """Names accepted by ``load_dataset``, sorted."""
    return sorted(_DATASETS)


def get_dataset_loader(name: str) -> Callable[..., DatasetSplits]:
    """The loader registered under ``name`` (case-insensitive); ``ValueError`` with a suggestion if unknown."""
    key = name.lower()
    if key not in _DATASETS:
        raise ValueError(f"unknown dataset {name!r}{did_you_mean(key, _DATASETS)} Available: {', '.join(sorted(_DATASETS))}")
    return _DATASETS[key]


def load_dataset(name: str, /, **kwargs: Any) -> DatasetSplits:
    """Load dataset ``name`` with the loader's settings ``**kwargs`` (e.g. ``root=``, ``val_fraction=``).

    Raises:
        ValueError: unknown dataset or a setting the loader does not take (with the closest valid name).
    """
    loader = get_dataset_loader(name)
    params = inspect.signature(loader).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        valid = [p.name for p in params.values() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        for key in kwargs:
            if key not in valid:
                raise ValueError(f"dataset {name!r} has no setting {key!r}{did_you_mean(key, valid)} Valid: {', '.join(valid)}")
    splits = loader(**kwargs)
    if not isinstance(splits, DatasetSplits):
        raise TypeError(f"loader {loader.__qualname__} of dataset {name!r} returned {type(splits).__name__}, not DatasetSplits")
    return splits


# Importing the loader modules registers them (after register_dataset exists).
from modalities.datasets import audio, compact, images, lra, ucr  # noqa: E402, F401

__all__ = ["DatasetSplits", "get_dataset_loader", "list_datasets", "load_dataset", "register_dataset"]
