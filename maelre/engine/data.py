"""Data loading over ``DatasetSplits`` with a modality adapter.

Raw ``(x, label)`` samples are encoded lazily by ``adapter.encode`` inside the loader
(so preprocessing runs in worker processes) and padded by ``adapter.collate``. A
loader yields ``(batch, labels)`` where ``batch`` is the adapter's dict, or
``{"left": ..., "right": ...}`` for two-tower tasks whose inputs are ``(x1, x2)`` pairs.

Training loaders are *resumable*: the sample order is a pure function of
``(seed, epoch)`` and ``ResumableDataLoader.state_dict()`` records how many batches of
the epoch were handed out plus the random-generator state at that point, so a resumed
run replays exactly the remaining batches (Lightning calls ``state_dict`` /
``load_state_dict`` on stateful loaders when it checkpoints and resumes).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from lightning.fabric.utilities.apply_func import apply_to_collection
from torch import Tensor
from torch.utils.data import Dataset

from maelre.engine.resumable import LoaderPosition, ResumableBatchSampler, ResumableDataLoader, _world  # noqa: F401  (re-exported)
from maelre.layers.validation import validate_batch

Sample = tuple[Any, int]


class IndexedSamples(Sequence):
    """A read-only view ``samples[indices[i]]`` that keeps lazy datasets lazy."""

    def __init__(self, samples: Sequence[Sample], indices: Sequence[int]) -> None:
        self.samples = samples
        self.indices = [int(i) for i in indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Sample:  # type: ignore[override]
        return self.samples[self.indices[i]]

    @property
    def labels(self) -> np.ndarray:
        """Labels of the view (without loading inputs when the base exposes ``labels``)."""
        return labels_of(self.samples)[self.indices]


class Unlabeled(Sequence):
    """Wraps raw inputs as ``(x, -1)`` samples so unlabeled data goes through the same loaders."""

    def __init__(self, inputs: Sequence[Any]) -> None:
        self.inputs = inputs

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, i: int) -> Sample:  # type: ignore[override]
        return self.inputs[i], -1


def labels_of(samples: Sequence[Sample]) -> np.ndarray:
    """The integer labels of ``samples`` (reads every sample of a lazy dataset once)."""
    labels = getattr(samples, "labels", None)
    if labels is not None and len(labels) == len(samples):
        return np.asarray(labels, dtype=np.int64)
    return np.fromiter((int(samples[i][1]) for i in range(len(samples))), dtype=np.int64, count=len(samples))


def stratified_split(samples: Sequence[Sample], n_second: int, seed: int) -> tuple[IndexedSamples, IndexedSamples]:
    """Split ``samples`` into views of ``len - n_second`` and ``n_second`` samples (scikit-learn's ``train_test_split``).

    Stratified by label when every class can appear on both sides, else a plain seeded
    shuffle split. Both views keep the original sample order.
    """
    from sklearn.model_selection import train_test_split

    if not 0 < n_second < len(samples):
        raise ValueError(f"cannot split {len(samples)} samples into parts of {len(samples) - n_second} and {n_second}")
    labels = labels_of(samples)
    counts = np.bincount(labels)
    counts = counts[counts > 0]
    stratifiable = counts.min() >= 2 and min(n_second, len(samples) - n_second) >= len(counts)
    first, second = train_test_split(np.arange(len(samples)), test_size=n_second, random_state=seed, stratify=labels if stratifiable else None)
    return IndexedSamples(samples, np.sort(first)), IndexedSamples(samples, np.sort(second))


def split_validation(samples: Sequence[Sample], fraction: float, seed: int) -> tuple[IndexedSamples, IndexedSamples]:
    """``(train, val)``: hold out ``ceil(fraction * n)`` samples, stratified when possible."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {fraction}")
    return stratified_split(samples, math.ceil(fraction * len(samples)), seed)


def subsample(samples: Sequence[Sample], n: int | None, seed: int) -> Sequence[Sample]:
    """A seeded subset of ``n`` samples, stratified when possible; all of them if ``n`` is ``None`` or not smaller."""
    if n is None or n >= len(samples):
        return samples
    return stratified_split(samples, n, seed)[1]


