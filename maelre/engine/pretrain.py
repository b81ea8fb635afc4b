"""``maelre pretrain``: masked-token self-pretraining of a recipe's model on its own training inputs.

The run reuses the recipe's data, model, optimizer, schedule and trainer sections (change
the budget with ``--set trainer.max_steps=N``) and the fine-tuning machinery: resumable
safetensors checkpoints, logs and ``results.json``. Its ``val/acc`` is the masked-token
accuracy on the validation inputs, with fixed masks. Labels are never read.

A pretraining run lives in ``<output.run_dir>/pretrain/version_N`` (or ``--run-dir``).
``maelre fit RECIPE --init-from RUN`` (recipe key ``model.init_from``) starts fine-tuning
from its adapter and backbone weights and reuses its adapter preprocessing state (a
word vocabulary, pixel statistics), so token ids mean the same in both runs.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import torch.nn.functional as F
import yaml
from torch import Tensor, nn

from maelre.engine.callbacks import environment, write_results
from maelre.engine.checkpoint import checked_weights, latest_checkpoint, resolve_checkpoint, write_text_atomic
from maelre.engine.fit import build_model, fit_classifier
from maelre.engine.run_setup import _check_same_run, _fitted_adapter, load_run_data, resolve_run_dir, run_backbone_kwargs, training_samples
from maelre.engine.seed import seed_everything
from maelre.engine.task import ClassificationTask
from maelre.pretrain import DEFAULT_MASK_RATIOS, FALLBACK_MASK_RATIO, IGNORE, MaskedTokenModel, pretraining_config, token_ids_of
from maelre.recipe import Recipe, RecipeError

PRETRAINED_PREFIXES = ("adapter.", "backbone.")
"""The weights a fine-tuning run takes from a pretraining checkpoint (the head is new)."""


class PretrainTask(ClassificationTask):
    """``ClassificationTask`` whose outputs are the mask slots' logits and true ids (``MaskedTokenModel``).

    Slots a row does not use have target ``IGNORE``: the loss averages over the used ones and the metrics skip the rest.
    """

    ignore_index = IGNORE

    def outputs(self, batch: tuple[dict, Tensor]) -> tuple[Tensor, Tensor]:
        inputs, _ = batch
        logits, targets = self.run(inputs)
        return logits.flatten(0, -2), targets.flatten()

    def _loss_terms(self, logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        total = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE, reduction="sum")
        return total, (labels != IGNORE).sum().to(total.dtype)  # on the device: no host sync


def mask_ratio_of(recipe: Recipe) -> float:
    """``pretrain.mask_ratio``, or the adapter's default."""
    if recipe.pretrain.mask_ratio is not None:
        return recipe.pretrain.mask_ratio
    return DEFAULT_MASK_RATIOS.get(recipe.adapter_name(), FALLBACK_MASK_RATIO)


def build_masked_model(adapter: nn.Module, recipe: Recipe, backbone_kwargs: dict[str, Any] | None = None) -> MaskedTokenModel:
    """A ``MaskedTokenModel`` for the recipe's backbone (token-keeping config) with a checkpoint ``spec``.

    ``backbone_kwargs`` (default: the recipe's) are the backbone settings before the token-keeping overrides.
    """
    try:
        _, vocab = token_ids_of(adapter)
    except ValueError as err:
        raise RecipeError("data.adapter.name", str(err)) from err
    if recipe.model.two_tower:
        raise RecipeError("model.two_tower", "masked-token pretraining reads single sequences; pretrain on a dataset without pairs")
    config = pretraining_config(recipe.model.backbone, recipe.backbone_kwargs() if backbone_kwargs is None else backbone_kwargs)
    classifier = build_model(adapter, recipe.model.backbone, config, num_classes=vocab)
    model = MaskedTokenModel(classifier.adapter, classifier.backbone, mask_ratio_of(recipe))
    model.spec = dataclasses.replace(classifier.spec, extra={"pretrain": {"mask_ratio": model.mask_ratio, "token_ids": model.token_key}})
    return model


