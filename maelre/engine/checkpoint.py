"""Checkpoints without pickle: safetensors weights, JSON/YAML metadata, a ``weights_only`` state file.

A checkpoint is a directory, written into a temporary sibling and moved into place
with ``os.replace`` (a reader sees either the old or the new checkpoint, never half
of one)::

    model.safetensors     SequenceClassifier weights (loadable without Lightning)
    model.json            ModelSpec: backbone/adapter names + configs, classes count, head
    preprocessing.json    adapter.preprocessing_state()
    classes.json          class names, index order
    recipe.yaml           the resolved recipe (runs started from a recipe)
    meta.json             global step, epoch, metrics at save time, format version
    training_state.pt     resume state: optimizer, scheduler, loop progress, data-loader
                          position, RNG states -- tensors and primitive containers only,
                          read with ``torch.load(weights_only=True)``

``SafeCheckpointIO`` plugs this layout into Lightning (``Trainer(plugins=[...])``):
Lightning's own checkpoint dict is split into these files on save and reassembled on
load, so ``trainer.fit(ckpt_path=DIR)`` resumes exactly while nothing is unpickled.
"""
from __future__ import annotations

import json
import os
import shutil
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from lightning.fabric.plugins.io.checkpoint_io import CheckpointIO
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from maelre.fileio import (  # noqa: F401  (re-exported)
    atomic_directory,
    read_json,
    write_json_atomic,
    write_text_atomic,
)

FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
SPEC = "model.json"
PREPROCESSING = "preprocessing.json"
CLASSES = "classes.json"
RECIPE = "recipe.yaml"
META = "meta.json"
TRAINING_STATE = "training_state.pt"
EXTRAS_KEY = "maelre"  # where callbacks put spec/classes/recipe in Lightning's checkpoint dict
_LIGHTNING_PREFIX = "model."  # ClassificationTask keeps the classifier in ``self.model``


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
    """

    backbone: str
    backbone_config: dict
    adapter: str
    adapter_config: dict
    num_classes: int
    head_dropout: float = 0.0
    two_tower: bool = False
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelSpec":
        return cls(**data)


# ---------------------------------------------------------------- weights_only guard
_LEAVES = (Tensor, int, float, bool, str, bytes, type(None), torch.dtype, torch.device)


def check_weights_only_safe(obj: Any, where: str = "checkpoint") -> None:
    """Raise ``TypeError`` naming the key path of anything ``torch.load(weights_only=True)`` would refuse.

    Allowed: tensors, numbers, strings, ``None``, dtypes/devices, and dicts/lists/tuples/sets of them.
    """
    if isinstance(obj, _LEAVES):
        return
    if isinstance(obj, (dict, OrderedDict)):
        for key, value in obj.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"{where}: key {key!r} of type {type(key).__name__} cannot be stored without pickle")
            check_weights_only_safe(value, f"{where}.{key}")
        return
    if isinstance(obj, (list, tuple, set)):
        for i, value in enumerate(obj):
            check_weights_only_safe(value, f"{where}[{i}]")
        return
    raise TypeError(f"{where}: a {type(obj).__qualname__} cannot be stored without pickle; convert it to tensors or primitives")


# ---------------------------------------------------------------- weights
def _safetensors_ready(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Detached, contiguous CPU tensors; tensors sharing storage are cloned (safetensors refuses aliases)."""
    out, seen = {}, set()
    for key, value in state.items():
        tensor = value.detach().cpu().contiguous()
        ptr = tensor.untyped_storage().data_ptr() if tensor.numel() else None
        if ptr is not None and ptr in seen:
            tensor = tensor.clone()
        elif ptr is not None:
            seen.add(ptr)
        out[key] = tensor
    return out


def save_weights(state: dict[str, Tensor], path: str | os.PathLike) -> None:
    save_file(_safetensors_ready(state), str(path), metadata={"format": "pt", "maelre_format": str(FORMAT_VERSION)})


