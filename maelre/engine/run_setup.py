"""What a run needs before training: its data (splits, classes, modality), its directory (versioned, or the one resumed) and its fitted adapter.

Shared by ``maelre.engine.runner`` (``maelre fit``) and ``maelre.engine.pretrain`` (``maelre pretrain``).
"""
from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from maelre.engine.checkpoint import PREPROCESSING, SPEC, latest_checkpoint, read_json
from maelre.engine.data import split_validation, subsample
from maelre.recipe import Recipe, RecipeError


@dataclass
class RunData:
    """The splits a run trains and tests on (after validation carving and subsetting)."""

    train: Sequence[tuple[Any, int]]
    val: Sequence[tuple[Any, int]] | None
    test: Sequence[tuple[Any, int]]
    classes: list[str]
    modality: str
    meta: dict


def load_run_data(recipe: Recipe) -> RunData:
    """Load ``recipe``'s dataset; carve validation if the loader gave none; apply the sample caps."""
    from modalities.datasets import get_dataset_loader, load_dataset

    data, seed = recipe.data, recipe.trainer.seed
    kwargs = recipe.dataset_kwargs()
    takes_val = "val_fraction" in inspect.signature(get_dataset_loader(recipe.dataset_name())).parameters
    if takes_val and data.val_fraction > 0:
        kwargs["val_fraction"] = data.val_fraction
    splits = load_dataset(recipe.dataset_name(), **kwargs)
    train, val = splits.train, splits.val
    if not val and data.val_fraction > 0:
        train, val = split_validation(train, data.val_fraction, seed)
    _check_two_tower(recipe, splits.modality)
    return RunData(
        train=subsample(train, data.max_train_samples, seed),
        val=subsample(val, data.max_eval_samples, seed) if val else None,
        test=subsample(splits.test, data.max_eval_samples, seed),
        classes=list(splits.classes),
        modality=splits.modality,
        meta=dict(splits.meta),
    )


def training_samples(recipe: Recipe, data: RunData) -> Sequence[tuple[Any, int]]:
    """``data.train`` as trained on: after the ``data.curriculum`` stages, with ``data.augment_inputs`` applied.

    Each curriculum stage loads the recipe's dataset with the stage's settings (all its
    splits are built; only the training split is read) and the same sample caps.
    """
    from maelre.engine.train_data import AugmentedSamples, CurriculumSamples

    train = data.train
    if recipe.data.curriculum:
        stages = []
        for stage in recipe.data.curriculum:
            data_section = dataclasses.replace(recipe.data, dataset={**recipe.data.dataset, **stage["dataset"]}, curriculum=[])
            stages.append(load_run_data(dataclasses.replace(recipe, data=data_section)).train)
        train = CurriculumSamples([*stages, train], [stage["epochs"] for stage in recipe.data.curriculum])
    if recipe.data.augment_inputs:
        train = AugmentedSamples(train, recipe.data.augment_inputs)
    return train


PAIR_SUFFIX = "_pair"
"""Datasets of ``(x1, x2)`` pairs name their modality ``<adapter modality>_pair`` (e.g. ``text_pair``)."""


def _check_two_tower(recipe: Recipe, modality: str) -> None:
    """Pair data needs the two-tower head and single inputs the plain one."""
    pairs = modality.endswith(PAIR_SUFFIX)
    if pairs != recipe.model.two_tower:
        hint = "true: its inputs are (x1, x2) pairs" if pairs else "false: its inputs are single sequences"
        raise RecipeError("model.two_tower", f"dataset {recipe.dataset_name()!r} ({modality}) needs model.two_tower={hint}")


