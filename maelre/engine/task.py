"""``ClassificationTask``: the Lightning wrapper that trains a ``SequenceClassifier``.

The model stays a plain ``nn.Module`` (``maelre.model``); everything about training
(loss, optimizer, learning-rate schedule, metrics) lives here.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import lightning as L
import torch
import torch.nn.functional as F
from timm.optim import param_groups_weight_decay
from torch import Tensor, nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassF1Score

from maelre.engine.data import batch_size_of, move_to, repeat_last_rows, tensors_of

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "linear", "constant", "rsqrt")


def check_optimizer(name: str, lr: float, weight_decay: float) -> None:
    """``ValueError`` unless the optimizer settings are usable."""
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer name must be one of {OPTIMIZERS}, got {name!r}")
    if not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"lr must be a positive finite number, got {lr}")
    if not math.isfinite(weight_decay) or weight_decay < 0:
        raise ValueError(f"weight_decay must be a finite number >= 0, got {weight_decay}")


def check_schedule(kind: str, warmup_steps: int, warmup_fraction: float, min_lr_ratio: float) -> None:
    """``ValueError`` unless the schedule settings are usable."""
    if kind not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {kind!r}")
    if warmup_steps < 0 or not 0.0 <= warmup_fraction < 1.0:
        raise ValueError(f"need warmup_steps >= 0 and 0 <= warmup_fraction < 1, got {warmup_steps}, {warmup_fraction}")
    if warmup_steps and warmup_fraction:
        raise ValueError("set either warmup_steps or warmup_fraction, not both")
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}")


@dataclass
class OptimConfig:
    """Optimizer and learning-rate schedule.

    Attributes:
        name: ``"adamw"`` or ``"sgd"`` (with ``momentum``, Nesterov).
        lr: peak learning rate.
        weight_decay: decoupled weight decay; biases and norm weights (1-D parameters) get none.
        betas: AdamW betas.
        momentum: SGD momentum.
        schedule: after warmup, ``"cosine"`` or ``"linear"`` decay to ``min_lr_ratio * lr``
            at the last step, ``"constant"``, or ``"rsqrt"``: ``lr * sqrt(warmup / step)``, the
            inverse-square-root decay of LRA's text and matching tasks (``min_lr_ratio`` unused).
        warmup_steps: linear warmup length in optimizer steps.
        warmup_fraction: warmup as a fraction of all steps (used when ``warmup_steps`` is 0).
        min_lr_ratio: final learning rate as a fraction of ``lr`` (cosine/linear).
        fused: AdamW's fused kernel (one call for all parameters, CPU or CUDA). For small
            models on CPU the default per-parameter loop costs more than the model's step:
            the estimator's time-series models step about 10% faster with it.
    """

    name: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    momentum: float = 0.9
    schedule: str = "cosine"
    warmup_steps: int = 0
    warmup_fraction: float = 0.0
    min_lr_ratio: float = 0.0
    fused: bool = False

    def __post_init__(self) -> None:
        check_optimizer(self.name, self.lr, self.weight_decay)
        check_schedule(self.schedule, self.warmup_steps, self.warmup_fraction, self.min_lr_ratio)
        self.betas = tuple(self.betas)  # type: ignore[assignment]

    def warmup_for(self, total_steps: float) -> int:
        if self.warmup_steps:
            return self.warmup_steps
        if self.warmup_fraction and math.isfinite(total_steps):
            return int(self.warmup_fraction * total_steps)
        return 0


@dataclass
class LRSchedule:
    """Learning-rate multiplier for ``LambdaLR``: linear warmup, then cosine/linear/constant.

    A dataclass of primitives (not a lambda) so ``LambdaLR.state_dict()`` saves it
    without pickle.
    """

    kind: str
    warmup: int
    total: int
    min_ratio: float = 0.0

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        if self.kind == "constant":
            return 1.0
        if self.kind == "rsqrt":
            return math.sqrt(max(1, self.warmup) / max(1, step))
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        decay = 0.5 * (1.0 + math.cos(math.pi * progress)) if self.kind == "cosine" else 1.0 - progress
        return self.min_ratio + (1.0 - self.min_ratio) * decay


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """AdamW or SGD over timm's weight-decay parameter groups (no decay on 1-D parameters)."""
    groups = param_groups_weight_decay(model, cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, **({"fused": True} if cfg.fused else {}))
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)