def load_weights(path: str | os.PathLike) -> dict[str, Tensor]:
    if not Path(path).is_file():
        raise FileNotFoundError(f"no weights file at {path}; is this a maelre checkpoint directory?")
    return load_file(str(path))


# ---------------------------------------------------------------- extras (spec, classes, ...)
def _write_extras(directory: Path, extras: dict) -> None:
    if "spec" in extras:
        (directory / SPEC).write_text(json.dumps(extras["spec"], indent=2) + "\n", encoding="utf-8")
    if "classes" in extras:
        (directory / CLASSES).write_text(json.dumps(list(extras["classes"]), indent=2) + "\n", encoding="utf-8")
    if "preprocessing" in extras:
        (directory / PREPROCESSING).write_text(json.dumps(extras["preprocessing"]) + "\n", encoding="utf-8")
    if extras.get("recipe") is not None:
        (directory / RECIPE).write_text(yaml.safe_dump(extras["recipe"], sort_keys=False), encoding="utf-8")


def _read_extras(directory: Path) -> dict:
    extras: dict[str, Any] = {}
    if (directory / SPEC).is_file():
        extras["spec"] = read_json(directory / SPEC)
    if (directory / CLASSES).is_file():
        extras["classes"] = read_json(directory / CLASSES)
    if (directory / PREPROCESSING).is_file():
        extras["preprocessing"] = read_json(directory / PREPROCESSING)
    if (directory / RECIPE).is_file():
        extras["recipe"] = yaml.safe_load((directory / RECIPE).read_text(encoding="utf-8"))
    return extras


def save_model(
    directory: str | os.PathLike,
    model: nn.Module,
    spec: ModelSpec,
    classes: list[str],
    recipe: dict | None = None,
    meta: dict | None = None,
) -> Path:
    """Write a standalone model checkpoint (no training state) atomically into ``directory``."""
    directory = Path(directory)
    with atomic_directory(directory) as tmp:
        save_weights(model.state_dict(), tmp / WEIGHTS)
        extras = {"spec": spec.to_dict(), "classes": classes, "preprocessing": model.adapter.preprocessing_state(), "recipe": recipe}
        _write_extras(tmp, extras)
        (tmp / META).write_text(json.dumps({"format_version": FORMAT_VERSION, **(meta or {})}, indent=2) + "\n", encoding="utf-8")
    return directory


@dataclass
class LoadedModel:
    """A classifier restored from a checkpoint directory, in eval mode."""

    model: nn.Module
    spec: ModelSpec
    classes: list[str]
    recipe: dict | None
    meta: dict
    path: Path


