"""The programmatic training API (no recipe needed): build, fit, evaluate, predict.

Typical use (this is what the scikit-learn estimator and the recipe runner do)::

    adapter = prepare_adapter("audio", {"dim": 64, "sample_rate": 8000}, splits.train)
    model = build_model(adapter, "maelre", {"depth": 4, "heads": 4}, num_classes=10)
    result = fit_classifier(model, splits.train, splits.val, TrainerConfig(max_epochs=5), OptimConfig(lr=1e-3))
    proba = predict_proba(result.model, [x for x, _ in splits.test])

``fit_classifier`` runs a Lightning ``Trainer``. With ``run_dir=None`` it keeps
everything in memory (no logs, no checkpoints; the best validation weights are kept in
RAM); with a ``run_dir`` it writes CSV/TensorBoard logs and pickle-free checkpoints
(``maelre.engine.checkpoint``) and can ``resume`` an interrupted run exactly.
"""
from __future__ import annotations

import contextlib
import datetime
import functools
import math
import random
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, RichProgressBar
from lightning.pytorch.strategies import DDPStrategy

from maelre.backbones.base import Backbone
from maelre.engine.callbacks import (
    BestCheckpoint,
    CheckpointExtras,
    HistoryRecorder,
    LoaderStateRestore,
    StepCheckpoint,
    ThroughputMonitor,
    peak_memory_bytes,
)
from maelre.engine.building import build_model, num_classes_of, prepare_adapter  # noqa: F401  (build_model, prepare_adapter re-exported)
from maelre.engine.checkpoint import SafeCheckpointIO, latest_checkpoint, load_weights, remove_stale_temporaries, resume_checkpoint
from maelre.engine.data import BatchCollator, EncodedDataset, bucket_lengths_of, make_dataloader
from maelre.engine.device_data import ImageAugment, MoveLoadersToDevice, make_device_loader
from maelre.engine.fit_types import COMPILE_MODES, PRECISIONS, FitResult, TrainerConfig  # noqa: F401  (re-exported)
from maelre.engine.inference import evaluate, predict_proba  # noqa: F401  (re-exported)
from maelre.engine.seed import seed_everything
from maelre.engine.task import ClassificationTask, OptimConfig
from maelre.model import SequenceClassifier



# ---------------------------------------------------------------- training
class _BestWeightsInMemory(Callback):
    """Keeps a CPU copy of the weights with the best ``val/acc`` (in-memory runs)."""

    def __init__(self, monitor: str = "val/acc") -> None:
        self.monitor = monitor
        self.best: float | None = None
        self.state: dict[str, torch.Tensor] | None = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[self.monitor])
        if not math.isnan(value) and (self.best is None or value > self.best):
            self.best = value
            self.state = {k: v.detach().to("cpu", copy=True) for k, v in pl_module.model.state_dict().items()}


def _max_time(minutes: float | None) -> datetime.timedelta | None:
    return None if minutes is None else datetime.timedelta(minutes=minutes)


def _strategy(name: str, model: torch.nn.Module) -> str | DDPStrategy:
    """``"ddp"`` looks for unused parameters when a backbone can skip some in a step (else DDP raises)."""
    if name == "ddp" and any(m.skips_parameters for m in model.modules() if isinstance(m, Backbone)):
        return DDPStrategy(find_unused_parameters=True)
    return name


