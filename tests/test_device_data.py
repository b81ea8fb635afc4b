"""On-device image batches (data.on_device) and batched augmentation: flips, shifts, seeding, resume, adapter parity."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from maelre.engine.data import ResumableBatchSampler
from maelre.engine.device_data import (
    DeviceImageLoader, ImageAugment, augment_draws, augment_images, make_device_loader, stack_images,
)
from modalities import create_adapter


def ramp(b: int = 2, h: int = 6, w: int = 5) -> torch.Tensor:
    """Images whose every pixel is distinct: value = 10 * row + col + 1 (+ 100 * image), so 0 is only padding."""
    rows = torch.arange(h).view(-1, 1) * 10 + torch.arange(w).view(1, -1) + 1
    return torch.stack([rows + 100 * i for i in range(b)]).to(torch.uint8)


def test_flip_mirrors_columns_only_where_asked() -> None:
    x = ramp()
    out = augment_images(x, torch.tensor([True, False]), torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long), 0)
    assert torch.equal(out[0], x[0].flip(-1)) and torch.equal(out[1], x[1])
    assert out[0, 2].tolist() == [25, 24, 23, 22, 21]  # row 2 reversed, rows stay in place


def test_shift_moves_content_and_fills_zeros() -> None:
    x = ramp(h=6, w=5)
    no = torch.zeros(2, dtype=torch.bool)
    out = augment_images(x, no, torch.tensor([2, -1]), torch.tensor([-3, 1]), 4)
    # image 0: down by 2, left by 3 -> out[i, j] = x[i - 2, j + 3]
    expected0 = torch.zeros(6, 5, dtype=torch.uint8)
    expected0[2:, :2] = x[0, :4, 3:]
    assert torch.equal(out[0], expected0)
    # image 1: up by 1, right by 1 -> out[i, j] = x[i + 1, j - 1]
    expected1 = torch.zeros(6, 5, dtype=torch.uint8)
    expected1[:5, 1:] = x[1, 1:, :4]
    assert torch.equal(out[1], expected1)
    flipped = augment_images(x, torch.tensor([True, True]), torch.zeros(2, dtype=torch.long), torch.tensor([1, 1]), 1)
    assert torch.equal(flipped[:, :, 1:], x.flip(-1)[:, :, :-1]) and (flipped[:, :, 0] == 0).all()  # flip, then shift


def test_draws_are_seeded_and_bounded() -> None:
    aug = ImageAugment(hflip=True, shift=4)
    a = augment_draws(4096, aug, torch.Generator().manual_seed(3))
    b = augment_draws(4096, aug, torch.Generator().manual_seed(3))
    c = augment_draws(4096, aug, torch.Generator().manual_seed(4))
    assert all(torch.equal(u, v) for u, v in zip(a, b)) and not torch.equal(a[1], c[1])
    flip, dy, dx = a
    assert 0.45 < flip.float().mean() < 0.55
    assert set(dy.tolist()) == set(range(-4, 5)) == set(dx.tolist())
    with pytest.raises(ValueError, match="shift must be an integer >= 0"):
        ImageAugment(shift=-1)


def gray_samples(n: int = 12, seed: int = 0) -> list[tuple[np.ndarray, int]]:
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, 256, (4, 4), dtype=np.uint8), i % 3) for i in range(n)]


def test_batches_match_the_pixels_adapter_and_pad() -> None:
    samples = gray_samples()
    adapter = create_adapter("pixels", dim=8, max_len=16, pad_to_multiple=8)
    loader = make_device_loader(samples, adapter, batch_size=5, shuffle=False)
    batch, labels = next(iter(loader))
    expected = adapter.collate([adapter.encode(x) for x, _ in samples[:5]])
    assert batch["pixels"].shape == (5, 16) and torch.equal(batch["pixels"], expected["pixels"])
    assert torch.equal(batch["mask"], expected["mask"]) and labels.tolist() == [0, 1, 2, 0, 1]
    odd = create_adapter("pixels", dim=8, max_len=24, pad_to_multiple=12)  # 16 pixels -> padded to 24, last 8 masked
    padded, _ = make_device_loader(samples, odd, batch_size=2, shuffle=False).batch(torch.tensor([0, 1]))
    assert padded["pixels"].shape == (2, 24) and padded["mask"][:, 16:].sum() == 0 and padded["mask"][:, :16].all()
    rgb = create_adapter("pixels", dim=8, max_len=16, channels="rgb")
    with pytest.raises(ValueError, match="encodes these images differently"):
        make_device_loader(samples, rgb, batch_size=4, shuffle=False)
    with pytest.raises(ValueError, match="grayscale uint8 images of one size"):
        stack_images([(np.zeros((4, 4, 3), np.uint8), 0)] + samples)


def test_augmented_epochs_are_seeded_and_resume_exactly() -> None:
    images, labels = stack_images(gray_samples(20))
    aug = ImageAugment(hflip=True, shift=1)

    def loader(seed: int = 0) -> DeviceImageLoader:
        return DeviceImageLoader(images, labels, ResumableBatchSampler(20, 4, shuffle=True, seed=seed), aug)

    def run(dl: DeviceImageLoader, n: int) -> list[torch.Tensor]:
        """The next ``n`` batches, starting a new pass at each epoch's end as Lightning does."""
        out: list[torch.Tensor] = []
        while len(out) < n:
            out += [batch["pixels"] for _, (batch, _y) in zip(range(n - len(out)), dl)]
        return out

    first = run(loader(), 8)  # 5 batches per epoch: crosses into epoch 1
    assert all(torch.equal(a, b) for a, b in zip(first, run(loader(), 8)))
    assert not torch.equal(first[0], run(loader(seed=1), 1)[0])
    assert not torch.equal(first[0], first[5])  # a new order and new draws in epoch 1
    part = loader()
    run(part, 3)
    state = part.state_dict()
    resumed = loader()
    resumed.load_state_dict(state)
    assert state["epoch"] == 0 and state["batches"] == 3
    assert all(torch.equal(a, b) for a, b in zip(run(resumed, 5), first[3:8]))
    plain = DeviceImageLoader(images, labels, ResumableBatchSampler(20, 20, shuffle=False))
    assert torch.equal(next(iter(plain))[0]["pixels"].view(20, 4, 4).to(torch.uint8), images)  # no augmentation: identity