def _check_same_run(path: Path, resolved: dict) -> None:
    """Resuming needs the recipe the run started with (data and model must match; budgets may change)."""
    saved_file = path / "recipe.yaml"
    if not saved_file.is_file():
        return
    try:  # as written (yaml.safe_dump), so read back the same way
        saved = yaml.safe_load(saved_file.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        saved = ValueError(" ".join(str(err).split()))
    if not isinstance(saved, dict):
        why = saved if isinstance(saved, ValueError) else ("it is empty" if saved is None else f"it holds a YAML {type(saved).__name__}, not a recipe")
        raise ValueError(
            f"cannot check the run being resumed: {saved_file} is damaged ({why}); every checkpoint keeps a copy: "
            f"copy {path / 'checkpoints' / '<newest step-N>' / 'recipe.yaml'} over it, then resume again"
        )
    for section in ("data", "model"):
        if saved.get(section) != resolved.get(section):
            keys = sorted(k for k in {*saved.get(section, {}), *resolved.get(section, {})} if saved.get(section, {}).get(k) != resolved.get(section, {}).get(k))
            raise RecipeError(section, f"differs from the run being resumed ({path / 'recipe.yaml'}) at {', '.join(f'{section}.{k}' for k in keys)}; resume with the same recipe and --set options")


def run_versions(base: Path) -> list[Path]:
    """The ``base/version_N`` run folders, by increasing N."""
    if not base.is_dir():
        return []
    found = [(int(p.name.removeprefix("version_")), p) for p in base.glob("version_*") if p.name.removeprefix("version_").isdigit()]
    return [p for _, p in sorted(found)]


def resolve_run_dir(recipe: Recipe, run_dir: str | Path | None, resume: bool) -> Path:
    """The directory of this run.

    An explicit ``run_dir`` is used as is. Otherwise ``output.run_dir`` (default
    ``runs/<name>``) gets a fresh ``version_N`` subfolder when ``output.versioned``;
    ``resume`` picks the newest existing version instead. Starting a new run in a
    directory that already holds checkpoints is an error (resume it or pick another).
    """
    if run_dir is not None:
        path = Path(run_dir)
    elif recipe.output.versioned:
        base, versions = recipe.run_dir(), run_versions(recipe.run_dir())
        if resume:
            if not versions:
                raise FileNotFoundError(f"nothing to resume under {base}: no version_N run folders")
            path = versions[-1]
        else:
            path = base / f"version_{int(versions[-1].name.removeprefix('version_')) + 1 if versions else 0}"
    else:
        path = recipe.run_dir()
    if resume and latest_checkpoint(path) is None:
        raise FileNotFoundError(f"nothing to resume in {path}: no checkpoint with training state under {path / 'checkpoints'}")
    if not resume and (path / "checkpoints").is_dir() and any(not p.name.startswith(".") for p in (path / "checkpoints").iterdir()):
        raise FileExistsError(f"{path} already holds a run; pass --resume to continue it, or choose another --run-dir")
    return path



def _fitted_adapter(recipe: Recipe, train: Sequence[tuple[Any, int]], modality: str, resume_from: Path | None) -> Any:
    """Create the adapter; fit it on train, or restore the state saved with ``resume_from`` (resumed or pretrained run)."""
    from maelre.engine.fit import prepare_adapter
    from modalities import create_adapter

    try:
        adapter = create_adapter(recipe.adapter_name(), **recipe.adapter_kwargs())
    except ValueError as err:
        raise RecipeError("data.adapter", str(err)) from err
    if adapter.modality != modality.removesuffix(PAIR_SUFFIX):
        raise RecipeError("data.adapter.name", f"adapter {recipe.adapter_name()!r} is for {adapter.modality} data but dataset {recipe.dataset_name()!r} is {modality}")
    if resume_from is not None:
        adapter.load_preprocessing_state(read_json(resume_from / PREPROCESSING))
        return adapter
    return prepare_adapter(recipe.adapter_name(), recipe.adapter_kwargs(), train, recipe.model.two_tower)


def run_backbone_kwargs(recipe: Recipe, resume_from: Path | None) -> dict[str, Any]:
    """The backbone's settings: the recipe's, or, when resuming, those the run started with.

    A resumed run rebuilds its backbone from its checkpoint's ``model.json`` (every field,
    defaults included), so a library default that changed since the run started cannot
    change the model under its saved weights. The recipe itself is checked to be the same.
    """
    if resume_from is None:
        return recipe.backbone_kwargs()
    spec = read_json(resume_from / SPEC)
    if spec["backbone"] != recipe.model.backbone:
        raise RecipeError("model.backbone", f"the run in {resume_from.parent.parent} trained {spec['backbone']!r}, not {recipe.model.backbone!r}")
    return dict(spec["backbone_config"])