class EncodedDataset(Dataset):
    """``samples[i] = (x, y)`` -> ``(adapter.encode(x), y)``; ``x`` is a pair for two-tower tasks.

    With ``cache=True`` encoded items are memoised (per worker process); use it only for
    adapters whose ``encode`` is deterministic (no random augmentation).
    """

    def __init__(self, samples: Sequence[Sample], adapter: Any, two_tower: bool = False, cache: bool = False) -> None:
        self.samples = samples
        self.adapter = adapter
        self.two_tower = two_tower
        self._cache: dict[int, tuple[Any, int]] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.samples)

    def _encode(self, x: Any) -> Any:
        if self.two_tower:
            if not (isinstance(x, (tuple, list)) and len(x) == 2):
                raise ValueError(f"two-tower data needs (left, right) input pairs, got {type(x).__name__}; set model.two_tower=false for single inputs")
            return self.adapter.encode(x[0]), self.adapter.encode(x[1])
        return self.adapter.encode(x)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        if self._cache is not None and i in self._cache:
            return self._cache[i]
        x, y = self.samples[i]
        item = (self._encode(x), int(y))
        if self._cache is not None:
            self._cache[i] = item
        return item


class BatchCollator:
    """``[(encoded, y), ...] -> (batch, labels [B])`` through ``adapter.collate`` (picklable for workers).

    Each batch's values (NaN, all-padding rows) are checked here, on CPU, once, so the
    model's forward needs no host-synced checks (``maelre.layers.validation``). With
    ``buckets`` (``adapter.bucket_lengths(k)``) every batch is padded (masked) up to one of
    those lengths: a compiled fit then sees at most ``k`` sequence lengths.
    """

    def __init__(self, adapter: Any, two_tower: bool = False, buckets: Sequence[int] | None = None) -> None:
        self.adapter = adapter
        self.two_tower = two_tower
        self.buckets = None if buckets is None else tuple(buckets)

    def __call__(self, items: list[tuple[Any, int]]) -> tuple[dict, Tensor]:
        labels = torch.tensor([y for _, y in items], dtype=torch.long)
        if self.two_tower:
            return {"left": self._collate([enc[0] for enc, _ in items]), "right": self._collate([enc[1] for enc, _ in items])}, labels
        return self._collate([enc for enc, _ in items]), labels

    def _collate(self, encoded: list) -> dict:
        batch = self.adapter.collate(encoded) if self.buckets is None else self.adapter.collate(encoded, buckets=self.buckets)
        validate_batch(batch, owner=getattr(self.adapter, "modality", "adapter"))
        return batch


def batch_size_of(batch: dict) -> int:
    """Number of samples in an adapter (or two-tower) batch."""
    side = batch["left"] if "left" in batch and "right" in batch else batch
    return int(side["mask"].shape[0])


def token_total(batch: dict) -> Tensor:
    """Real tokens in a batch as a 0-d tensor on the batch's device (no host sync); both sides for two-tower."""
    if "left" in batch and "right" in batch:
        return token_total(batch["left"]) + token_total(batch["right"])
    return batch["mask"].sum()


def token_count(batch: dict) -> int:
    """Real tokens in a batch (both sides for two-tower); ``mask`` marks real positions."""
    return int(token_total(batch))



def sample_lengths(samples: Sequence[Sample], adapter: Any, two_tower: bool = False) -> list[int]:
    """Token count of every sample (``adapter.num_tokens``; the longer side for pairs).

    A view with an ``unaugmented`` attribute (``AugmentedSamples``) is measured on its raw
    inputs: its augmentations keep lengths (bucketing needs them only roughly anyway), and
    drawing an augmentation per sample just to measure it took 96,000 ListOps examples
    minutes (~2 ms each).
    """
    samples = getattr(samples, "unaugmented", samples)
    if two_tower:
        return [max(adapter.num_tokens(x[0]), adapter.num_tokens(x[1])) for x, _ in (samples[i] for i in range(len(samples)))]
    return [adapter.num_tokens(samples[i][0]) for i in range(len(samples))]


