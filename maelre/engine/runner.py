"""Run a validated ``Recipe``: load data, fit the adapter, train, test, write the run's artifacts.

A run directory holds::

    recipe.yaml              the resolved recipe
    checkpoints/             step-XXXXXXX (resumable), best (by val/acc)
    logs/version_N/          CSV metrics and TensorBoard events
    results.json             test metrics, parameter count, throughput, time, memory, environment
    confusion_matrix.png     test confusion matrix
    test_predictions.json    labels and predicted classes per test sample, in order (``maelre compare``)
    learning_curve.png       train/val loss and val accuracy per epoch
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from lightning.pytorch.utilities import rank_zero_only

from maelre.compare import PREDICTIONS, write_predictions
from maelre.engine.callbacks import environment, plot_confusion_matrix, plot_learning_curve, write_results
from maelre.engine.checkpoint import (
    LoadedModel,
    load_model,
    resolve_checkpoint,
    resume_checkpoint,
    write_text_atomic,
)
from maelre.engine.data import labels_of
from maelre.engine.fit import build_model, evaluate, fit_classifier
from maelre.engine.run_setup import (  # noqa: F401  (re-exported)
    PAIR_SUFFIX,
    RunData,
    _check_same_run,
    _check_two_tower,
    _fitted_adapter,
    load_run_data,
    resolve_run_dir,
    run_backbone_kwargs,
    run_versions,
    training_samples,
)
from maelre.engine.seed import seed_everything
from maelre.recipe import Recipe, RecipeError, recipe_from_dict



def _class_weights(recipe: Recipe, train: Sequence[tuple[Any, int]], num_classes: int) -> list[float] | None:
    weights = recipe.loss.class_weights
    if weights is None:
        return None
    if weights == "balanced":
        from sklearn.utils.class_weight import compute_class_weight

        labels = labels_of(train)
        present = np.unique(labels)
        balanced = compute_class_weight("balanced", classes=present, y=labels)
        full = np.ones(num_classes)
        full[present] = balanced
        return full.tolist()
    if len(weights) != num_classes:
        raise RecipeError("loss.class_weights", f"needs {num_classes} weights (one per class), got {len(weights)}")
    return list(weights)



def run_recipe(
    recipe: Recipe,
    run_dir: str | Path | None = None,
    resume: bool = False,
    callbacks: Sequence[Any] = (),
    progress: bool = True,
) -> dict[str, Any] | None:
    """Train and test ``recipe``; returns (and writes) ``results.json``'s content.

    Under DDP (``trainer.strategy: ddp``) the other processes run this function too, as
    copies of the launching command; only rank 0 writes and tests, and the others return
    ``None`` after training. They may resolve a different ``version_N`` folder name, which
    stays unused: checkpoints and logs are written by rank 0 alone.

    Args:
        recipe: a validated recipe.
        run_dir: exact run directory (default: see ``resolve_run_dir``).
        resume: continue the interrupted run in ``run_dir`` from its newest checkpoint.
        callbacks: extra Lightning callbacks.
        progress: show progress bars and model summary.
    """
    t0, started = time.perf_counter(), time.time()  # started: the origin of trainer.stop_after_minutes
    path = resolve_run_dir(recipe, run_dir, resume)
    resolved = recipe.to_dict()
    if resume:
        _check_same_run(path, resolved)
    resume_from = resume_checkpoint(path) if resume else None
    init_from = resolve_checkpoint(recipe.model.init_from) if recipe.model.init_from and not resume else None
    seed_everything(recipe.trainer.seed, recipe.trainer.deterministic)  # before the adapter and model are initialised
    data = load_run_data(recipe)
    num_classes = len(data.classes)
    if num_classes < 2:
        raise ValueError(
            f"dataset {recipe.dataset_name()!r} ({data.meta.get('source', 'as loaded')}) has {num_classes} class {data.classes}; "
            "a classifier needs at least 2: check that data.dataset points at the whole dataset"
        )
    adapter = _fitted_adapter(recipe, data.train, data.modality, resume_from or init_from)
    model = build_model(adapter, recipe.model.backbone, run_backbone_kwargs(recipe, resume_from), num_classes, **recipe.model.head_kwargs())
    if init_from is not None:
        from maelre.engine.pretrain import load_pretrained

        load_pretrained(model, init_from)
    if rank_zero_only.rank == 0:  # set from the launcher's environment (LOCAL_RANK, RANK) before training starts
        write_text_atomic(path / "recipe.yaml", yaml.safe_dump(resolved, sort_keys=False))
    trainer_cfg = dataclasses.replace(recipe.trainer, enable_progress_bar=recipe.trainer.enable_progress_bar and progress)
    result = fit_classifier(
        model, training_samples(recipe, data), data.val, trainer_cfg, recipe.optim_config(), path,
        batch_size=recipe.data.batch_size, eval_batch_size=recipe.data.eval_batch_size, num_workers=recipe.data.num_workers,
        bucket_by_length=recipe.data.bucket_by_length, cache=recipe.data.cache,
        class_weights=_class_weights(recipe, data.train, num_classes), label_smoothing=recipe.loss.label_smoothing,
        classes=data.classes, recipe=resolved, resume=resume_from or False, started=started, callbacks=callbacks,
        on_device=recipe.data.on_device, augment=recipe.data.augment_config(),
    )
    if result.extra["global_rank"] != 0:
        return None
    cut = result.extra.get("call_ended_early", False)
    tested = trainer_cfg.test_partial or not cut
    if tested:
        eval_batch = recipe.data.eval_batch_size or 2 * recipe.data.batch_size
        test = evaluate(result.model, data.test, eval_batch, recipe.data.num_workers, precision=trainer_cfg.precision, per_sample=True)
        plot_confusion_matrix(test["confusion"], data.classes, path / "confusion_matrix.png")
        write_predictions(path / PREDICTIONS, test["labels"], test["predictions"], list(data.classes))  # for maelre compare
    else:  # trainer.test_partial off: a later call tests
        test = {"acc": None, "f1": None, "loss": None, "confusion": None}
    if result.history:
        plot_learning_curve(result.history, path / "learning_curve.png")
    # the best of every validation (the best checkpoint's score), not only those at epoch ends that the history keeps
    best_val = result.best_score if result.best_score is not None else max((row["val/acc"] for row in result.history if "val/acc" in row), default=None)
    results = {
        "recipe": recipe.name,
        "run_dir": str(path),
        "dataset": recipe.dataset_name(),
        "backbone": recipe.model.backbone,
        "adapter": recipe.adapter_name(),
        "classes": data.classes,
        "samples": {"train": len(data.train), "val": len(data.val) if data.val else 0, "test": len(data.test)},
        "metrics": {"test/acc": test["acc"], "test/f1": test["f1"], "test/loss": test["loss"], "val/best_acc": best_val},
        "parameters": sum(p.numel() for p in result.model.parameters()),
        "throughput": result.throughput,
        "fit_seconds": result.fit_seconds,
        "total_seconds": time.perf_counter() - t0,
        "peak_memory": result.peak_memory,
        "global_step": result.global_step,
        "epochs": result.epochs,
        # the call's deadline stopped training short of the budget (epochs counts the cut epoch as started)
        "call_ended_early": cut,
        "tested": tested,
        "best_checkpoint": str(result.best_checkpoint) if result.best_checkpoint else None,
        "last_checkpoint": str(result.last_checkpoint) if result.last_checkpoint else None,
        "resumed_from": str(resume_from) if resume_from else None,
        "initialised_from": str(init_from) if init_from else None,
        "history": result.history,
        "environment": {**environment(), "device": result.extra["device"], "world_size": result.extra["world_size"], "precision": trainer_cfg.precision},
        "confusion_matrix": None if test["confusion"] is None else test["confusion"].tolist(),
    }
    write_results(path / "results.json", results)
    return results


# ---------------------------------------------------------------- evaluation of saved runs
def checkpoint_for(target: str | Path, overrides: Sequence[str] = ()) -> Path:
    """A run/checkpoint directory from a path, or from a recipe file: a run's own ``recipe.yaml`` (that run), else the recipe's newest run."""
    from maelre.recipe import load_recipe

    target = Path(target)
    if target.suffix in (".yaml", ".yml") and target.is_file():
        if (target.parent / "checkpoints").is_dir():  # RUN/recipe.yaml, the copy a run keeps
            return target.parent
        recipe = load_recipe(target, overrides)
        versions = run_versions(recipe.run_dir()) if recipe.output.versioned else []
        found = versions[-1] if versions else recipe.run_dir()
        if not found.exists():
            raise FileNotFoundError(
                f"recipe {target} has no run under {recipe.run_dir()} (its output.run_dir); "
                "pass the run directory instead (the --run-dir it was trained with)"
            )
        return found
    return target


def evaluate_saved(target: str | Path, split: str = "test", overrides: Sequence[str] = (), batch_size: int | None = None) -> tuple[LoadedModel, dict[str, Any]]:
    """Load a saved model and evaluate it on ``split`` (``"val"`` or ``"test"``) of its recipe's data.

    ``overrides`` adjust the stored recipe's ``data`` settings (e.g. a different ``root``). The metrics are
    ``evaluate``'s with ``per_sample=True`` (``labels`` and ``predictions`` for ``maelre compare``).
    """
    loaded = load_model(checkpoint_for(target, overrides))
    if loaded.recipe is None:
        raise ValueError(f"{loaded.path} was not trained from a recipe, so its data is unknown; use maelre.engine.evaluate in Python")
    recipe = recipe_from_dict(loaded.recipe, overrides, name=loaded.recipe.get("name", "recipe"))
    data = load_run_data(recipe)
    samples = data.val if split == "val" else data.test
    if not samples:
        raise ValueError(f"the recipe's data has no {split} split (data.val_fraction=0?)")
    metrics = evaluate(loaded.model, samples, batch_size or recipe.data.eval_batch_size or 2 * recipe.data.batch_size, recipe.data.num_workers,
                       per_sample=True)
    return loaded, metrics
