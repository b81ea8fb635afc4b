"""ThroughputMonitor: the steady rate leaves out the warm-up steps (compilation) and validation; no callback waits for the GPU a step."""
from __future__ import annotations

from types import SimpleNamespace

import torch

import maelre.engine.callbacks as callbacks
from host_reads import NoHostRead
from maelre.engine.callbacks import HistoryRecorder, ThroughputMonitor

CPU = SimpleNamespace(root_device=torch.device("cpu"))


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_steady_rate_leaves_out_the_warm_up_steps_and_validation(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(callbacks.time, "perf_counter", clock)
    monitor, trainer = ThroughputMonitor(warmup_steps=2), SimpleNamespace(world_size=1, strategy=CPU)
    batch = ({"mask": torch.ones(4, 3, dtype=torch.bool)}, None)
    monitor.on_train_start(trainer, None)
    clock.now = 10.0  # the first step compiles
    monitor.on_train_batch_end(trainer, None, None, batch, 0)
    clock.now = 11.0
    monitor.on_train_batch_end(trainer, None, None, batch, 1)  # warm-up over: steady from here
    monitor.on_validation_start(trainer, None)
    clock.now = 31.0  # 20 s of validation count for neither rate
    monitor.on_validation_end(trainer, None)
    for step in range(2, 6):
        clock.now += 0.5
        monitor.on_train_batch_end(trainer, None, None, batch, step)
    monitor.on_train_end(trainer, None)
    summary = monitor.summary()
    assert summary["train_seconds"] == 13.0 and summary["samples_seen"] == 24 and summary["tokens_seen"] == 72
    assert summary["steady_samples_per_second"] == 16 / 2.0  # 4 steps of 4 samples in 2 s
    assert summary["steady_warmup_steps"] == 2  # results.json says which steps the rate left out


def test_no_steady_rate_without_steps_past_the_warm_up():
    monitor, trainer = ThroughputMonitor(warmup_steps=50), SimpleNamespace(world_size=1, strategy=CPU)
    monitor.on_train_start(trainer, None)
    monitor.on_train_batch_end(trainer, None, None, ({"mask": torch.ones(2, 3, dtype=torch.bool)}, None), 0)
    monitor.on_train_end(trainer, None)
    assert monitor.summary()["steady_samples_per_second"] is None


def test_per_step_hooks_never_read_device_values_and_the_totals_stay_exact():
    trainer = SimpleNamespace(world_size=1, strategy=CPU, current_epoch=0, global_step=3)
    monitor, history = ThroughputMonitor(warmup_steps=1), HistoryRecorder()
    monitor.on_train_start(trainer, None)
    losses = [0.5, 0.25, 0.125]
    for step, loss in enumerate(losses):
        mask = torch.tensor([[True, True, False], [True, False, False]]).as_subclass(NoHostRead)
        outputs = {"loss": torch.tensor(loss).as_subclass(NoHostRead)}
        monitor.on_train_batch_end(trainer, None, outputs, ({"mask": mask}, None), step)
        history.on_train_batch_end(trainer, None, outputs, ({"mask": mask}, None), step)
    NoHostRead.allowed = True  # the epoch's end and the summary read them, once
    try:
        history.on_train_epoch_end(trainer, None)
        monitor.on_train_end(trainer, None)
        assert monitor.summary()["tokens_seen"] == 9 and monitor.summary()["samples_seen"] == 6
        assert history.rows == [{"epoch": 0, "step": 3, "train/loss": sum(losses) / 3}]
    finally:
        NoHostRead.allowed = False
