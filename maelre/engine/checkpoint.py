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
import pickle
import shutil
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
import yaml
from lightning.fabric.plugins.io.checkpoint_io import CheckpointIO
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from maelre.engine.building import ModelSpec, build_model, model_from_spec  # noqa: F401  (ModelSpec, build_model re-exported)
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
_T = TypeVar("_T")


class CorruptCheckpointError(ValueError):
    """A checkpoint file exists but cannot be read (truncated, zero bytes, overwritten)."""


class CheckpointWarning(UserWarning):
    """A checkpoint was skipped because it is unreadable; an older one is used instead."""


# What the readers raise on a damaged file: torch.load (RuntimeError "failed finding central
# directory", EOFError, UnpicklingError), safetensors (SafetensorError), JSON/YAML/UTF-8 decoding.
_READ_ERRORS = (OSError, EOFError, RuntimeError, ValueError, pickle.UnpicklingError, SafetensorError, yaml.YAMLError)


def _checked(path: Path, read: Callable[[Path], _T]) -> _T:
    """``read(path)``, with a damaged file reported as ``CorruptCheckpointError`` naming it (a missing one stays ``FileNotFoundError``)."""
    try:
        return read(path)
    except FileNotFoundError:
        raise
    except _READ_ERRORS as err:
        detail = " ".join(str(err).split())
        raise CorruptCheckpointError(f"{path} cannot be read ({type(err).__name__}{': ' + detail if detail else ''})") from err


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
    for key, name in (("spec", SPEC), ("classes", CLASSES), ("preprocessing", PREPROCESSING)):
        if (directory / name).is_file():
            extras[key] = _checked(directory / name, read_json)
    if (directory / RECIPE).is_file():
        extras["recipe"] = _checked(directory / RECIPE, _read_recipe)
    return extras


def _read_recipe(path: Path) -> dict:
    """A checkpoint's ``recipe.yaml``; ``ValueError`` unless it holds a mapping (an emptied file is damage, not "no recipe")."""
    recipe = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(recipe, dict):
        raise ValueError("empty file" if recipe is None else f"a YAML {type(recipe).__name__}, not a recipe mapping")
    return recipe


def _load_training_state(path: Path, map_location: Any = "cpu") -> dict[str, Any]:
    return torch.load(path, map_location=map_location, weights_only=True)


def verify_checkpoint(directory: str | os.PathLike, training_state: bool = True) -> None:
    """Read every file of a checkpoint; ``CorruptCheckpointError`` naming the first that is unreadable.

    ``training_state``: also read ``training_state.pt`` (needed to resume, not to predict).
    """
    directory = Path(directory)
    _read_extras(directory)
    _checked(directory / WEIGHTS, load_weights)
    if (directory / META).is_file():
        _checked(directory / META, read_json)
    if training_state:
        _checked(directory / TRAINING_STATE, _load_training_state)


def newest_good_checkpoint(
    candidates: Iterable[Path], training_state: bool = True
) -> tuple[Path | None, list[CorruptCheckpointError]]:
    """The first of ``candidates`` (give them newest first) that ``verify_checkpoint`` accepts, and the errors of those before it."""
    errors: list[CorruptCheckpointError] = []
    for candidate in candidates:
        try:
            verify_checkpoint(candidate, training_state)
        except CorruptCheckpointError as err:
            errors.append(err)
            continue
        return candidate, errors
    return None, errors


