"""The simulated crash of the kill-and-resume tests (a module, so DDP worker scripts can import it too)."""
from __future__ import annotations

from lightning.pytorch.callbacks import Callback


class CrashAfter(Callback):
    """Raises ``RuntimeError("simulated crash")`` right after optimizer step ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step >= self.step:
            raise RuntimeError("simulated crash")
