"""CIFAR-10 loader on a synthetic folder in the official python-pickle layout; scikit-learn digits; lazy splits."""
from __future__ import annotations

import pickle
import urllib.error
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import torchvision.datasets.utils
from modalities.datasets import load_dataset
from modalities.datasets.images import gray_hwc
from modalities.datasets.io import LazySplit, carve_validation
from modalities.image import rgb_to_gray

LABEL_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
PER_BATCH = 20


@pytest.fixture(scope="module")
def cifar(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """``root`` with ``cifar-10-batches-py`` of 5 x 20 train and 20 test random images, and the images written (NCHW)."""
    root = tmp_path_factory.mktemp("cifar")
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(PER_BATCH, 3 * 32 * 32), dtype=np.uint8)  # rows: R plane, G plane, B plane
        labels = rng.permutation(np.arange(PER_BATCH) % 10)
        with open(folder / name, "wb") as f:
            batch = {"batch_label": name, "labels": labels.tolist(), "data": data, "filenames": [f"{i}.png" for i in range(PER_BATCH)]}
            pickle.dump(batch, f, protocol=2)
        written[name] = (data.reshape(-1, 3, 32, 32), labels)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": LABEL_NAMES, "num_cases_per_batch": PER_BATCH, "num_vis": 3072}, f, protocol=2)
    return root, written


def test_cifar10_reads_the_pickle_layout(cifar) -> None:
    root, written = cifar
    data = load_dataset("cifar10", root=root, verify_checksums=False)
    assert (len(data.train), len(data.test), data.val) == (100, 20, None)
    assert data.classes == LABEL_NAMES and data.modality == "image"
    train_images = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)])
    train_labels = np.concatenate([written[f"data_batch_{i}"][1] for i in range(1, 6)])
    for split, images, labels in ((data.train, train_images, train_labels), (data.test, *written["test_batch"])):
        assert split.labels.tolist() == labels.tolist()
        for i in (0, 37 % len(split), len(split) - 1):
            image, label = split[i]
            assert image.dtype == np.uint8 and image.shape == (32, 32, 3) and label == labels[i]
            np.testing.assert_array_equal(image, images[i].transpose(1, 2, 0))  # CHW planes -> HWC


def test_cifar10_grayscale_is_lras_tensorflow_conversion(cifar) -> None:
    root, written = cifar
    color = load_dataset("cifar10", root=root, verify_checksums=False)
    gray = load_dataset("cifar10", root=root, verify_checksums=False, grayscale=True)
    assert gray.meta["grayscale"] and gray.test.labels.tolist() == color.test.labels.tolist()
    for i in range(0, 20, 3):
        rgb = color.test[i][0]
        luma = gray.test[i][0]
        assert luma.shape == (32, 32, 1) and luma.dtype == np.uint8
        # tf.image.rgb_to_grayscale: weights 0.2989/0.5870/0.1140 on [0, 1] floats, then x 255.5 and truncation
        tf_formula = np.floor((rgb.astype(np.float64) / 255) @ np.array([0.2989, 0.5870, 0.1140]) * 255.5)
        assert np.abs(luma[..., 0] - tf_formula).max() <= 1 and (luma[..., 0] == tf_formula).mean() > 0.999
        assert np.abs(luma[..., 0].astype(np.int16) - rgb_to_gray(rgb)).max() <= 1  # the adapter's rounded BT.601
    pure = np.zeros((1, 3, 3), np.uint8)
    pure[0, 0], pure[0, 1], pure[0, 2] = (255, 0, 0), (0, 255, 0), (0, 0, 255)
    assert gray_hwc(pure)[0, :, 0].tolist() == [76, 149, 29]  # floor(255.5 * weight): green 149, where rounding gives 150


def test_cifar10_validation_is_stratified_and_seeded(cifar) -> None:
    root, _ = cifar
    full = load_dataset("cifar10", root=root, verify_checksums=False)
    data = load_dataset("cifar10", root=root, verify_checksums=False, val_fraction=0.2, seed=1)
    assert (len(data.train), len(data.val)) == (80, 20)
    assert Counter(data.val.labels.tolist()) == {c: 2 for c in range(10)}
    images = lambda split: [split[i][0].tobytes() for i in range(len(split))]  # noqa: E731
    assert sorted(images(data.train) + images(data.val)) == sorted(images(full.train))
    again = load_dataset("cifar10", root=root, verify_checksums=False, val_fraction=0.2, seed=1)
    other = load_dataset("cifar10", root=root, verify_checksums=False, val_fraction=0.2, seed=2)
    assert images(again.val) == images(data.val) and images(other.val) != images(data.val)