def bucket_lengths_of(adapter: Any, count: int | None) -> tuple[int, ...] | None:
    """``adapter.bucket_lengths(count)``, or ``None`` for ``count=None`` and adapters without buckets."""
    if count is None:
        return None
    method = getattr(adapter, "bucket_lengths", None)
    return None if method is None else method(count)


def make_dataloader(
    samples: Sequence[Sample],
    adapter: Any,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    num_workers: int = 0,
    two_tower: bool = False,
    bucket_by_length: bool = False,
    bucket_batches: int = 50,
    drop_last: bool = False,
    cache: bool = False,
    lengths: Sequence[int] | None = None,
    shard: bool = True,
    length_buckets: int | None = None,
) -> ResumableDataLoader:
    """A loader of ``(batch, labels)`` over raw ``(x, y)`` samples.

    Args:
        samples: sequence of ``(x, label)``; ``x`` is an ``(x1, x2)`` pair when ``two_tower``.
        adapter: a fitted modality adapter (``encode``/``collate``).
        batch_size: samples per batch (per process under ``torch.distributed``).
        shuffle: new ``(seed, epoch)``-determined order every epoch (training: under
            ``torch.distributed`` every process then gets the same number of batches;
            unshuffled loaders are sharded for evaluation and keep every sample).
        seed: base seed of the order.
        num_workers: worker processes running ``adapter.encode``.
        two_tower: yield ``{"left": batch, "right": batch}``.
        bucket_by_length: group similar lengths into batches (training only: needs
            ``shuffle``; evaluation keeps the input order so outputs line up).
        bucket_batches: batches per length-sorted chunk of the shuffled order (fewer: less
            padding saved, batches less tied to length).
        drop_last: drop the last short batch (kept when it is the only one).
        cache: memoise encoded samples (deterministic ``encode`` only).
        lengths: precomputed token counts for bucketing (default: ``adapter.num_tokens``).
        shard: under ``torch.distributed``, give this process only its share of the batches
            (Lightning loops); ``False`` for loops that must see every sample.
        length_buckets: pad every batch's sequence length up to one of at most this many
            lengths (``adapter.bucket_lengths``; compiled fits); ``None`` pads to the batch's longest.

    Returns:
        a ``ResumableDataLoader``; batches are ``(batch_dict, labels [B] long)``.
    """
    if bucket_by_length and not shuffle:
        raise ValueError("bucket_by_length reorders samples and is only for shuffled training loaders; set shuffle=True or bucket_by_length=False")
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    if bucket_by_length and lengths is None:
        lengths = sample_lengths(samples, adapter, two_tower)
    sampler = ResumableBatchSampler(
        len(samples), batch_size, shuffle, seed, drop_last, lengths if bucket_by_length else None, bucket_batches,
        index_offset=getattr(samples, "index_offset", None), for_eval=not shuffle, shard=shard,
    )
    return ResumableDataLoader(
        EncodedDataset(samples, adapter, two_tower, cache),
        sampler,
        collate_fn=BatchCollator(adapter, two_tower, bucket_lengths_of(adapter, length_buckets)),
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )


def move_to(batch: Any, device: torch.device) -> Any:
    """Move every tensor of a nested dict/list/tuple batch to ``device``."""
    return apply_to_collection(batch, Tensor, Tensor.to, device, non_blocking=True)


def tensors_of(batch: Any) -> list[Tensor]:
    """The tensors of a nested dict/list/tuple batch, in order."""
    found: list[Tensor] = []
    apply_to_collection(batch, Tensor, found.append)
    return found


def repeat_last_rows(batch: Any, rows: int) -> Any:
    """A batch of ``rows`` samples: ``batch`` followed by copies of its last sample.

    Every tensor of the nested dict/list/tuple is padded along dim 0 (its sample dim).
    The copies are real samples (an all-padding row would be invalid input); in eval mode
    a model's outputs for the first samples do not depend on them, so slicing the outputs
    back to the original count is exact.
    """
    def pad(tensor: Tensor) -> Tensor:
        extra = rows - tensor.shape[0]
        return tensor if extra <= 0 else torch.cat([tensor, tensor[-1:].expand(extra, *tensor.shape[1:])])

    return apply_to_collection(batch, Tensor, pad)