def is_checkpoint(path: str | os.PathLike) -> bool:
    return (Path(path) / WEIGHTS).is_file() and (Path(path) / SPEC).is_file()


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild the classifier saved at ``path`` (a checkpoint, ``checkpoints/`` or run directory).

    The adapter is created from its registry name and config, its preprocessing state
    restored, and the weights loaded strictly from safetensors.
    """
    from maelre.engine.fit import build_model
    from modalities import create_adapter

    directory = resolve_checkpoint(path)
    extras = _read_extras(directory)
    spec = ModelSpec.from_dict(extras["spec"])
    if "pretrain" in spec.extra:
        raise ValueError(f"{directory} holds a masked-token pretraining model, not a classifier; fine-tune it with maelre fit RECIPE --init-from {path}")
    adapter = create_adapter(spec.adapter, **spec.adapter_config)
    adapter.load_preprocessing_state(extras.get("preprocessing", {}))
    model = build_model(adapter, spec.backbone, spec.backbone_config, spec.num_classes, spec.head_dropout, spec.two_tower)
    model.load_state_dict(load_weights(directory / WEIGHTS), strict=True)
    model.to(map_location).eval()
    meta = read_json(directory / META) if (directory / META).is_file() else {}
    classes = extras.get("classes") or [str(i) for i in range(spec.num_classes)]
    return LoadedModel(model, spec, classes, extras.get("recipe"), meta, directory)


# ---------------------------------------------------------------- finding checkpoints
def find_checkpoints(directory: str | os.PathLike) -> list[Path]:
    """Complete checkpoint directories under ``directory`` (or ``directory/checkpoints``), oldest step first."""
    root = Path(directory)
    if (root / "checkpoints").is_dir():
        root = root / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and is_checkpoint(p) and (p / META).is_file()]

    def order(p: Path) -> tuple[int, bool, float]:
        # At equal steps the epoch-end step-* checkpoint comes after "best", which is
        # written earlier in the same step (at validation end).
        meta = read_json(p / META)
        return int(meta.get("global_step", -1)), p.name.startswith("step-"), (p / META).stat().st_mtime

    return sorted(found, key=order)


def latest_checkpoint(directory: str | os.PathLike) -> Path | None:
    """The checkpoint with the highest global step (the one to resume from), or ``None``."""
    found = [p for p in find_checkpoints(directory) if (p / TRAINING_STATE).is_file()]
    return found[-1] if found else None


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint directory from a checkpoint, ``checkpoints/`` or run directory (``best`` preferred, else latest)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint path {path} does not exist")
    if is_checkpoint(path):
        return path
    root = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    if is_checkpoint(root / "best"):
        return root / "best"
    found = find_checkpoints(root)
    if not found:
        raise FileNotFoundError(f"no maelre checkpoint in {path}; expected {WEIGHTS} and {SPEC} in it or in a checkpoints/ subfolder")
    return found[-1]


# ---------------------------------------------------------------- Lightning plugin
class SafeCheckpointIO(CheckpointIO):
    """Lightning ``CheckpointIO`` writing the pickle-free directory layout above.

    ``save_checkpoint`` splits Lightning's checkpoint dict: ``state_dict`` (minus the
    ``model.`` prefix of ``ClassificationTask``) -> safetensors, the ``maelre`` extras
    -> JSON/YAML, everything else -> ``training_state.pt`` after checking it holds only
    tensors and primitives. ``load_checkpoint`` reverses this with
    ``torch.load(weights_only=True)``.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("SafeCheckpointIO takes no storage_options")
        rest = dict(checkpoint)
        weights = rest.pop("state_dict")
        extras = rest.pop(EXTRAS_KEY, {})
        stray = [k for k in weights if not k.startswith(_LIGHTNING_PREFIX)]
        if stray:
            raise ValueError(f"expected every weight under {_LIGHTNING_PREFIX!r} (ClassificationTask.model), found {stray[:3]}")
        check_weights_only_safe(rest, "training state")
        meta = {
            "format_version": FORMAT_VERSION,
            "global_step": int(rest.get("global_step", 0)),
            "epoch": int(rest.get("epoch", 0)),
            "lightning_version": rest.get("pytorch-lightning_version"),
            **extras.get("meta", {}),
        }
        with atomic_directory(path) as tmp:
            save_weights({k[len(_LIGHTNING_PREFIX) :]: v for k, v in weights.items()}, tmp / WEIGHTS)
            torch.save(rest, tmp / TRAINING_STATE)
            _write_extras(tmp, extras)
            (tmp / META).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")

    def load_checkpoint(self, path: str | os.PathLike, map_location: Any | None = None, weights_only: bool | None = None) -> dict[str, Any]:
        directory = Path(path)
        if not (directory / TRAINING_STATE).is_file():
            raise FileNotFoundError(f"{directory} holds no {TRAINING_STATE}; only checkpoints written during training can be resumed")
        state = torch.load(directory / TRAINING_STATE, map_location=map_location or "cpu", weights_only=True)
        weights = load_weights(directory / WEIGHTS)
        state["state_dict"] = OrderedDict((_LIGHTNING_PREFIX + k, v) for k, v in weights.items())
        state[EXTRAS_KEY] = _read_extras(directory)
        return state

    def remove_checkpoint(self, path: str | os.PathLike) -> None:
        shutil.rmtree(path, ignore_errors=True)
