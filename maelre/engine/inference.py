"""Inference without Lightning: class probabilities (``predict_proba``) and test metrics (``evaluate``) of a trained classifier.
"""
from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import multiclass_accuracy, multiclass_confusion_matrix, multiclass_f1_score

from maelre.engine.data import Unlabeled, make_dataloader, move_to
from maelre.model import SequenceClassifier

def _default_device(device: str | torch.device | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def _logits(
    model: SequenceClassifier,
    samples: Sequence[tuple[Any, int]],
    batch_size: int,
    num_workers: int,
    device: torch.device,
    precision: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    # shard=False: after a DDP fit the process group is still up, and every process must see every sample here
    loader = make_dataloader(samples, model.adapter, batch_size, shuffle=False, num_workers=num_workers, two_tower=bool(model.two_tower), shard=False)
    model = model.to(device).eval()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16-mixed" else contextlib.nullcontext()
    outputs, labels = [], []
    with torch.inference_mode(), autocast:
        for batch, y in loader:
            outputs.append(model(move_to(batch, device)).float().cpu())
            labels.append(y)
    return torch.cat(outputs), torch.cat(labels)


def predict_proba(
    model: SequenceClassifier,
    inputs: Sequence[Any],
    batch_size: int = 64,
    num_workers: int = 0,
    device: str | torch.device | None = None,
    precision: str = "32",
) -> np.ndarray:
    """Class probabilities ``[n, C]`` (float32) for raw inputs, in input order.

    Runs a plain inference loop (no Lightning) on ``device`` (default: CUDA if available).
    """
    if len(inputs) == 0:
        raise ValueError("predict_proba got no inputs")
    logits, _ = _logits(model, Unlabeled(inputs), batch_size, num_workers, _default_device(device), precision)
    return logits.softmax(dim=-1).numpy()


def evaluate(
    model: SequenceClassifier,
    samples: Sequence[tuple[Any, int]],
    batch_size: int = 64,
    num_workers: int = 0,
    device: str | torch.device | None = None,
    precision: str = "32",
    per_sample: bool = False,
) -> dict[str, Any]:
    """Accuracy, macro-F1, mean cross-entropy and the confusion matrix (rows = true class) on labelled samples.

    ``per_sample``: also ``labels`` and ``predictions``, per sample in the samples' order (``int64 [n]`` arrays),
    so that two models scored on the same samples can be compared item by item (``maelre compare``).
    """
    if len(samples) == 0:
        raise ValueError("evaluate got no samples")
    logits, labels = _logits(model, samples, batch_size, num_workers, _default_device(device), precision)
    c = logits.shape[1]
    return {
        "acc": float(multiclass_accuracy(logits, labels, c, average="micro")),
        "f1": float(multiclass_f1_score(logits, labels, c, average="macro")),
        "loss": float(F.cross_entropy(logits, labels)),
        "n": int(labels.numel()),
        "confusion": multiclass_confusion_matrix(logits, labels, c).numpy(),
    } | ({"labels": labels.numpy().astype("int64"), "predictions": logits.argmax(dim=1).numpy().astype("int64")} if per_sample else {})
