"""Resumable training batches: an order that is a pure function of ``(seed, epoch)``, and a loader that can stop and resume mid-epoch.

``ResumableDataLoader.state_dict()`` records how many batches of the epoch were handed
out plus the random-generator state at that point, so a resumed run replays exactly the
remaining batches (Lightning calls ``state_dict`` / ``load_state_dict`` on stateful loaders
when it checkpoints and resumes). Under ``torch.distributed`` the batches are split across processes.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler

from maelre.engine.seed import rng_state, set_rng_state


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class ResumableBatchSampler(Sampler[list[int]]):
    """Batches whose order depends only on ``(seed, epoch)``; can start mid-epoch.

    ``ResumableDataLoader`` advances the epoch itself after handing out an epoch's last
    batch (Lightning calls ``set_epoch`` only on ``loader.sampler``, not on batch samplers).

    Args:
        num_samples: dataset size.
        batch_size: samples per batch (per process under ``torch.distributed``).
        shuffle: permute each epoch (with a generator seeded by ``seed`` and ``epoch``).
        seed: base seed of the permutation.
        drop_last: drop a final short (global) batch, unless it is the epoch's only batch
            (fewer samples than one batch): every batch then has ``batch_size`` samples,
            or all have the same smaller size (``trainer.compile`` relies on this).
        lengths: per-sample token counts; when given (and ``shuffle``), batches are
            length-bucketed: each chunk of ``bucket_batches`` batches of a random
            permutation is sorted by length before cutting it into batches, and the
            batch order is shuffled, so padding shrinks while batches stay random.
        bucket_batches: batches per sorting chunk.
        index_offset: ``epoch -> offset`` added to every index of that epoch (a
            ``CurriculumSamples`` picks its stage this way); ``None`` = no offset.
        for_eval: shard for evaluation (see below).
        shard: split the batches across ``torch.distributed`` processes; ``False`` gives
            this process every batch (plain inference loops outside Lightning).

    Under ``torch.distributed`` with ``world_size`` processes the seeded order is cut
    into global batches of ``batch_size * world_size`` samples, exactly as one process
    with that batch size would cut it, and each global batch is split into contiguous
    per-process parts, so no sample is seen twice. A short final global batch is split
    as evenly as possible. For training (``for_eval=False``) every process must get the
    same number of batches (each step all-reduces gradients), so a final global batch
    with fewer samples than processes is dropped (at most ``world_size - 1`` samples an
    epoch, different ones each epoch). For evaluation every sample is kept and the
    processes that get no sample of that last batch have one batch fewer.
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        drop_last: bool = False,
        lengths: Sequence[int] | None = None,
        bucket_batches: int = 50,
        index_offset: Callable[[int], int] | None = None,
        for_eval: bool = False,
        shard: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_samples < 1:
            raise ValueError("cannot batch an empty dataset; check the dataset split and val_fraction")
        if lengths is not None and len(lengths) != num_samples:
            raise ValueError(f"lengths has {len(lengths)} entries for {num_samples} samples")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.lengths = None if lengths is None else np.asarray(lengths)
        self.bucket_batches = bucket_batches
        self.index_offset = index_offset
        self.for_eval = for_eval
        self.shard = shard
        self.epoch = 0
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's permutation (Lightning calls this at every epoch start)."""
        if epoch != self.epoch:
            self._skip = 0
        self.epoch = epoch

    def start_at(self, epoch: int, batches_done: int) -> None:
        """Make the next iteration resume ``epoch`` after its first ``batches_done`` batches."""
        self.epoch = epoch
        self._skip = batches_done

    @property
    def pending_skip(self) -> int:
        return self._skip

    def _global_batches(self, batch_size: int) -> list[np.ndarray]:
        if not self.shuffle:
            order = np.arange(self.num_samples)
        else:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.num_samples, generator=gen).numpy()
        if self.shuffle and self.lengths is not None:
            chunk = batch_size * self.bucket_batches
            order = np.concatenate([c[np.argsort(self.lengths[c], kind="stable")] for c in np.split(order, range(chunk, len(order), chunk))])
        batches = [order[i : i + batch_size] for i in range(0, self.num_samples, batch_size)]
        if self.drop_last and len(batches) > 1 and len(batches[-1]) < batch_size:
            batches.pop()
        if self.shuffle and self.lengths is not None:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch + 7_919)
            batches = [batches[i] for i in torch.randperm(len(batches), generator=gen).tolist()]
        offset = self.index_offset(self.epoch) if self.index_offset is not None else 0
        return [batch + offset for batch in batches] if offset else batches

    def _world(self) -> tuple[int, int]:
        return _world() if self.shard else (0, 1)

    def _rank_batches(self) -> list[list[int]]:
        rank, world = self._world()
        batches = self._global_batches(self.batch_size * world)
        if world > 1:
            if not self.for_eval:
                batches = [b for b in batches if len(b) >= world]
            batches = [part for part in (np.array_split(b, world)[rank] for b in batches) if len(part)]
        if world > 1 and not batches:
            raise ValueError(f"{self.num_samples} samples give no batch of {self.batch_size} per process for {world} processes; use a smaller batch_size, fewer devices or drop_last=False")
        return [b.tolist() for b in batches]

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._rank_batches()
        start, self._skip = self._skip, 0
        yield from batches[start:]

    def __len__(self) -> int:
        rank, world = self._world()
        full, rest = divmod(self.num_samples, self.batch_size * world)
        if rest == 0 or (self.drop_last and full > 0):
            return full
        # the short final global batch: kept for training when every process gets a sample of it,
        # for evaluation when this process does (np.array_split gives the first `rest` ranks one each)
        return full + int(rest >= world or (self.for_eval and rank < rest))


