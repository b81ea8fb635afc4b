"""A whole image data set on the accelerator, with per-step batched augmentation (``data.on_device``).

Tiny models on a GPU are bound by the input pipeline: encoding 1,024-pixel images one by
one in Python costs more than the forward pass. ``DeviceImageLoader`` instead holds the
uint8 images ``[N, H, W]`` (60,000 x 32 x 32 = 60 MB for sCIFAR-10) on the device,
moved there once, and builds each batch by indexing: ``{"pixels": long [B, H*W],
"mask": bool [B, H*W]}``, exactly what the "pixels" adapter (``channels="gray"``) would
collate. Augmentation runs on the batch, on the device, before flattening:

* ``hflip``: mirror each image left-right with probability 1/2;
* ``shift``: move each image by ``(dy, dx)``, each uniform in ``[-shift, shift]``, filling with zeros.

The batch order is a :class:`~maelre.engine.data.ResumableBatchSampler`'s and the
augmentation draws of step ``k`` of epoch ``e`` come from a CPU generator seeded by
``(seed, e, k)``, so a run is reproducible, identical on CPU and GPU, and a resumed run
replays the same batches and augmentations.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from maelre.engine.data import labels_of
from maelre.engine.resumable import LoaderPosition, ResumableBatchSampler

AUGMENT_KEYS = ("hflip", "shift")


@dataclass(frozen=True)
class ImageAugment:
    """Batched image augmentation applied before flattening (recipe ``data.augment``).

    Attributes:
        hflip: mirror left-right with probability 1/2.
        shift: largest shift in pixels along each axis (0: none); uncovered pixels are 0.
    """

    hflip: bool = False
    shift: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.hflip, bool):
            raise ValueError(f"augment.hflip must be true or false, got {self.hflip!r}")
        if isinstance(self.shift, bool) or not isinstance(self.shift, int) or self.shift < 0:
            raise ValueError(f"augment.shift must be an integer >= 0 (pixels), got {self.shift!r}")

    @property
    def active(self) -> bool:
        return self.hflip or self.shift > 0


def augment_draws(n: int, augment: ImageAugment, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """Random parameters of ``n`` augmentations (CPU): ``flip bool [n]``, ``dy long [n]``, ``dx long [n]``."""
    flip = torch.rand(n, generator=generator) < 0.5 if augment.hflip else torch.zeros(n, dtype=torch.bool)
    s = augment.shift
    shifts = torch.randint(-s, s + 1, (2, n), generator=generator) if s else torch.zeros(2, n, dtype=torch.long)
    return flip, shifts[0], shifts[1]


def augment_images(images: Tensor, flip: Tensor, dy: Tensor, dx: Tensor, shift: int) -> Tensor:
    """Flip then shift a batch of images.

    Args:
        images: ``[B, H, W]`` (any dtype).
        flip: ``bool [B]``: mirror image ``b`` left-right.
        dy, dx: ``long [B]`` in ``[-shift, shift]``: output pixel ``(i, j)`` is input pixel
            ``(i - dy, j - dx)`` (content moves down by ``dy``, right by ``dx``), 0 where
            that falls outside the image.
        shift: the bound of ``dy`` and ``dx`` (the zero padding added).

    Returns:
        ``[B, H, W]``, same dtype and device as ``images``.
    """
    out = torch.where(flip.view(-1, 1, 1), images.flip(-1), images)
    if shift == 0:
        return out
    b, h, w = images.shape
    padded = F.pad(out, (shift, shift, shift, shift))
    rows = (shift - dy).view(-1, 1) + torch.arange(h, device=images.device)
    cols = (shift - dx).view(-1, 1) + torch.arange(w, device=images.device)
    return padded[torch.arange(b, device=images.device).view(-1, 1, 1), rows.view(b, h, 1), cols.view(b, 1, w)]


def stack_images(samples: Sequence[tuple[Any, int]]) -> tuple[Tensor, Tensor]:
    """``(x, label)`` samples of uint8 gray images ``[H, W]`` (or ``[H, W, 1]``) -> ``(uint8 [N, H, W], long [N])``.

    Raises ``ValueError`` for colour, non-uint8 or differently sized images (``data.on_device``
    takes grayscale uint8 images of one size, e.g. the ``scifar10`` data set or ``cifar10`` with ``grayscale: true``).
    """
    first = np.asarray(samples[0][0])
    images = np.empty((len(samples), *first.shape[:2]), dtype=np.uint8)
    for i in range(len(samples)):
        x = np.asarray(samples[i][0])
        if x.ndim == 3 and x.shape[-1] == 1:
            x = x[..., 0]
        if x.dtype != np.uint8 or x.shape != images.shape[1:]:
            raise ValueError(f"data.on_device needs grayscale uint8 images of one size {images.shape[1:]}; sample {i} is "
                             f"{x.dtype} {x.shape} (use the scifar10 data set, or cifar10 with grayscale: true)")
        images[i] = x
    return torch.from_numpy(images), torch.from_numpy(labels_of(samples))


class DeviceImageLoader:
    """Batches ``({"pixels": long [B, N], "mask": bool [B, N]}, labels long [B])`` cut from images held on one device.

    ``N = H * W`` rounded up to ``pad_to_multiple`` (padded positions are 0 and masked out).
    Implements Lightning's stateful-loader protocol like ``ResumableDataLoader``.

    Args:
        images: uint8 ``[N_samples, H, W]``.
        labels: long ``[N_samples]``.
        batch_sampler: the batch order (shuffled and seeded for training).
        augment: augmentation for training batches (``None``: none).
        pad_to_multiple: the backbone's length multiple (the adapter's ``pad_to_multiple``).
    """

    def __init__(self, images: Tensor, labels: Tensor, batch_sampler: ResumableBatchSampler,
                 augment: ImageAugment | None = None, pad_to_multiple: int = 1) -> None:
        if images.dtype != torch.uint8 or images.dim() != 3 or labels.shape != images.shape[:1]:
            raise ValueError(f"need uint8 images [N, H, W] and labels [N], got {images.dtype} {tuple(images.shape)}, {tuple(labels.shape)}")
        self.images = images
        self.labels = labels.long()
        self.batch_sampler = batch_sampler
        self.augment = augment if augment is not None and augment.active else None
        n = images.shape[1] * images.shape[2]
        self.padded_length = -(-n // pad_to_multiple) * pad_to_multiple
        self.position = LoaderPosition(batch_sampler)

    @property
    def device(self) -> torch.device:
        return self.images.device

    def to(self, device: torch.device | str) -> "DeviceImageLoader":
        """Move the data set to ``device`` (once; later calls with the same device do nothing)."""
        self.images = self.images.to(device)
        self.labels = self.labels.to(device)
        return self

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __iter__(self) -> Iterator[tuple[dict[str, Tensor], Tensor]]:
        sampler = self.batch_sampler
        # A generator: nothing runs until the first batch is requested (see ResumableDataLoader).
        self.position.begin()
        epoch, step, total = sampler.epoch, sampler.pending_skip, len(self)
        for indices in sampler:
            batch = self.batch(torch.as_tensor(indices), epoch, step)
            step += 1
            self.position.advance(total)  # before handing it out, so a checkpoint right after counts it
            yield batch

    def batch(self, indices: Tensor, epoch: int = 0, step: int = 0) -> tuple[dict[str, Tensor], Tensor]:
        """The batch of ``indices`` (augmented with the draws of ``(seed, epoch, step)`` if augmenting)."""
        index = indices.to(self.device, non_blocking=True)
        images = self.images[index]
        if self.augment is not None:
            seed = self.batch_sampler.seed
            generator = torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 1_000_033 + step)
            flip, dy, dx = (t.to(self.device, non_blocking=True) for t in augment_draws(len(index), self.augment, generator))
            images = augment_images(images, flip, dy, dx, self.augment.shift)
        return self.tokens(images), self.labels[index]

    def tokens(self, images: Tensor) -> dict[str, Tensor]:
        """uint8 ``[B, H, W]`` -> ``{"pixels": long [B, N], "mask": bool [B, N]}`` in raster order, padded to ``N``."""
        b = images.shape[0]
        pixels = images.reshape(b, -1).long()
        mask = torch.ones_like(pixels, dtype=torch.bool)
        extra = self.padded_length - pixels.shape[1]
        if extra:
            pixels, mask = F.pad(pixels, (0, extra)), F.pad(mask, (0, extra))
        return {"pixels": pixels, "mask": mask}

    def state_dict(self) -> dict:
        return self.position.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.position.load_state_dict(state)


class MoveLoadersToDevice(Callback):
    """Moves ``DeviceImageLoader`` data sets to the training device once, when fitting starts."""

    def __init__(self, *loaders: DeviceImageLoader | None) -> None:
        self.loaders = [loader for loader in loaders if loader is not None]

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        for loader in self.loaders:
            loader.to(trainer.strategy.root_device)


def make_device_loader(samples: Sequence[tuple[Any, int]], adapter: Any, batch_size: int, shuffle: bool, seed: int = 0,
                       augment: ImageAugment | None = None, drop_last: bool = False) -> DeviceImageLoader:
    """A ``DeviceImageLoader`` over grayscale image samples, checked against ``adapter``.

    The first sample's batch is compared with ``adapter.collate([adapter.encode(x)])``;
    an adapter that would encode the images differently (not "pixels" with
    ``channels="gray"``, or a shorter ``max_len``) is an error, so both paths train on the same tokens.
    """
    images, labels = stack_images(samples)
    loader = DeviceImageLoader(images, labels, ResumableBatchSampler(len(samples), batch_size, shuffle, seed, drop_last),
                               augment, getattr(adapter.config, "pad_to_multiple", 1))
    got = loader.tokens(images[:1])
    try:
        expected, cause = adapter.collate([adapter.encode(samples[0][0])]), ""
    except ValueError as err:
        expected, cause = None, f" ({err})"
    same = expected is not None and set(expected) == set(got) and all(torch.equal(expected[k].cpu(), got[k]) for k in expected)
    if not same:
        raise ValueError(f"data.on_device builds pixel batches itself, but adapter {type(adapter).__name__} encodes these "
                         f"images differently{cause}; use data.adapter {{name: pixels, channels: gray}} with max_len >= H*W, "
                         "or set data.on_device: false")
    return loader


__all__ = ["AUGMENT_KEYS", "DeviceImageLoader", "ImageAugment", "MoveLoadersToDevice", "augment_draws", "augment_images",
           "make_device_loader", "stack_images"]