def resume_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The checkpoint to resume ``run_dir`` from: the newest one that reads back completely, or ``None`` if there is none.

    An unreadable newest checkpoint (a kill or a full disk while it was written elsewhere,
    a damaged copy) is skipped with a ``CheckpointWarning`` naming it and the one used
    instead; resuming from an older checkpoint is exact, it only trains those steps again.
    Raises ``CorruptCheckpointError`` when every checkpoint is unreadable.
    """
    resumable = [p for p in find_checkpoints(run_dir) if (p / TRAINING_STATE).is_file()]
    if not resumable:
        return None
    good, errors = newest_good_checkpoint(reversed(resumable))
    if good is None:
        raise CorruptCheckpointError(
            f"cannot resume {run_dir}: no checkpoint reads back ({'; '.join(map(str, errors))}); "
            "start a new run (without --resume, or with another --run-dir)"
        )
    if errors:
        warnings.warn(
            f"the newest checkpoint {resumable[-1]} is unreadable ({errors[0]}); resuming from {good}, the newest good one "
            "(the steps after it are trained again)", CheckpointWarning, stacklevel=2,
        )
    return good


def remove_stale_temporaries(directory: str | os.PathLike) -> list[Path]:
    """Delete the ``.tmp-*`` folders a killed checkpoint write left in ``directory``; returns what was removed.

    Call it only before training starts: while a run is saving, its temporary is in use.
    """
    directory = Path(directory)
    stale = sorted(p for p in directory.glob(".tmp-*") if p.is_dir()) if directory.is_dir() else []
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


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


def _corrupt(directory: Path, err: CorruptCheckpointError) -> CorruptCheckpointError:
    """``err`` of a damaged checkpoint ``directory``, pointing to the newest good checkpoint beside it."""
    others = [p for p in reversed(find_checkpoints(directory.parent)) if p != directory]
    good, _ = newest_good_checkpoint(others, training_state=False)
    hint = f"the newest good checkpoint is {good}: pass that path instead" if good else "no other checkpoint beside it reads back: train again"
    return CorruptCheckpointError(f"checkpoint {directory} is corrupt: {err}; {hint}")


def checked_weights(directory: Path) -> dict[str, Tensor]:
    """The weights of checkpoint ``directory``; a damaged file is a ``CorruptCheckpointError`` naming the newest good checkpoint."""
    try:
        return _checked(directory / WEIGHTS, load_weights)
    except CorruptCheckpointError as err:
        raise _corrupt(directory, err) from err


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
    from modalities import create_adapter

    directory = resolve_checkpoint(path)
    try:
        extras = _read_extras(directory)
        weights = _checked(directory / WEIGHTS, load_weights)
        meta = _checked(directory / META, read_json) if (directory / META).is_file() else {}
    except CorruptCheckpointError as err:
        raise _corrupt(directory, err) from err
    spec = ModelSpec.from_dict(extras["spec"])
    if "pretrain" in spec.extra:
        raise ValueError(f"{directory} holds a masked-token pretraining model, not a classifier; fine-tune it with maelre fit RECIPE --init-from {path}")
    adapter = create_adapter(spec.adapter, **spec.adapter_config)
    adapter.load_preprocessing_state(extras.get("preprocessing", {}))
    model = model_from_spec(adapter, spec)
    model.load_state_dict(weights, strict=True)
    model.to(map_location).eval()
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

    def order(p: Path) -> tuple[int, bool, float] | None:
        # At equal steps the epoch-end step-* checkpoint comes after "best", which is
        # written earlier in the same step (at validation end).
        try:
            step = int(read_json(p / META).get("global_step", -1))
        except (ValueError, AttributeError):  # damaged meta.json: the name still tells step-* checkpoints' step
            step = int(p.name[5:]) if p.name.startswith("step-") and p.name[5:].isdigit() else -1
        except FileNotFoundError:  # removed since it was listed (another process pruned it)
            return None
        try:
            return step, p.name.startswith("step-"), (p / META).stat().st_mtime
        except FileNotFoundError:
            return None

    keyed = [(key, p) for p in found if (key := order(p)) is not None]
    return [p for _, p in sorted(keyed, key=lambda kp: kp[0])]


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
        state = _checked(directory / TRAINING_STATE, lambda p: _load_training_state(p, map_location or "cpu"))
        weights = _checked(directory / WEIGHTS, load_weights)
        state["state_dict"] = OrderedDict((_LIGHTNING_PREFIX + k, v) for k, v in weights.items())
        state[EXTRAS_KEY] = _read_extras(directory)
        return state

    def remove_checkpoint(self, path: str | os.PathLike) -> None:
        shutil.rmtree(path, ignore_errors=True)
