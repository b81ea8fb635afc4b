"""Lightning callbacks of a training run, and the run artifacts (plots, ``results.json``).

- ``CheckpointExtras``: adds the model spec, class names, adapter preprocessing state,
  recipe and current metrics to every checkpoint (see ``maelre.engine.checkpoint``).
- ``StepCheckpoint``: a resumable checkpoint every ``every_n_steps`` optimizer steps and
  at every epoch end, under unique ``step-XXXXXXX`` names; keeps the newest ``keep``.
- ``BestCheckpoint``: the checkpoint with the best validation metric, as ``best``.
- ``LoaderStateRestore``: puts the training loader back where a resumed checkpoint left it,
  also after a finished epoch (where Lightning does not).
- ``ThroughputMonitor``: samples/s and tokens/s over training time (validation excluded).
- ``HistoryRecorder``: per-epoch train loss and validation metrics (the learning curve).
"""
from __future__ import annotations

import math
import resource
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from maelre.engine.checkpoint import (
    EXTRAS_KEY,
    ModelSpec,
    find_checkpoints,
    write_json_atomic,
)
from maelre.engine.data import batch_size_of, token_total
from maelre.engine.fit_types import STEADY_WARMUP_STEPS


def _scalar_metrics(trainer: L.Trainer, prefixes: tuple[str, ...] = ("train/", "val/", "test/")) -> dict[str, float]:
    out = {}
    for key, value in trainer.callback_metrics.items():
        if key.startswith(prefixes):
            out[key] = float(value)
    return out


class CheckpointExtras(Callback):
    """Puts what ``load_model`` needs (and the recipe) into every checkpoint Lightning writes."""

    def __init__(self, spec: ModelSpec, classes: list[str], recipe: dict | None = None) -> None:
        self.spec = spec
        self.classes = list(classes)
        self.recipe = recipe

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint[EXTRAS_KEY] = {
            "spec": self.spec.to_dict(),
            "classes": self.classes,
            "preprocessing": pl_module.model.adapter.preprocessing_state(),
            "recipe": self.recipe,
            "meta": {"metrics": _scalar_metrics(trainer)},
        }


class StepCheckpoint(Callback):
    """Resumable checkpoints ``dirpath/step-XXXXXXX`` every ``every_n_steps`` steps and at epoch ends.

    Saved from ``on_train_batch_end`` (after the optimizer and scheduler step), which is
    where Lightning's loops support an exact mid-epoch restart. Only the newest ``keep``
    step checkpoints are kept; a new one is complete before an old one is deleted.

    Ending a call early, so that ``--resume`` continues exactly:

    - ``deadline`` (Unix seconds): at the first step end past it, save and stop training
      (a per-call limit: Lightning's ``max_time`` counts the time of every call of a
      resumed run). The fit then validates, and the caller tests, as after any stop.
    - SIGTERM: Lightning notes it and ends the process after the running step (a
      ``SIGTERMException``, exit status 0) without a checkpoint; this saves one first.
      Under DDP only when a ``deadline`` is set, whose per-step vote every rank joins
      (a save is a collective; a rank saving alone would hang).
    """

    def __init__(self, dirpath: str | Path, every_n_steps: int | None = None, keep: int = 2, deadline: float | None = None) -> None:
        if every_n_steps is not None and every_n_steps < 1:
            raise ValueError(f"checkpoint_every_n_steps must be >= 1, got {every_n_steps}")
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.dirpath = Path(dirpath)
        self.every_n_steps = every_n_steps
        self.keep = keep
        self.deadline = deadline
        self.ended_call = False
        """Whether this callback stopped training before the budget (deadline or SIGTERM): the run resumes."""
        self.ended_mid_epoch = False
        """Whether that stop fell inside an epoch: the validation Lightning then adds is not an epoch's."""
        self._last_step = -1

    def _save(self, trainer: L.Trainer) -> None:
        step = trainer.global_step
        if step == self._last_step or step == 0:
            return
        self._last_step = step
        trainer.save_checkpoint(self.dirpath / f"step-{step:07d}", weights_only=False)  # full training state
        if trainer.is_global_zero:
            steps = [p for p in find_checkpoints(self.dirpath) if p.name.startswith("step-")]
            for old in steps[: -self.keep]:
                trainer.strategy.remove_checkpoint(old)
        # every rank saves here (a collective), so every rank waits here too: none lists the folder
        # while rank 0 still prunes it (the epoch end's save can be the last thing a fit does)
        trainer.strategy.barrier("StepCheckpoint.prune")

    def _should_end_call(self, trainer: L.Trainer) -> bool:
        local = trainer.received_sigterm or (self.deadline is not None and time.time() > self.deadline)
        if trainer.world_size == 1:
            return local
        if self.deadline is None:
            return False
        return trainer.strategy.reduce_boolean_decision(local, all=False)  # any rank over time or signalled: all stop alike

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        # an epoch's last step is saved by on_train_epoch_end, after the epoch's validation, so the
        # checkpoint holds that validation (history row, best score) for a resumed run
        mid_epoch = not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0 and mid_epoch:
            self._save(trainer)
        if self._should_end_call(trainer):
            if mid_epoch:
                self._save(trainer)
            self.ended_call, self.ended_mid_epoch = True, mid_epoch
            trainer.should_stop = True

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.ended_mid_epoch:
            self._save(trainer)