def _metrics(num_classes: int, ignore_index: int | None = None) -> MetricCollection:
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, average="micro", ignore_index=ignore_index),
            "f1": MulticlassF1Score(num_classes, average="macro", ignore_index=ignore_index),
        }
    )


def _shapes(batch: object) -> tuple[tuple[int, ...], ...]:
    """The shapes of a batch's tensors, in order: what a compiled graph is specialised to."""
    return tuple(tuple(t.shape) for t in tensors_of(batch))


def _mark_static(batch: object) -> None:
    """``torch._dynamo.mark_static`` on every dimension of every tensor of a nested batch.

    Without it, the first batch of another size (evaluation's, after training's) makes
    dynamo's automatic dynamic shapes compile a graph with a symbolic batch size, and a
    second sequence length one with a symbolic length that every later step then runs.
    Compiled fits keep both dimensions to a few values instead (batch padding, length
    buckets), each a static graph.
    """
    for tensor in tensors_of(batch):
        for dim in range(tensor.dim()):
            torch._dynamo.mark_static(tensor, dim)


class ClassificationTask(L.LightningModule):
    """Trains ``model`` (batch dict -> logits) with cross-entropy.

    Batches are ``(batch, labels [B])`` from ``maelre.engine.data``. Logged metrics:
    ``train/loss``; ``val/loss``, ``val/acc``, ``val/f1`` (macro); ``test/...`` likewise;
    after ``trainer.test`` the confusion matrix is in ``self.confusion`` (``[C, C]``,
    rows = true class). ``predict_step`` returns class probabilities ``[B, C]`` (float32).

    Args:
        model: a ``SequenceClassifier`` (or any module with ``head.fc`` and ``forward(batch)``).
        optim: optimizer and schedule settings.
        num_classes: number of classes C.
        class_weights: optional ``[C]`` cross-entropy weights.
        label_smoothing: cross-entropy label smoothing in ``[0, 1)``.
        batches_per_epoch: returns the training loader's length (per process); used to
            size the LR schedule instead of Lightning's ``estimated_stepping_batches``,
            which sets the train loader up before a resumed run restores its position.
        compile: a ``torch.compile`` mode (``"default"``, ``"reduce-overhead"``, ...) for
            the steps, or ``None`` for eager. ``self.model`` itself stays uncompiled, so
            its state dict, checkpoints and later use are those of the eager module.
            Every dimension of every input is marked static (a new batch size or sequence
            length compiles one more static graph, never a dynamic one), and evaluation batches
            smaller than the largest one seen are padded up to it with copies of their last
            sample, whose outputs are cut off before loss and metrics: training and
            evaluation each compile one graph per input length (the trainer drops
            the short last training batch and pads lengths to a few buckets, see
            ``TrainerConfig.compile``). One eager forward (eval mode, no gradients) before
            the first compiled call of each input shape fills the model's Python-side
            caches, which would otherwise cost a recompilation; batches in ``prime_first``
            (set by ``fit_classifier``: one sample padded to the longest length bucket) go
            through it before any, so that caches sized by the longest length seen
            (MAELRE's merge-plan table) have their final size before the first trace (a
            table grown later fails the guards of every graph traced before).
    """

    ignore_index: ClassVar[int | None] = None
    """A target value that loss and metrics skip (``PretrainTask``: empty mask slots); ``None``: every target counts."""

    def __init__(
        self,
        model: nn.Module,
        optim: OptimConfig,
        num_classes: int,
        class_weights: Tensor | list[float] | None = None,
        label_smoothing: float = 0.0,
        batches_per_epoch: Callable[[], int] | None = None,
        compile: str | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.model = model
        # Kept out of the module tree (no "_orig_mod." keys in state dicts); shares model's parameters.
        self.__dict__["run_model"] = model if compile is None else torch.compile(model, mode=compile)
        self.compile_mode = compile
        self._eval_rows = 0  # the largest evaluation batch seen: what shorter ones are padded to when compiled
        self._primed: set[tuple] = set()  # input shapes primed (one eager forward each)
        # Primed before anything else (fit_classifier: a batch at the longest length bucket), so that
        # caches sized by the longest length seen (MAELRE's merge-plan table) never grow under a traced graph.
        self.prime_first: list = []
        self.optim = optim
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing
        self.batches_per_epoch = batches_per_epoch
        weights = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        if weights is not None and weights.shape != (num_classes,):
            raise ValueError(f"class_weights needs {num_classes} entries (one per class), got shape {tuple(weights.shape)}")
        self.register_buffer("class_weights", weights, persistent=False)
        self.val_metrics = _metrics(num_classes, self.ignore_index).clone(prefix="val/")
        self.test_metrics = _metrics(num_classes, self.ignore_index).clone(prefix="test/")
        self.test_confusion = MulticlassConfusionMatrix(num_classes, ignore_index=self.ignore_index)
        # A metric, not self.log(..., sync_dist=True): Lightning averages the per-process sample
        # counts as integers over gloo, truncating them (21 samples on 2 processes count as 20).
        self.val_loss = MeanMetric()
        self.test_loss = MeanMetric()
        self.confusion: Tensor | None = None

    def forward(self, batch: dict) -> Tensor:
        """Logits ``[B, C]`` for an adapter batch (through the compiled model when ``compile`` is set)."""
        if self.compile_mode is not None:
            if not self._primed:
                for first in self.prime_first:
                    self._prime(move_to(first, self.device), _shapes(first))
            shapes = _shapes(batch)
            if shapes not in self._primed:
                self._prime(batch, shapes)
            _mark_static(batch)
        return self.run_model(batch)

    def _prime(self, batch: dict, shapes: tuple) -> None:
        """One eager forward in eval mode without gradients before the first compiled call of each input shape.

        It fills the model's Python-side caches (MAELRE's merge-plan table, its Hilbert
        order, index tensors; per sequence length), so that compiled code finds them built:
        built while tracing, they would fail the next call's guards and compile the model
        once more.
        Eval mode, no gradients and restored random states leave the training unchanged
        (no dropout draw, no running-statistics update).
        """
        self._primed.add(shapes)
        training = self.model.training
        devices = [self.device] if self.device.type == "cuda" else []
        try:  # fork_rng: a model that draws even in eval mode (masked-token pretraining) leaves the run's streams alone
            with torch.no_grad(), torch.random.fork_rng(devices):
                self.model.eval()
                self.model(batch)
        finally:
            self.model.train(training)

    def _loss_terms(self, logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """``(summed cross-entropy, normaliser)``: their ratio is the batch's mean loss.

        The normaliser is the sample count, or the summed weights of the labels' classes,
        as in ``F.cross_entropy``'s weighted mean; sums of both give the mean over any
        union of batches, whatever their split.
        """
        total = F.cross_entropy(logits.float(), labels, weight=self.class_weights, label_smoothing=self.label_smoothing, reduction="sum")
        # new_full fills on the device; new_tensor(float) would copy from the host and wait for the GPU every step
        norm = self.class_weights[labels].sum() if self.class_weights is not None else total.new_full((), float(labels.numel()))
        return total, norm

    def _global_mean_loss(self, logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """``(loss to backpropagate, mean loss of the global batch)``.

        The summed loss and its normaliser are all-reduced, and each process
        backpropagates ``world_size * local sum / global normaliser``, which DDP's
        gradient averaging turns into the gradient of one process on the whole batch,
        also for a short last batch split unevenly and for class weights.
        """
        total, norm = self._loss_terms(logits, labels)
        world = self.trainer.world_size if self._trainer is not None else 1
        if world == 1:
            loss = total / norm
            return loss, loss.detach()
        summed = torch.stack([total.detach(), norm])
        # torch's all_reduce, not strategy.reduce: Lightning's adds a barrier, which would stall the host every step on GPUs
        torch.distributed.all_reduce(summed)
        return total * world / summed[1], summed[0] / summed[1]

    def outputs(self, batch: tuple[dict, Tensor]) -> tuple[Tensor, Tensor]:
        """``(logits [M, C], targets [M])`` that the loss and metrics compare; here the batch's samples and labels."""
        inputs, labels = batch
        return self.run(inputs), labels

    def run(self, inputs: dict) -> Any:
        """The model's output for ``inputs``; compiled evaluation pads the batch to its largest and cuts every output back."""
        if self.compile_mode is None or self.training:
            return self(inputs)
        n = batch_size_of(inputs)
        self._eval_rows = max(self._eval_rows, n)
        out = self(repeat_last_rows(inputs, self._eval_rows))
        return tuple(o[:n] for o in out) if isinstance(out, tuple) else out[:n]

    def training_step(self, batch: tuple[dict, Tensor], batch_idx: int) -> dict[str, Tensor]:
        logits, labels = self.outputs(batch)
        loss, mean = self._global_mean_loss(logits, labels)
        self.log("train/loss", mean, on_step=True, on_epoch=True, batch_size=labels.shape[0])
        self.log("loss", mean, prog_bar=True, logger=False, batch_size=labels.shape[0])  # progress bar only
        return {"loss": loss, "mean_loss": mean}

    def _eval_step(self, batch: tuple[dict, Tensor], stage: str) -> None:
        inputs, _ = batch
        logits, labels = self.outputs(batch)
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        metrics.update(logits, labels)
        if stage == "test":
            self.test_confusion.update(logits, labels)
        n = batch_size_of(inputs)
        loss = self.val_loss if stage == "val" else self.test_loss
        total, norm = self._loss_terms(logits, labels)
        loss.update(total / norm, norm)  # weighted by the normaliser: the mean over the whole split, however batched
        self.log(f"{stage}/loss", loss, on_epoch=True, batch_size=n)
        self.log_dict(metrics, on_epoch=True, batch_size=n)
        if stage == "val":
            self.log("val_acc", metrics["val/acc"], on_epoch=True, prog_bar=True, logger=False, batch_size=n)

    def validation_step(self, batch: tuple[dict, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: tuple[dict, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self.confusion = self.test_confusion.compute().cpu()
        self.test_confusion.reset()

    def predict_step(self, batch: tuple[dict, Tensor], batch_idx: int) -> Tensor:
        inputs, _ = batch
        return self.model(inputs).float().softmax(dim=-1)

    def total_training_steps(self) -> float:
        """Optimizer steps this run will take (``inf`` when only ``max_time`` bounds it)."""
        trainer = self.trainer
        if self.batches_per_epoch is None:
            return trainer.estimated_stepping_batches
        per_epoch = math.ceil(self.batches_per_epoch() / trainer.accumulate_grad_batches)
        total = per_epoch * trainer.max_epochs if trainer.max_epochs not in (None, -1) else math.inf
        return min(total, trainer.max_steps) if trainer.max_steps != -1 else total

    def configure_optimizers(self) -> dict:
        optimizer = build_optimizer(self.model, self.optim)
        total = self.total_training_steps()
        if self.optim.schedule != "constant" and not math.isfinite(total):
            raise ValueError(
                f"the {self.optim.schedule!r} schedule needs a known number of steps; set trainer.max_steps or trainer.max_epochs, "
                "or use schedule.kind=constant with a max_time-only budget"
            )
        total_steps = int(total) if math.isfinite(total) else 0
        schedule = LRSchedule(self.optim.schedule, self.optim.warmup_for(total), total_steps, self.optim.min_lr_ratio)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