def fit_classifier(
    model: SequenceClassifier,
    train_samples: Sequence[tuple[Any, int]],
    val_samples: Sequence[tuple[Any, int]] | None = None,
    trainer_cfg: TrainerConfig | None = None,
    optim_cfg: OptimConfig | None = None,
    run_dir: str | Path | None = None,
    *,
    batch_size: int = 32,
    eval_batch_size: int | None = None,
    num_workers: int = 0,
    bucket_by_length: bool = False,
    bucket_batches: int = 50,
    cache: bool = False,
    class_weights: Sequence[float] | None = None,
    label_smoothing: float = 0.0,
    classes: Sequence[str] | None = None,
    recipe: dict | None = None,
    resume: bool | str | Path = False,
    callbacks: Sequence[Callback] = (),
    restore_best: bool = True,
    on_device: bool = False,
    augment: ImageAugment | None = None,
    task_class: type[ClassificationTask] = ClassificationTask,
    started: float | None = None,
) -> FitResult:
    """Train ``model`` on raw ``(x, label)`` samples with Lightning.

    Args:
        model: from ``build_model`` (adapter already fitted).
        train_samples: ``(x, label)`` pairs (``x = (left, right)`` for two-tower models).
        val_samples: validation pairs, or ``None`` (no validation, no early stopping, final weights kept).
        trainer_cfg: budget, precision, devices, checkpointing (default ``TrainerConfig()``).
        optim_cfg: optimizer and schedule (default ``OptimConfig()``).
        run_dir: where logs and checkpoints go; ``None`` keeps the run in memory.
        batch_size: training batch size (per device).
        eval_batch_size: validation batch size (default ``2 * batch_size``).
        num_workers: data-loader workers running ``adapter.encode``.
        bucket_by_length: length-bucketed training batches (less padding).
        bucket_batches: batches per length-sorted chunk (``make_dataloader``).
        cache: memoise encoded samples (deterministic adapters only).
        class_weights: ``[C]`` cross-entropy weights.
        label_smoothing: cross-entropy label smoothing.
        classes: class names stored in checkpoints (default ``"0".."C-1"``).
        recipe: resolved recipe stored in checkpoints.
        resume: ``True`` continues from the newest checkpoint in ``run_dir``; a path
            continues from that checkpoint directory.
        callbacks: extra Lightning callbacks.
        restore_best: load the best validation weights into ``model`` after training.
        on_device: hold the whole (grayscale image) data set on the training device and cut
            batches there (``maelre.engine.device_data``); ``num_workers``, ``cache`` and
            ``bucket_by_length`` then do not apply.
        augment: batched on-device augmentation of training images (needs ``on_device``).
        task_class: the Lightning task; a subclass changes what is predicted (``PretrainTask``
            trains a ``MaskedTokenModel`` on masked tokens instead of labels).
        started: when this call started (``time.time()``; default: now), the origin of
            ``trainer_cfg.stop_after_minutes``: a caller that loaded the data passes its
            own start so that loading counts.

    Returns:
        a ``FitResult``; ``result.model`` is ``model`` itself, trained.
    """
    trainer_cfg = trainer_cfg or TrainerConfig()
    deadline = trainer_cfg.call_deadline(time.time() if started is None else started)
    optim_cfg = optim_cfg or OptimConfig()
    num_classes = num_classes_of(model)
    classes = [str(c) for c in classes] if classes is not None else [str(i) for i in range(num_classes)]
    if len(classes) != num_classes:
        raise ValueError(f"got {len(classes)} class names for a model with {num_classes} outputs")
    if trainer_cfg.early_stopping_patience is not None and not val_samples:
        raise ValueError("early stopping needs validation data; pass val_samples or set early_stopping_patience=None")
    if deadline is not None and run_dir is None:
        raise ValueError("stop_after_minutes and stop_at end a call with a checkpoint to resume from; give a run_dir")
    ckpt_path = _resume_path(resume, run_dir)
    run_dir = None if run_dir is None else Path(run_dir)

    seed_everything(trainer_cfg.seed, trainer_cfg.deterministic)
    two_tower = bool(model.two_tower)
    # Compiled training drops the epoch's short last batch: a second batch size would compile the
    # model again, and then once more with a dynamic batch dimension (TrainerConfig.compile).
    drop_last = bool(trainer_cfg.compile)
    # ... and pads variable lengths up to a few buckets: one graph per length otherwise.
    length_buckets = trainer_cfg.compile_length_buckets if trainer_cfg.compile else None
    val_loader = None
    if on_device:
        train_loader = make_device_loader(train_samples, model.adapter, batch_size, shuffle=True, seed=trainer_cfg.seed, augment=augment,
                                          drop_last=drop_last)
        if val_samples:
            val_loader = make_device_loader(val_samples, model.adapter, eval_batch_size or 2 * batch_size, shuffle=False)
        callbacks = [*callbacks, MoveLoadersToDevice(train_loader, val_loader)]
    else:
        if augment is not None and augment.active:
            raise ValueError("augment runs on the device batches; set on_device=True (recipe: data.on_device: true)")
        train_loader = make_dataloader(
            train_samples, model.adapter, batch_size, shuffle=True, seed=trainer_cfg.seed, num_workers=num_workers,
            two_tower=two_tower, bucket_by_length=bucket_by_length, bucket_batches=bucket_batches, cache=cache, drop_last=drop_last,
            length_buckets=length_buckets,
        )
        if val_samples:
            val_loader = make_dataloader(
                val_samples, model.adapter, eval_batch_size or 2 * batch_size, shuffle=False, seed=trainer_cfg.seed,
                num_workers=num_workers, two_tower=two_tower, cache=cache, length_buckets=length_buckets,
            )

    task = task_class(
        model, optim_cfg, num_classes, class_weights, label_smoothing, functools.partial(len, train_loader), compile=trainer_cfg.compile or None
    )
    task.prime_first = _longest_bucket_batch(model.adapter, train_samples, length_buckets, two_tower) if not on_device else []
    best_cb: BestCheckpoint | None = None
    step_ckpt: StepCheckpoint | None = None
    memory_best: _BestWeightsInMemory | None = None
    spec = getattr(model, "spec", None)
    if run_dir is not None:
        if spec is None:
            raise ValueError("model has no .spec; build it with maelre.engine.build_model so checkpoints can rebuild it")
        ckpt_dir = run_dir / "checkpoints"
        remove_stale_temporaries(ckpt_dir)  # left by a checkpoint write that a kill interrupted
        step_ckpt = StepCheckpoint(ckpt_dir, trainer_cfg.checkpoint_every_n_steps, deadline=deadline)
    throughput, history = ThroughputMonitor(trainer_cfg.steady_warmup_steps), HistoryRecorder(cut_by=step_ckpt)
    cbs: list[Callback] = [throughput, history, LoaderStateRestore(), *callbacks]
    if run_dir is not None:
        cbs += [CheckpointExtras(spec, classes, recipe), step_ckpt]
        if val_loader is not None:
            best_cb = BestCheckpoint(ckpt_dir, cut_by=step_ckpt)
            cbs.append(best_cb)
    elif val_loader is not None and restore_best:
        memory_best = _BestWeightsInMemory()
        cbs.append(memory_best)
    if trainer_cfg.early_stopping_patience is not None:
        mode = "min" if trainer_cfg.early_stopping_monitor == "val/loss" else "max"
        cbs.append(EarlyStopping(trainer_cfg.early_stopping_monitor, patience=trainer_cfg.early_stopping_patience, mode=mode))
    if trainer_cfg.enable_progress_bar:
        cbs.append(RichProgressBar(leave=True))

    with _quiet_lightning(trainer_cfg.enable_progress_bar):
        trainer = L.Trainer(
            max_epochs=trainer_cfg.max_epochs if trainer_cfg.max_epochs is not None else -1,
            max_steps=trainer_cfg.max_steps if trainer_cfg.max_steps is not None else -1,
            max_time=_max_time(trainer_cfg.max_time),
            precision=trainer_cfg.precision,
            accelerator=trainer_cfg.accelerator,
            devices=trainer_cfg.devices,
            strategy=_strategy(trainer_cfg.strategy, model),
            accumulate_grad_batches=trainer_cfg.accumulate_grad_batches,
            gradient_clip_val=trainer_cfg.gradient_clip,
            deterministic="warn" if trainer_cfg.deterministic else None,
            callbacks=cbs,
            logger=_loggers(run_dir),
            enable_checkpointing=False,  # checkpoints come from StepCheckpoint/BestCheckpoint
            enable_progress_bar=trainer_cfg.enable_progress_bar,
            enable_model_summary=trainer_cfg.enable_progress_bar,
            log_every_n_steps=max(1, min(trainer_cfg.log_every_n_steps, len(train_loader))),
            check_val_every_n_epoch=trainer_cfg.val_every_n_epochs if trainer_cfg.val_every_n_steps is None else None,
            val_check_interval=trainer_cfg.val_every_n_steps,
            limit_val_batches=None if val_loader is not None else 0,
            num_sanity_val_steps=0,
            use_distributed_sampler=False,  # ResumableBatchSampler shards by rank itself
            plugins=[SafeCheckpointIO()],
            default_root_dir=str(run_dir) if run_dir is not None else None,
        )
        start = time.perf_counter()
        with _recompile_limit(compiled_graphs(model.adapter, trainer_cfg, two_tower, on_device)), _quiet_plan_tracing():
            trainer.fit(task, train_loader, val_loader, ckpt_path=str(ckpt_path) if ckpt_path else None)
    fit_seconds = time.perf_counter() - start

    best_score, best_path = None, None
    if best_cb is not None and best_cb.path.is_dir():
        best_score, best_path = best_cb.best, best_cb.path
        if restore_best:
            model.load_state_dict(load_weights(best_path / "model.safetensors"))
    elif memory_best is not None and memory_best.state is not None:
        best_score = memory_best.best
        model.load_state_dict(memory_best.state)
    model.cpu().eval()
    return FitResult(
        model=model,
        history=history.rows,
        best_score=best_score,
        best_checkpoint=best_path,
        last_checkpoint=latest_checkpoint(run_dir) if run_dir is not None else None,
        global_step=trainer.global_step,
        epochs=trainer.current_epoch,
        throughput=throughput.summary(),
        fit_seconds=fit_seconds,
        peak_memory=peak_memory_bytes(trainer.strategy.root_device),
        extra={"interrupted": trainer.interrupted, "call_ended_early": step_ckpt is not None and step_ckpt.ended_call, "device": str(trainer.strategy.root_device), "world_size": trainer.world_size, "global_rank": trainer.global_rank},
    )