class LoaderPosition:
    """Where a loader over a ``ResumableBatchSampler`` stands, for Lightning's stateful-loader protocol.

    ``state_dict()`` -> ``{"epoch", "batches", "rng"}``: the epoch, how many of its
    batches were handed out, and the global RNG states at that moment. After
    ``load_state_dict`` the sampler skips the handed-out batches and ``begin()`` restores
    the RNG states just before the first batch is fetched, so augmentation and dropout
    randomness replay as in an uninterrupted run.

    Under ``torch.distributed`` only rank 0's copy of this state is saved, so it holds
    every rank's RNG states (``"rng_ranks"``, gathered from all processes: their dropout
    streams differ once their batches differ in shape) and each rank restores its own.
    """

    def __init__(self, sampler: ResumableBatchSampler) -> None:
        self.sampler = sampler
        self.yielded = 0
        self.pending_rng: dict | None = None

    def begin(self) -> None:
        """Call when the first batch of an iteration is requested."""
        self.yielded = self.sampler.pending_skip
        if self.pending_rng is not None:
            set_rng_state(self.pending_rng)
            self.pending_rng = None

    def advance(self, total: int) -> None:
        """Count one handed-out batch of ``total`` in the epoch.

        Moves to the next epoch when handing out the last batch: Lightning stops
        iterating a sized loader without exhausting it, and a checkpoint taken after
        this batch must resume at the start of the next epoch.
        """
        self.yielded += 1
        if self.yielded == total:
            self.sampler.start_at(self.sampler.epoch + 1, 0)
            self.yielded = 0

    def state_dict(self) -> dict:
        state = {"epoch": self.sampler.epoch, "batches": self.yielded, "rng": rng_state()}
        _, world = _world()
        if world > 1:  # Lightning saves checkpoints on every rank at once, so this collective is matched
            ranks: list[Any] = [None] * world
            dist.all_gather_object(ranks, state["rng"])
            state["rng_ranks"] = ranks
        return state

    def load_state_dict(self, state: dict) -> None:
        self.sampler.start_at(int(state["epoch"]), int(state["batches"]))
        rank, world = _world()
        ranks = state.get("rng_ranks")
        if ranks is not None and len(ranks) != world:
            warnings.warn(f"the checkpoint was written by {len(ranks)} processes and is resumed by {world}; data order and randomness will differ from an uninterrupted run", stacklevel=2)
        self.pending_rng = ranks[rank] if ranks is not None and rank < len(ranks) else state.get("rng")


class ResumableDataLoader(DataLoader):
    """A ``DataLoader`` over a ``ResumableBatchSampler`` implementing Lightning's stateful-loader protocol.

    The position (``state_dict`` / ``load_state_dict``) is a :class:`LoaderPosition`.
    Worker seeds are re-derived from ``(seed, epoch)`` at every iteration.

    Under ``torch.distributed`` only rank 0's copy of this state is saved, so it holds
    every rank's RNG states (``"rng_ranks"``, gathered from all processes: their dropout
    streams differ once their batches differ in shape) and each rank restores its own.
    """

    def __init__(self, dataset: Dataset, batch_sampler: ResumableBatchSampler, **kwargs: Any) -> None:
        super().__init__(dataset, batch_sampler=batch_sampler, generator=torch.Generator(), **kwargs)
        self.position = LoaderPosition(batch_sampler)

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        return self._iterate(self.batch_sampler)  # type: ignore[arg-type]

    def _iterate(self, sampler: ResumableBatchSampler) -> Iterator[Any]:
        # A generator: nothing below runs until the first batch is requested, so a
        # position loaded after the iterator was created still applies.
        self.position.begin()
        self.generator.manual_seed(sampler.seed * 1_000_003 + sampler.epoch + 104_729)
        total = len(self)
        for batch in super().__iter__():
            self.position.advance(total)
            yield batch

    def state_dict(self) -> dict:
        return self.position.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.position.load_state_dict(state)