def _cut_call_validation(cut_by: StepCheckpoint | None) -> bool:
    """Whether the running validation is the one Lightning adds after ``cut_by`` ended a call mid-budget.

    That validation lands wherever the call's deadline fell, usually mid-epoch, and the resumable
    checkpoint was saved before it, so a resumed run forgets it. Counting it would make the best
    checkpoint and the curve depend on how the budget was split into calls.
    """
    return cut_by is not None and cut_by.ended_mid_epoch


class BestCheckpoint(Callback):
    """Keeps ``dirpath/best``: the checkpoint with the best ``monitor`` value seen at validation.

    ``cut_by``: the run's ``StepCheckpoint``; the validation after it cut a call short is not
    counted, so a run split into calls keeps the best checkpoint of an uninterrupted run.
    """

    def __init__(self, dirpath: str | Path, monitor: str = "val/acc", mode: str = "max", cut_by: StepCheckpoint | None = None) -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        self.dirpath = Path(dirpath)
        self.monitor = monitor
        self.mode = mode
        self.cut_by = cut_by
        self.best: float | None = None

    @property
    def path(self) -> Path:
        return self.dirpath / "best"

    def _improved(self, value: float) -> bool:
        if math.isnan(value):
            return False
        return self.best is None or (value > self.best if self.mode == "max" else value < self.best)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics or _cut_call_validation(self.cut_by):
            return
        value = float(trainer.callback_metrics[self.monitor])
        if self._improved(value):
            self.best = value
            trainer.save_checkpoint(self.path, weights_only=False)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = state_dict.get("best")


class LoaderStateRestore(Callback):
    """Restores the training loader's position and random state from the checkpoint being resumed.

    Lightning reloads a loader's ``state_dict`` only when it restarts mid-epoch. From a
    checkpoint taken at an epoch end it skips it, and the next epoch would replay epoch 0's
    order from the start-of-run random state: the resumed run would differ from an
    uninterrupted one. Loading the same state a second time (mid-epoch) changes nothing.
    """

    def __init__(self) -> None:
        self._states: list[dict] = []

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        self._states = checkpoint.get("loops", {}).get("fit_loop", {}).get("state_dict", {}).get("combined_loader", [])

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loader = trainer.train_dataloader
        if self._states and hasattr(loader, "load_state_dict"):
            loader.load_state_dict(self._states[0])  # fit_classifier trains on one loader
        self._states = []


def _wait_for_device(trainer: L.Trainer) -> None:
    """Let the GPU finish what was queued, so that a host clock read next times the work (a sync: use sparingly)."""
    device = trainer.strategy.root_device
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class ThroughputMonitor(Callback):
    """Training samples/s and tokens/s (real tokens, from the batch masks), validation time excluded.

    ``steady_samples_per_second`` leaves out the call's first ``warmup_steps`` training batches,
    where ``torch.compile`` compiles and CUDA graphs are recorded: the rate a longer run settles
    at (``None`` when the call trained on no more batches than that).

    Nothing here waits for the GPU during training: token counts add up on the device, and the
    clock is read after a synchronize only where the steady interval starts and where training
    ends. A per-step sync would stop the host from queueing the next step while the GPU runs
    this one, and small models would train slower than they can.
    """

    def __init__(self, warmup_steps: int = STEADY_WARMUP_STEPS) -> None:
        self.warmup_steps = warmup_steps
        self.samples = 0
        self._tokens: Tensor | int = 0
        self.seconds = 0.0
        self._batches = 0
        self._t0: float | None = None
        self._steady: tuple[float, int] | None = None  # (start time, samples so far) after the warm-up batches
        self._steady_rate: float | None = None
        self._val_t0: float | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0 = time.perf_counter()

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._val_t0 = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._val_t0 is not None and self._t0 is not None:
            spent = time.perf_counter() - self._val_t0  # shift the starts: validation does not count
            self._t0 += spent
            if self._steady is not None:
                self._steady = (self._steady[0] + spent, self._steady[1])
        self._val_t0 = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        inputs, _ = batch
        self.samples += batch_size_of(inputs) * trainer.world_size
        self._tokens = self._tokens + token_total(inputs) * trainer.world_size
        self._batches += 1
        if self._batches == self.warmup_steps:
            _wait_for_device(trainer)
            self._steady = (time.perf_counter(), self.samples)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._t0 is not None:
            _wait_for_device(trainer)
            now = time.perf_counter()
            self.seconds = now - self._t0
            if self._steady is not None and self._batches > self.warmup_steps:
                start, samples = self._steady
                self._steady_rate = (self.samples - samples) / max(now - start, 1e-9)

    @property
    def tokens(self) -> int:
        """Real tokens trained on (a host sync when they are counted on a GPU)."""
        return int(self._tokens)

    def summary(self) -> dict[str, float | None]:
        seconds, tokens = max(self.seconds, 1e-9), self.tokens  # one read of the device's count
        return {
            "train_seconds": self.seconds,
            "samples_per_second": self.samples / seconds,
            "tokens_per_second": tokens / seconds,
            "samples_seen": self.samples,
            "tokens_seen": tokens,
            "steady_samples_per_second": self._steady_rate,
            "steady_warmup_steps": self.warmup_steps,
        }


