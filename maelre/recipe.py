"""Recipes: a YAML file describing one training run, validated completely before anything runs.

Sections (every key is documented in ``docs/recipes.md``)::

    name: audio_fsdd                  # optional; default: the file name
    data:     dataset: {name, **loader settings}   adapter: {name, **adapter settings}
              batch_size, eval_batch_size, num_workers, val_fraction, bucket_by_length,
              cache, max_train_samples, max_eval_samples, on_device, augment, augment_inputs, curriculum
    model:    backbone, <shared backbone keys: dim depth heads mlp_ratio dropout ...>,
              backbone_config: {<backbone name>: {<keys of that backbone only>}},
              input_dropout, head_dropout, head_hidden, head_norm, pool_divisor, two_tower, init_from
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

import typing
from pathlib import Path
from typing import Any

from maelre.recipe_schema import (  # noqa: F401  (re-exported)
    _SECTION_CLASSES,
    SECTIONS,
    DataSection,
    LossSection,
    ModelSection,
    OptimizerSection,
    OutputSection,
    PretrainSection,
    Recipe,
    RecipeError,
    RecipeWarning,
    ScheduleSection,
    _hint,
    _length_multiple,
)
from maelre.recipe_validation import (  # noqa: F401  (re-exported)
    _check_trainer,
    _construct,
    _hints,
    _mapping,
    _shared_hints,
    _unknown_model_key,
    _validate_adapter,
    _validate_curriculum,
    _validate_dataset,
    _validate_model,
    check_keys,
    check_value,
)
from maelre.yamlio import load_yaml, read_yaml_file


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
            value = load_yaml(text, f"--set {item!r}: the value")
        except ValueError as err:
            raise RecipeError(path, str(err)) from err
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
    """Read a YAML recipe (``maelre.yamlio``: safe, YAML 1.2 floats, no duplicate keys), apply ``overrides`` and validate it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"recipe {path} not found; recipes ship in recipes/*.yaml")
    try:
        raw = read_yaml_file(path)
    except ValueError as err:
        raise RecipeError("", str(err)) from err
    if raw is not None and not isinstance(raw, dict):
        raise RecipeError("", f"{path} holds a YAML {type(raw).__name__}, not a mapping of sections ({', '.join(SECTIONS)})")
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