def _longest_bucket_batch(adapter: Any, samples: Sequence[tuple[Any, int]], length_buckets: int | None, two_tower: bool) -> list[dict]:
    """``[batch]``: the first training sample (unaugmented) padded to the longest length bucket; ``[]`` without buckets.

    The compiled task runs it eagerly before any trace, so caches sized by the longest length
    (MAELRE's merge-plan table) never grow under a traced graph. Random states are restored:
    the run's draws stay those of a fit without it.
    """
    buckets = bucket_lengths_of(adapter, length_buckets)
    if not buckets or not len(samples):
        return []
    raw = getattr(samples, "unaugmented", samples)
    states = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng([]):
            item = EncodedDataset([raw[0]], adapter, two_tower)[0]
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
    return [BatchCollator(adapter, two_tower, buckets[-1:])([item])[0]]


def compiled_graphs(adapter: Any, trainer_cfg: TrainerConfig, two_tower: bool = False, on_device: bool = False) -> int:
    """Graphs a compiled fit can need: training and evaluation for each padded length (0 when eager).

    One length per bucket (``adapter.bucket_lengths``), or one for adapters without buckets
    and on-device images; a two-tower model pads its sides independently (``k**2`` pairs).
    """
    if not trainer_cfg.compile:
        return 0
    buckets = None if on_device else bucket_lengths_of(adapter, trainer_cfg.compile_length_buckets)
    lengths = len(buckets) if buckets else 1
    return 2 * lengths ** (2 if two_tower else 1)