def pretrain_recipe(recipe: Recipe, run_dir: str | Path | None = None, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Pretrain ``recipe``'s adapter and backbone by masked-token denoising; returns (and writes) ``results.json``'s content."""
    t0, started = time.perf_counter(), time.time()  # started: the origin of trainer.stop_after_minutes
    output = dataclasses.replace(recipe.output, run_dir=str(recipe.run_dir() / "pretrain"))
    path = resolve_run_dir(dataclasses.replace(recipe, output=output), run_dir, resume)
    resolved = recipe.to_dict()
    if resume:
        _check_same_run(path, resolved)
    resume_from = latest_checkpoint(path) if resume else None
    seed_everything(recipe.trainer.seed, recipe.trainer.deterministic)
    data = load_run_data(recipe)
    adapter = _fitted_adapter(recipe, data.train, data.modality, resume_from)
    model = build_masked_model(adapter, recipe, run_backbone_kwargs(recipe, resume_from))
    write_text_atomic(path / "recipe.yaml", yaml.safe_dump(resolved, sort_keys=False))
    trainer_cfg = dataclasses.replace(recipe.trainer, enable_progress_bar=recipe.trainer.enable_progress_bar and progress)
    result = fit_classifier(
        model, training_samples(recipe, data), data.val, trainer_cfg, recipe.optim_config(), path,
        batch_size=recipe.data.batch_size, eval_batch_size=recipe.data.eval_batch_size, num_workers=recipe.data.num_workers,
        bucket_by_length=recipe.data.bucket_by_length, cache=recipe.data.cache, recipe=resolved,
        resume=resume_from or False, started=started, restore_best=False, task_class=PretrainTask,
    )
    results = {
        "recipe": recipe.name,
        "task": "pretrain",
        "run_dir": str(path),
        "dataset": recipe.dataset_name(),
        "backbone": recipe.model.backbone,
        "adapter": recipe.adapter_name(),
        "mask_ratio": model.mask_ratio,
        "metrics": {"val/best_masked_acc": result.best_score, "train/final_loss": _last(result.history, "train/loss")},
        "parameters": sum(p.numel() for p in model.parameters()),
        "throughput": result.throughput,
        "fit_seconds": result.fit_seconds,
        "total_seconds": time.perf_counter() - t0,
        "global_step": result.global_step,
        "epochs": result.epochs,
        "best_checkpoint": str(result.best_checkpoint) if result.best_checkpoint else None,
        "last_checkpoint": str(result.last_checkpoint) if result.last_checkpoint else None,
        "resumed_from": str(resume_from) if resume_from else None,
        "history": result.history,
        "environment": {**environment(), "device": result.extra["device"], "precision": trainer_cfg.precision},
    }
    write_results(path / "results.json", results)
    return results


def _last(history: list[dict[str, float]], key: str) -> float | None:
    values = [row[key] for row in history if key in row]
    return values[-1] if values else None


def load_pretrained(model: nn.Module, path: str | Path) -> list[str]:
    """Copy the adapter and backbone weights of the pretraining checkpoint at ``path`` into ``model``.

    ``path`` is a pretraining run, its ``checkpoints/`` folder or one checkpoint (``best``
    is preferred). Returns the loaded keys. Raises ``ValueError`` naming the first
    mismatch when the two models' adapters or backbones differ in any weight's name or shape.
    """
    directory = resolve_checkpoint(path)
    saved = {k: v for k, v in checked_weights(directory).items() if k.startswith(PRETRAINED_PREFIXES)}
    own = {k: v for k, v in model.state_dict().items() if k.startswith(PRETRAINED_PREFIXES)}
    hint = "pretrain and fine-tune with the same model.* and data.adapter settings"
    for names, where in ((own.keys() - saved.keys(), "the checkpoint lacks"), (saved.keys() - own.keys(), "this model lacks")):
        if names:
            raise ValueError(f"cannot initialise from {directory}: {where} {sorted(names)[:3]} ({len(names)} weights); {hint}")
    for key, value in own.items():
        if saved[key].shape != value.shape:
            raise ValueError(f"cannot initialise from {directory}: {key} has shape {tuple(saved[key].shape)} there but {tuple(value.shape)} here; {hint}")
    model.load_state_dict(saved, strict=False)
    return sorted(saved)


__all__ = ["PretrainTask", "build_masked_model", "load_pretrained", "mask_ratio_of", "pretrain_recipe"]