def test_cifar10_errors(cifar, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, _ = cifar
    with pytest.raises(ValueError, match="content check.*verify_checksums=False"):  # 2 images per class, not 5,000
        load_dataset("cifar10", root=root)
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py folder not found"):
        load_dataset("cifar10", root=tmp_path)
    partial = tmp_path / "partial" / "cifar-10-batches-py"
    partial.mkdir(parents=True)
    for name in ("data_batch_1", "batches.meta"):
        (partial / name).write_bytes((root / "cifar-10-batches-py" / name).read_bytes())
    with pytest.raises(FileNotFoundError, match="is missing data_batch_2, data_batch_3, data_batch_4, data_batch_5, test_batch"):
        load_dataset("cifar10", root=partial.parent, verify_checksums=False)

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.datasets.utils, "download_and_extract_archive", offline)
    with pytest.raises(FileNotFoundError, match="could not download CIFAR-10"):
        load_dataset("cifar10", root=tmp_path / "empty", download=True)
    with pytest.raises(ValueError, match="has no setting 'greyscale'; did you mean 'grayscale'"):
        load_dataset("cifar10", root=root, greyscale=True)


# --------------------------------------------------------------------------- LazySplit / carve_validation


def _load_twice(x: np.ndarray) -> np.ndarray:
    return 2 * x


def test_lazy_split_indexing_and_subsets() -> None:
    items = np.arange(10)
    split = LazySplit(items, items % 3, load=_load_twice)
    assert len(split) == 10 and split[4] == (8, 1) and split[-1] == (18, 0)
    assert [x for x, _ in split] == list(range(0, 20, 2))  # iteration stops at IndexError
    sub = split.subset([7, 2, 9]).subset([2, 0])
    assert [sub[i] for i in range(len(sub))] == [(18, 0), (14, 1)] and sub.items == [9, 7] and sub.labels.tolist() == [0, 1]
    with pytest.raises(IndexError):
        split[10]
    with pytest.raises(TypeError, match="subset"):
        split[1:3]
    with pytest.raises(ValueError, match="one label per item"):
        LazySplit(items, [0, 1])
    assert pickle.loads(pickle.dumps(sub))[1] == (14, 1)  # picklable for data-loader workers


def test_carve_validation_keeps_order_and_rejects_bad_fractions() -> None:
    split = LazySplit(list("abcdefghijkl"), [0, 1] * 6)
    train, val = carve_validation(split, 1 / 3, seed=0)
    assert len(val) == 4 and Counter(val.labels.tolist()) == {0: 2, 1: 2}
    assert train.items == sorted(train.items) and val.items == sorted(val.items)
    assert sorted(train.items + val.items) == list("abcdefghijkl")
    assert carve_validation(split, 0.0, seed=0) == (split, None)
    with pytest.raises(ValueError, match=r"in \[0, 1\)"):
        carve_validation(split, -0.1, seed=0)
    with pytest.raises(ValueError, match="cannot carve a stratified validation split"):
        carve_validation(split, 0.05, seed=0)  # 1 example cannot cover 2 classes


def test_digits_are_real_upscaled_and_split_without_overlap() -> None:
    from sklearn.datasets import load_digits as sklearn_digits

    assert load_dataset("digits").val is None
    data = load_dataset("digits", val_fraction=0.1, seed=1)
    assert (len(data.train), len(data.val), len(data.test)) == (1257, 180, 360)
    assert data.classes == [str(d) for d in range(10)] and data.modality == "image"
    image, label = data.test[0]
    assert image.shape == (32, 32, 1) and image.dtype == np.uint8 and 0 <= label < 10
    assert set(np.bincount(data.test.labels)) <= {35, 36, 37}  # stratified
    # the three splits partition scikit-learn's 1,797 images, labels kept (size 8: the originals, rescaled)
    originals = sklearn_digits()
    expected = Counter((np.rint(im * 255 / 16).astype(np.uint8).tobytes(), int(t)) for im, t in zip(originals.images, originals.target))
    small = load_dataset("digits", size=8, val_fraction=0.1, seed=1)
    found = Counter((x.tobytes(), y) for split in (small.train, small.val, small.test) for x, y in split)
    assert found == expected
    assert np.array_equal(load_dataset("digits", seed=1).test[5][0], data.test[5][0])
    assert not all(np.array_equal(load_dataset("digits", seed=2).test[i][0], data.test[i][0]) for i in range(5))


@pytest.mark.parametrize(("settings", "message"), [
    ({"root": "somewhere"}, "takes no root"),
    ({"size": 4}, "size must be >= 8"),
    ({"test_fraction": 0.0}, "test_fraction > 0"),
    ({"test_fraction": 0.6, "val_fraction": 0.4}, "sum < 1"),
])
def test_digits_reject_bad_settings(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_dataset("digits", **settings)
