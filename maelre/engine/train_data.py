"""Training-set views: label-preserving input augmentation and an epoch curriculum over data sets.

Both wrap raw ``(x, y)`` sample sequences, so they work with every adapter and loader:

* ``AugmentedSamples`` applies random, label- and length-preserving transforms to the raw input each
  time a training sample is read (``"listops_shuffle"``: operands of every ListOps
  operator in a random order, handed on as a ``modalities.text.SplitText`` of its tokens,
  whose text is ``shuffle_operands``'s for the same draws; ``"hflip"``/``"vflip"``: mirror an image, which keeps
  Pathfinder's connectivity label). Randomness comes from torch's global generator, which
  the data loader seeds per worker and ``--resume`` restores, so runs stay reproducible.
* ``CurriculumSamples`` holds one training set per stage (e.g. Pathfinder at contour
  lengths 6, 9, 14) of equal size ``n``. Its ``index_offset(epoch)`` tells the batch
  sampler which stage an epoch reads (``maelre.engine.data.ResumableBatchSampler``):
  indices ``stage * n .. stage * n + n - 1``. The stage is a function of the epoch alone,
  so worker processes, resumed runs and the sampler always agree.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from maelre.suggest import did_you_mean

Sample = tuple[Any, int]


def _generator() -> np.random.Generator:
    """A numpy generator drawn from torch's global RNG (seeded per loader worker, restored on resume)."""
    return np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))


def _listops_shuffle(x: Any) -> Any:
    """``shuffle_operands(x)`` as a ``SplitText`` of its tokens: the text adapter's word tokenizer maps them without re-splitting."""
    from modalities.datasets.listops_shuffle import shuffle_operand_words

    if not isinstance(x, str):
        raise ValueError(f"augmentation 'listops_shuffle' needs ListOps expression strings, got {type(x).__name__}")
    return shuffle_operand_words(x, _generator())


def _flip(axis: int, name: str) -> Callable[[Any], Any]:
    def flip(x: Any) -> Any:
        arr = np.asarray(x)
        if arr.ndim not in (2, 3):
            raise ValueError(f"augmentation {name!r} needs images [H, W] or [H, W, C], got an input of shape {arr.shape}")
        return np.ascontiguousarray(np.flip(arr, axis)) if torch.rand(()) < 0.5 else arr

    return flip


AUGMENTATIONS: dict[str, Callable[[Any], Any]] = {
    "listops_shuffle": _listops_shuffle,
    "hflip": _flip(1, "hflip"),
    "vflip": _flip(0, "vflip"),
}
"""Label-preserving raw-input augmentations by recipe name (``data.augment_inputs``)."""


def check_augmentations(names: Sequence[str]) -> None:
    """``ValueError`` for an unknown or repeated augmentation name."""
    for name in names:
        if name not in AUGMENTATIONS:
            raise ValueError(f"unknown augmentation {name!r}{did_you_mean(name, AUGMENTATIONS)} Available: {', '.join(AUGMENTATIONS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"augmentations are listed more than once: {list(names)}")


class AugmentedSamples(Sequence):
    """``samples`` whose inputs pass through the named augmentations, freshly drawn at every read.

    The first sample is augmented once at construction, so an augmentation that does not
    fit the data (a flip on text) fails before training starts. Attributes the wrapped
    sequence exposes for the loader (``labels``, ``index_offset``) pass through.
    """

    def __init__(self, samples: Sequence[Sample], names: Sequence[str]) -> None:
        check_augmentations(names)
        self.samples = samples
        self.transforms = [AUGMENTATIONS[name] for name in names]
        if len(samples):
            state = torch.get_rng_state()
            self[0]
            torch.set_rng_state(state)  # the check must not shift the run's random stream

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> Sample:  # type: ignore[override]
        x, y = self.samples[i]
        for transform in self.transforms:
            x = transform(x)
        return x, y

    @property
    def unaugmented(self) -> Sequence[Sample]:
        """The raw samples; lengths are measured on them (every augmentation here keeps a sample's length)."""
        return self.samples

    def __getattr__(self, name: str) -> Any:
        if name in ("labels", "index_offset"):
            return getattr(self.samples, name)
        raise AttributeError(name)


class CurriculumSamples(Sequence):
    """One equal-sized training set per stage; stage ``s`` is read for ``epochs[s]`` epochs, the last to the end.

    ``len()`` is the size ``n`` of one stage (what an epoch reads); valid indices run over
    all stages, ``0 .. n * len(stages) - 1``; ``index_offset(epoch)`` is ``n * stage``.

    Args:
        stages: training sets, easiest first, all of the same length.
        epochs: epochs of every stage but the last (``len(stages) - 1`` positive ints).
    """

    def __init__(self, stages: Sequence[Sequence[Sample]], epochs: Sequence[int]) -> None:
        if len(stages) < 2 or len(epochs) != len(stages) - 1:
            raise ValueError(f"a curriculum needs at least 2 stages and one epoch count for each but the last, got {len(stages)} and {len(epochs)}")
        sizes = [len(s) for s in stages]
        if len(set(sizes)) != 1:
            raise ValueError(f"curriculum stages must have the same number of training samples, got {sizes}; give every stage the same n_train")
        if any(e < 1 for e in epochs):
            raise ValueError(f"curriculum epochs must be >= 1, got {list(epochs)}")
        self.stages = list(stages)
        self.ends = np.cumsum(epochs).tolist()
        self.n = sizes[0]

    def stage(self, epoch: int) -> int:
        """Index of the stage read in ``epoch`` (0-based)."""
        return int(np.searchsorted(self.ends, epoch, side="right"))

    def index_offset(self, epoch: int) -> int:
        return self.n * self.stage(epoch)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Sample:  # type: ignore[override]
        if not 0 <= i < self.n * len(self.stages):
            raise IndexError(f"index {i} out of range for a curriculum of {len(self.stages)} stages of {self.n} samples")
        return self.stages[i // self.n][i % self.n]


__all__ = ["AUGMENTATIONS", "AugmentedSamples", "CurriculumSamples", "check_augmentations"]
