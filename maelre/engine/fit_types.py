"""What a fit takes and gives: ``TrainerConfig`` (how long and where to train) and ``FitResult``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from maelre.model import SequenceClassifier

PRECISIONS = ("32", "bf16-mixed", "16-mixed")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")


STEADY_WARMUP_STEPS = 50
"""Training batches at a call's start that ``ThroughputMonitor``'s steady rate leaves out by default (compilation, CUDA-graph recording)."""


@dataclass
class TrainerConfig:
    """How long and where to train (maps onto ``lightning.Trainer``).

    Attributes:
        max_epochs: epoch budget (``None`` = unbounded; then ``max_steps`` or ``max_time`` must bound training).
        max_steps: optimizer-step budget (``None`` = unbounded).
        max_time: wall-clock budget in minutes (``None`` = unbounded), summed over all calls of a resumed run.
        stop_after_minutes: end this call (not the run) this many minutes after it started,
            with a resumable checkpoint; ``--resume`` continues. The clock starts when the
            call does (``run_recipe``/``maelre fit`` before loading data; ``fit_classifier``
            when called, or at its ``started``), so loading data, fitting the adapter and
            restoring a checkpoint count. For budgets longer than one session or device
            call. Needs a run directory.
        stop_at: end this call at this wall-clock time (Unix seconds, ``time.time()``,
            ``date +%s``), with a resumable checkpoint; the earlier of this and
            ``stop_after_minutes`` applies. For a script that must be done by a fixed time
            (a device call's limit) however long setup took. Checked after every optimizer
            step: a call trains at least one step (so every call makes progress), then
            saves and stops at the first step end past the deadline; the call still writes
            ``results.json`` (and tests, unless ``test_partial`` is off). Needs a run directory.
        test_partial: test the best weights at the end of a call that its deadline
            (``stop_at``, ``stop_after_minutes``) stopped short of the budget. ``False``
            skips that test, so a run resumed over many calls spends its device time on
            training rather than on a test set it does not report yet (LRA Text: 25,000
            sequences of up to 4,000 tokens); ``results.json`` then holds the validation
            history, ``"tested": false`` and ``None`` test metrics. A call that completes
            the budget always tests.
        precision: ``"32"`` (or the int 32), ``"bf16-mixed"`` (GPU; works but is slow on CPU) or ``"16-mixed"`` (GPU).
        accelerator: ``"auto"``, ``"cpu"``, ``"gpu"``/``"cuda"``.
        devices: device count or ``"auto"``.
        strategy: ``"auto"`` or ``"ddp"`` (multi-GPU data parallel; launched by re-running the command per device).
        accumulate_grad_batches: batches per optimizer step.
        gradient_clip: max gradient norm (``None`` = no clipping).
        checkpoint_every_n_steps: resumable checkpoint period in optimizer steps
            (``None`` = only at epoch ends); a killed run loses at most this many steps.
        seed: seeds model init, data order, dropout and augmentation.
        deterministic: use deterministic kernels where they exist.
        early_stopping_patience: stop after this many validations without improvement of
            ``early_stopping_monitor`` (``None`` = off; needs validation data).
        early_stopping_monitor: ``"val/acc"``, ``"val/f1"`` (maximised) or ``"val/loss"`` (minimised).
        val_every_n_epochs: validation period.
        val_every_n_steps: validate every this many training batches instead (counted across
            epochs; ``None`` = per epoch): learning curves for runs of few, long epochs.
        log_every_n_steps: logging period.
        enable_progress_bar: show Lightning's rich progress bar.
        compile: ``false`` (eager), ``true`` (= ``"default"``) or a ``torch.compile`` mode:
            ``"default"``, ``"reduce-overhead"`` (CUDA graphs) or ``"max-autotune"``. The
            training and validation steps run the compiled model; checkpoints and the
            returned model stay plain ``nn.Module``s (a recipe's final test, ``evaluate``,
            runs eagerly). Each new input shape costs a compilation (and a CUDA-graph
            recording), and a second batch size makes dynamo compile a graph with a dynamic
            batch size that every later step then runs, so compiled fits keep shapes fixed:
            they drop each epoch's short last training batch (fewer than ``batch_size``
            samples, other ones every epoch as the order is reshuffled; a lone short batch
            is kept), mark the batch dimension static, and pad a short evaluation batch to
            the largest one with copies of its last sample, whose outputs are discarded, so
            validation metrics still count every sample once. With fixed-length inputs
            (images) a fit compiles two graphs, training and evaluation. Variable-length
            inputs (text, ListOps, audio, time series) are padded (masked) up to one of
            ``compile_length_buckets`` lengths (``adapter.bucket_lengths``: even steps of
            ``max_len / compile_length_buckets``, kept to the backbone's length multiple),
            and every dimension is marked static, so such a fit compiles at most
            ``2 * compile_length_buckets`` static graphs (``2 * k**2`` for two-tower models,
            whose sides pad independently), never a dynamic-length one; dynamo's
            recompile limit (``torch._dynamo.config.recompile_limit``, 8 by default) is
            raised to that count for the duration of the fit and restored after it. Eager
            fits keep the short last batch and pad to each batch's longest, so switching
            ``compile`` on resume changes an epoch's batch count by one.
        compile_length_buckets: how many sequence lengths a compiled fit pads variable-length
            batches to (see ``compile``; ignored when eager). More buckets: less padding,
            more graphs to compile (and CUDA graphs to record).
        steady_warmup_steps: training batches at a call's start that the steady rate
            (``throughput.steady_samples_per_second``) leaves out: compilation, CUDA-graph
            recording and, for variable lengths on CUDA, cuDNN's plan for each new sequence
            length. Timing runs of variable-length tasks need more than the default, so that
            most lengths have been seen once (``benchmarks/alone_cost.py --steady-after``).
    """

    max_epochs: int | None = 10
    max_steps: int | None = None
    max_time: float | None = None
    stop_after_minutes: float | None = None
    stop_at: float | None = None
    test_partial: bool = True
    precision: str | int = "32"
    accelerator: str = "auto"
    devices: int | str = 1
    strategy: str = "auto"
    accumulate_grad_batches: int = 1
    gradient_clip: float | None = 1.0
    checkpoint_every_n_steps: int | None = None
    seed: int = 0
    deterministic: bool = False
    early_stopping_patience: int | None = None
    early_stopping_monitor: str = "val/acc"
    val_every_n_epochs: int = 1
    val_every_n_steps: int | None = None
    log_every_n_steps: int = 50
    enable_progress_bar: bool = True
    compile: bool | str = False
    compile_length_buckets: int = 8
    steady_warmup_steps: int = STEADY_WARMUP_STEPS

    def __post_init__(self) -> None:
        if self.max_epochs is None and self.max_steps is None and self.max_time is None:
            raise ValueError("training is unbounded: set max_epochs, max_steps or max_time")
        if self.steady_warmup_steps < 1:
            raise ValueError(f"steady_warmup_steps must be >= 1 (the first step compiles and allocates), got {self.steady_warmup_steps}")
        for name in ("max_epochs", "max_steps", "checkpoint_every_n_steps", "early_stopping_patience", "val_every_n_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or null, got {value}")
        if self.max_time is not None and self.max_time <= 0:
            raise ValueError(f"max_time must be a positive number of minutes, got {self.max_time}")
        if self.stop_after_minutes is not None and self.stop_after_minutes <= 0:
            raise ValueError(f"stop_after_minutes must be a positive number of minutes, got {self.stop_after_minutes}")
        if self.stop_at is not None and self.stop_at <= 0:
            raise ValueError(f"stop_at must be a wall-clock time in Unix seconds (date +%s), got {self.stop_at}")
        if self.precision == 32:  # what YAML and `--set trainer.precision=32` give
            self.precision = "32"
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        for key in ("accumulate_grad_batches", "val_every_n_epochs", "log_every_n_steps"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.gradient_clip is not None and self.gradient_clip <= 0:
            raise ValueError(f"gradient_clip must be positive or null, got {self.gradient_clip}")
        if self.strategy not in ("auto", "ddp"):
            # ddp_spawn trains in worker processes: the history, throughput and best score that
            # fit_classifier reads from its callbacks would stay empty in this process
            raise ValueError(f"strategy must be 'auto' or 'ddp' (ddp_spawn is not supported), got {self.strategy!r}")
        if self.early_stopping_monitor not in ("val/acc", "val/f1", "val/loss"):
            raise ValueError(f"early_stopping_monitor must be 'val/acc', 'val/f1' or 'val/loss', got {self.early_stopping_monitor!r}")
        if isinstance(self.compile_length_buckets, bool) or not isinstance(self.compile_length_buckets, int) or self.compile_length_buckets < 1:
            raise ValueError(f"compile_length_buckets must be a positive integer, got {self.compile_length_buckets!r}")
        if self.compile is True:
            self.compile = "default"
        if self.compile is not False and self.compile not in COMPILE_MODES:
            raise ValueError(f"compile must be false, true or one of {COMPILE_MODES}, got {self.compile!r}")

    def call_deadline(self, started: float) -> float | None:
        """When this call stops training (Unix seconds): the earlier of ``stop_at`` and ``started`` plus ``stop_after_minutes``.

        Args:
            started: when the call started (``time.time()``).

        Returns:
            the deadline, or ``None`` when neither is set.
        """
        after = None if self.stop_after_minutes is None else started + 60 * self.stop_after_minutes
        return min((t for t in (self.stop_at, after) if t is not None), default=None)


@dataclass
class FitResult:
    """What ``fit_classifier`` returns.

    Attributes:
        model: the trained classifier (best validation weights when ``restore_best`` and
            validation data were given), on CPU, in eval mode.
        history: per epoch ``{"epoch", "step", "train/loss", "val/loss", "val/acc", "val/f1"}``.
        best_score: best ``val/acc`` seen (``None`` without validation).
        best_checkpoint: ``run_dir/checkpoints/best`` when written.
        last_checkpoint: newest resumable checkpoint when a ``run_dir`` was given.
        global_step: optimizer steps done (including those before a resume).
        epochs: epochs started (an epoch a call's deadline cut short counts).
        throughput: ``samples_per_second``, ``tokens_per_second``, ``train_seconds`` ...
        fit_seconds: wall time of ``trainer.fit``.
        peak_memory: ``{"kind", "bytes"}`` (CUDA max allocated, or CPU peak RSS).
    """

    model: SequenceClassifier
    history: list[dict[str, float]]
    best_score: float | None
    best_checkpoint: Path | None
    last_checkpoint: Path | None
    global_step: int
    epochs: int
    throughput: dict[str, float]
    fit_seconds: float
    peak_memory: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)