class HistoryRecorder(Callback):
    """One row per training epoch: ``epoch``, ``step``, mean ``train/loss`` and the latest ``val/*`` metrics.

    ``cut_by``: the run's ``StepCheckpoint``; the epoch it cut short gets no row (the resumed call
    finishes that epoch and writes it, its loss sums carried in the checkpoint) and the
    validation after the cut is not recorded, so a run split into calls has the curve of an
    uninterrupted run.
    """

    def __init__(self, cut_by: StepCheckpoint | None = None) -> None:
        self.cut_by = cut_by
        self.rows: list[dict[str, float]] = []
        self._loss_sum: Tensor | float = 0.0
        self._loss_n = 0
        self._val: dict[str, float] = {}

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        # under DDP "loss" is this process's rescaled share; "mean_loss" is the global batch's mean
        loss = outputs.get("mean_loss", outputs["loss"]) if isinstance(outputs, dict) else outputs
        if loss is not None:  # summed on the device in float64 (no host sync a step), read at the epoch's end
            self._loss_sum = self._loss_sum + loss.detach().double()
            self._loss_n += 1

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking and not _cut_call_validation(self.cut_by):
            self._val = _scalar_metrics(trainer, ("val/",))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if _cut_call_validation(self.cut_by):
            return
        row = {"epoch": trainer.current_epoch, "step": trainer.global_step}
        if self._loss_n:
            row["train/loss"] = float(self._loss_sum) / self._loss_n
        row.update(self._val)
        self.rows.append(row)
        self._loss_sum, self._loss_n, self._val = 0.0, 0, {}

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "loss_sum": float(self._loss_sum), "loss_n": self._loss_n}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict.get("rows", []))
        self._loss_sum = float(state_dict.get("loss_sum", 0.0))
        self._loss_n = int(state_dict.get("loss_n", 0))


# ---------------------------------------------------------------- run artifacts
def peak_memory_bytes(device: torch.device | str) -> dict[str, Any]:
    """Peak memory: CUDA max allocated on a GPU run, else this process's peak RSS."""
    device = torch.device(device)
    if device.type == "cuda":
        return {"kind": "cuda_max_allocated", "bytes": int(torch.cuda.max_memory_allocated(device))}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"kind": "cpu_peak_rss", "bytes": int(rss if sys.platform == "darwin" else rss * 1024)}


def environment() -> dict[str, Any]:
    """Versions and hardware the run used."""
    import platform

    import lightning

    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "platform": platform.platform(),
        "cpu_threads": torch.get_num_threads(),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
    }
    if torch.cuda.is_available():
        env["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return env


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save_figure(fig: Any, path: Path) -> None:
    tmp = path.with_name(f".tmp-{path.name}")
    fig.savefig(tmp, dpi=120, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")
    tmp.replace(path)


def plot_confusion_matrix(confusion: np.ndarray | torch.Tensor, classes: list[str], path: str | Path, title: str = "test confusion matrix") -> Path:
    """Row-normalised confusion matrix (rows = true class) with counts, as a PNG."""
    plt = _pyplot()
    cm = np.asarray(confusion, dtype=np.int64)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    size = max(4.0, 0.45 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ticks = range(len(classes))
    ax.set_xticks(ticks, classes, rotation=90 if len(classes) > 10 else 0)
    ax.set_yticks(ticks, classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if len(classes) <= 20:
        for i in ticks:
            for j in ticks:
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7, color="white" if norm[i, j] > 0.5 else "black")
    path = Path(path)
    _save_figure(fig, path)
    plt.close(fig)
    return path


def plot_learning_curve(history: list[dict[str, float]], path: str | Path) -> Path:
    """Train/val loss and val accuracy per epoch, as a PNG."""
    plt = _pyplot()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    epochs = [row["epoch"] for row in history]
    for key, style in (("train/loss", "-o"), ("val/loss", "-s")):
        points = [(e, row[key]) for e, row in zip(epochs, history) if key in row]
        if points:
            ax_loss.plot(*zip(*points), style, label=key)
    for key in ("val/acc", "val/f1"):
        points = [(e, row[key]) for e, row in zip(epochs, history) if key in row]
        if points:
            ax_acc.plot(*zip(*points), "-o", label=key)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("score")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    path = Path(path)
    _save_figure(fig, path)
    plt.close(fig)
    return path


def write_results(path: str | Path, results: dict[str, Any]) -> Path:
    """``results.json`` (atomic)."""
    write_json_atomic(path, results, allow_nan=True)
    return Path(path)