@contextlib.contextmanager
def _recompile_limit(graphs: int):
    """Raise dynamo's per-frame recompile limit to ``graphs`` for the block, then restore it.

    Past the limit dynamo stops compiling the model's forward and runs it eagerly (with a
    warning); the default (8) is below the ``2 * 8`` graphs of a compiled variable-length
    fit. Only raised, never lowered; nothing changes for eager fits (``graphs=0``). The
    setting is ``recompile_limit`` since torch 2.7 (``cache_size_limit`` before).
    """
    import torch._dynamo.config as dynamo_config

    name = "recompile_limit" if hasattr(dynamo_config, "recompile_limit") else "cache_size_limit"
    if graphs <= getattr(dynamo_config, name):
        yield
        return
    with dynamo_config.patch(**{name: graphs}):
        yield


_PLAN_CACHE_WARNING = r"Dynamo detected a call to a `functools\.lru_cache`-wrapped function at '(maelre_config|merge_plan)\.py"


@contextlib.contextmanager
def _quiet_plan_tracing():
    """Silence Dynamo's warning, printed on every compile of MAELRE, that it traces through the
    ``lru_cache`` of the merge plans: they are pure functions of ints, so tracing the function
    (its result a constant of the graph) is what a compiled fit needs. Other warnings pass."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_PLAN_CACHE_WARNING)
        yield


def _resume_path(resume: bool | str | Path, run_dir: str | Path | None) -> Path | None:
    if resume is False or resume is None:
        return None
    if resume is True:
        if run_dir is None:
            raise ValueError("resume=True needs the run_dir of the interrupted run")
        path = resume_checkpoint(run_dir)
        if path is None:
            raise FileNotFoundError(f"nothing to resume: no checkpoint with training state in {Path(run_dir) / 'checkpoints'}")
        return path
    path = Path(resume)
    if not (path / "training_state.pt").is_file():
        raise FileNotFoundError(f"cannot resume from {path}: it holds no training_state.pt")
    return path


def _loggers(run_dir: Path | None) -> list | bool:
    if run_dir is None:
        return False
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    loggers: list = [CSVLogger(run_dir, name="logs")]
    try:
        loggers.append(TensorBoardLogger(run_dir, name="logs", version=loggers[0].version, sub_dir="tensorboard", default_hp_metric=False))
    except ModuleNotFoundError:  # tensorboard is a declared dependency; keep CSV logs if it is absent
        warnings.warn("tensorboard is not installed; writing CSV logs only", stacklevel=3)
    return loggers


@contextlib.contextmanager
def _quiet_lightning(verbose: bool):
    """Silence Lightning's info banners (GPU available, ...) when progress output is off.

    A deprecation warning Lightning itself triggers inside torch's pytree, and its advice to
    sync ``train/loss`` under DDP, are always hidden.
    """
    import logging

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated", category=Warning)
        # train/loss is logged as the global batch's mean already (ClassificationTask._global_mean_loss)
        warnings.filterwarnings("ignore", message=r".*self\.log\('train/loss'.*sync_dist=True", category=Warning)
        if verbose:
            yield
            return
        names = ("lightning.pytorch", "lightning.fabric", "lightning.pytorch.utilities.rank_zero")
        levels = {n: logging.getLogger(n).level for n in names}
        for n in names:
            logging.getLogger(n).setLevel(logging.WARNING)
        try:
            yield
        finally:
            for n, level in levels.items():
                logging.getLogger(n).setLevel(level)

