"""Image datasets: CIFAR-10 (``"cifar10"``), its compact grayscale form (``"scifar10"``), and
scikit-learn's bundled handwritten digits (``"digits"``), which need no download.

Inputs are ``np.ndarray uint8 [H, W, C]`` (HWC, C = 3, or 1 with ``grayscale=True``; digits: C = 1).
CIFAR-10 batches are read with a restricted unpickler (numpy arrays and plain containers
only), straight from the ``cifar-10-python.tar.*`` archive (extracted once into a cache) or
from an extracted ``cifar-10-batches-py`` folder.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits as sklearn_digits

from modalities.base import DatasetSplits
from modalities.datasets import register_dataset
from modalities.datasets.archives import extract_cached, find_archive, restricted_load
from modalities.datasets.io import LazySplit, carve_validation, resolve_root

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_ARCHIVE = "cifar-10-python.tar.xz"
CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_BATCH = "test_batch"
CIFAR10_META = "batches.meta"
CIFAR10_PER_CLASS = {"train": 5000, "test": 1000}
CIFAR10_HINT = (
    f"CIFAR-10 is the archive {CIFAR10_ARCHIVE} (or .tar.gz from https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz) "
    f"or the folder '{CIFAR10_FOLDER}' (data_batch_1..5, test_batch, batches.meta) extracted from it. Pass root= the "
    "archive, or the folder that contains it or the extracted folder, or download=True."
)

LRA_GRAY_WEIGHTS = np.array([0.2989, 0.5870, 0.1140], dtype=np.float32)
"""``tf.image.rgb_to_grayscale``'s weights, which LRA Image uses (``lra_benchmarks/image/input_pipeline.py``)."""


def lra_grayscale(rgb: np.ndarray) -> np.ndarray:
    """uint8 ``[..., 3]`` -> uint8 ``[...]`` exactly as LRA computes it with ``tf.image.rgb_to_grayscale``.

    TensorFlow scales uint8 to float32 by ``1/255``, takes the weighted sum with
    ``(0.2989, 0.5870, 0.1140)`` in float32, and converts back by multiplying by
    ``255.5`` and *truncating* (``convert_image_dtype``), not rounding. The result can be
    one level below the rounded BT.601 luma of the "pixels" adapter's ``rgb_to_gray``.
    """
    scaled = rgb.astype(np.float32) * np.float32(1 / 255)
    gray = scaled @ LRA_GRAY_WEIGHTS
    return (gray * np.float32(255.5)).astype(np.uint8)


def gray_hwc(image: np.ndarray) -> np.ndarray:
    """``uint8 [H, W, 3]`` -> ``uint8 [H, W, 1]`` with LRA's grayscale (:func:`lra_grayscale`)."""
    return lra_grayscale(image)[..., None]


def read_cifar_batch(data: bytes, what: str) -> tuple[np.ndarray, np.ndarray]:
    """One pickled CIFAR-10 batch -> ``(images uint8 [n, 3072], labels int64 [n])`` (restricted unpickling).

    Rows are the red plane, then green, then blue, each 32x32 row-major. ``what`` names
    the source in errors.
    """

    try:
        batch = restricted_load(data)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as err:
        raise ValueError(f"{what} is not a readable CIFAR-10 batch ({err})") from err
    if not isinstance(batch, dict) or "data" not in batch or "labels" not in batch:
        raise ValueError(f"{what} is not a CIFAR-10 batch: expected a dict with 'data' and 'labels'")
    images = batch["data"]
    labels = np.asarray(batch["labels"])
    if not (isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim == 2 and images.shape[1] == 3072):
        shape = getattr(images, "shape", None)
        raise ValueError(f"{what}: 'data' must be uint8 [n, 3072], got {type(images).__name__} {shape}")
    if labels.shape != (images.shape[0],) or not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() > 9:
        raise ValueError(f"{what}: 'labels' must be {images.shape[0]} integers in 0..9")
    return images, labels.astype(np.int64)


def read_cifar_folder(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """``cifar-10-batches-py`` -> ``(train uint8 [N, 32, 32, 3], train labels, test images, test labels, class names)``."""
    names = [*CIFAR10_TRAIN_BATCHES, CIFAR10_TEST_BATCH, CIFAR10_META]
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        what = "folder not found" if not folder.is_dir() else f"is missing {', '.join(missing)}"
        raise FileNotFoundError(f"CIFAR-10 {folder} {what}. {CIFAR10_HINT}")
    parts = [read_cifar_batch((folder / name).read_bytes(), str(folder / name)) for name in CIFAR10_TRAIN_BATCHES]
    test, test_labels = read_cifar_batch((folder / CIFAR10_TEST_BATCH).read_bytes(), str(folder / CIFAR10_TEST_BATCH))
    meta = restricted_load((folder / CIFAR10_META).read_bytes())
    classes = [str(c) for c in meta["label_names"]] if isinstance(meta, dict) and "label_names" in meta else None
    if classes is None or len(classes) != 10:
        raise ValueError(f"{folder / CIFAR10_META} holds no list of 10 label_names")
    train = np.concatenate([p[0] for p in parts])
    train_labels = np.concatenate([p[1] for p in parts])
    return cifar_hwc(train), train_labels, cifar_hwc(test), test_labels, classes


def cifar_hwc(rows: np.ndarray) -> np.ndarray:
    """CIFAR rows uint8 ``[n, 3072]`` (R, G, B planes) -> images uint8 ``[n, 32, 32, 3]`` (HWC)."""
    return np.ascontiguousarray(rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))


def check_cifar_content(labels: np.ndarray, split: str, source: str) -> None:
    """The content check that stands in for MD5 sums: 10 classes of exactly 5,000 (train) / 1,000 (test) images."""
    counts = np.bincount(labels, minlength=10)
    expected = CIFAR10_PER_CLASS[split]
    if len(counts) != 10 or (counts != expected).any():
        raise ValueError(
            f"CIFAR-10 {split} split of {source} fails the content check: expected {expected} images of each of 10 classes, "
            f"got {counts.tolist()}; the copy is incomplete or not CIFAR-10 (pass verify_checksums=False for a deliberately "
            "subsampled copy in the same layout)"
        )


def cifar10_folder(root: str | os.PathLike | None, download: bool = False) -> Path:
    """The ``cifar-10-batches-py`` folder for ``root``: extracted from the archive into the cache, or found on disk.

    ``root`` may be the archive itself, a folder holding the archive or the extracted
    folder, or ``None`` (the default data folders, see :func:`~modalities.datasets.archives.find_archive`).
    """
    for name in (CIFAR10_ARCHIVE, "cifar-10-python.tar.gz"):
        archive = find_archive(root, "cifar10", name)
        if archive is not None:
            return extract_cached(archive, CIFAR10_FOLDER)
    root = resolve_root(root, "cifar10", CIFAR10_HINT)
    folder = root / CIFAR10_FOLDER
    if download and not folder.is_dir():
        from torchvision.datasets import CIFAR10
        from torchvision.datasets.utils import download_and_extract_archive

        try:
            download_and_extract_archive(CIFAR10.url, str(root), filename=CIFAR10.filename, md5=CIFAR10.tgz_md5)
        except OSError as err:  # offline download (URLError)
            raise FileNotFoundError(f"could not download CIFAR-10 into {root} ({err}). {CIFAR10_HINT}") from err
    return folder


@register_dataset("cifar10")
def load_cifar10(
    root: str | os.PathLike | None = None,
    *,
    grayscale: bool = False,
    val_fraction: float = 0.0,
    seed: int = 0,
    download: bool = False,
    verify_checksums: bool = True,
) -> DatasetSplits:
    """CIFAR-10: 50,000 train / 10,000 test 32x32 colour images of 10 classes.

    Args:
        root: the archive ``cifar-10-python.tar.xz`` (or ``.tar.gz``), a folder holding it
            or ``cifar-10-batches-py``; ``None``: ``../shared/data/cifar10`` or
            ``$MAELRE_DATA/cifar10``. An archive is extracted once into the cache
            (``$MAELRE_DATA/cache`` or ``~/.cache/maelre``), never beside the data.
        grayscale: convert each image on access to one channel exactly as LRA Image does
            (:func:`lra_grayscale`, TensorFlow's ``rgb_to_grayscale``).
        val_fraction: share of train moved to ``val``, stratified by class and seeded.
        seed: seed of the validation carve.
        download: fetch the archive with torchvision into ``root`` if absent.
        verify_checksums: run the content check (exactly 5,000 train and 1,000 test images
            per class, uint8 [n, 3072] batches). It replaces MD5 sums, so a re-packed copy
            with the official images in another order passes; turn it off only for a
            deliberately subsampled copy in the same layout.

    Returns:
        ``DatasetSplits`` with modality ``"image"``: items ``uint8 [32, 32, 3]`` (or
        ``[32, 32, 1]``), classes from ``batches.meta`` (airplane, automobile, ...).
    """
    folder = cifar10_folder(root, download)
    train, train_labels, test, test_labels, classes = read_cifar_folder(folder)
    if verify_checksums:
        check_cifar_content(train_labels, "train", str(folder))
        check_cifar_content(test_labels, "test", str(folder))
    load = gray_hwc if grayscale else None
    train_split, val_split = carve_validation(LazySplit(train, train_labels, load), val_fraction, seed)
    return DatasetSplits(
        train=train_split,
        test=LazySplit(test, test_labels, load),
        val=val_split,
        classes=classes,
        modality="image",
        meta={"source": "cifar10", "root": str(folder), "grayscale": grayscale, "val_fraction": val_fraction, "seed": seed},
    )


DIGITS_LEVELS = 16
"""scikit-learn's digits are 8x8 images with gray levels 0..16 (4x4 pixel counts of 32x32 bitmaps)."""


@register_dataset("digits")
def load_digits(
    root: None = None,
    *,
    size: int = 32,
    test_fraction: float = 0.2,
    val_fraction: float = 0.0,
    seed: int = 0,
) -> DatasetSplits:
    """scikit-learn's handwritten digits (UCI optdigits test set): 1,797 real 8x8 images of 10 classes.

    They ship with scikit-learn, so this loader works offline; resized to ``size`` x
    ``size`` (32: the length of sCIFAR-10's 1,024-pixel sequence), they stand in for
    CIFAR-10 where it cannot be downloaded. A real, learnable stand-in, but a far easier
    task than CIFAR-10: accuracies on it say nothing about CIFAR-10.

    Args:
        root: unused (the data comes with scikit-learn); must be ``None``.
        size: output side in pixels (bilinear resize of the 8x8 image, gray levels 0..16
            scaled to 0..255); 8 keeps the originals.
        test_fraction, val_fraction: shares of all 1,797 images held out for test and
            for validation (0: no validation split), stratified by class and seeded. A
            recipe's ``data.val_fraction`` is passed on as ``val_fraction``.
        seed: seed of the two stratified splits.

    Returns:
        ``DatasetSplits`` with modality ``"image"``: items ``uint8 [size, size, 1]``,
        classes ``"0"`` .. ``"9"``.
    """
    if root is not None:
        raise ValueError("the digits data set ships with scikit-learn and takes no root; remove data.dataset.root")
    if size < 8:
        raise ValueError(f"size must be >= 8 (the originals are 8x8), got {size}")
    if not (0 < test_fraction and 0 <= val_fraction and test_fraction + val_fraction < 1):
        raise ValueError(f"need test_fraction > 0, val_fraction >= 0 and their sum < 1 (the rest is train), "
                         f"got {test_fraction} and {val_fraction}")
    bunch = sklearn_digits()
    images = np.rint(bunch.images * (255 / DIGITS_LEVELS)).astype(np.uint8)
    if size != 8:
        images = np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.BILINEAR)) for im in images])
    everything = LazySplit(images[..., None], bunch.target)
    rest, test = carve_validation(everything, test_fraction, seed)
    train, val = carve_validation(rest, val_fraction / (1 - test_fraction), seed)
    return DatasetSplits(
        train=train,
        test=test,
        val=val,
        classes=[str(c) for c in bunch.target_names],
        modality="image",
        meta={"source": "sklearn.datasets.load_digits", "size": size, "test_fraction": test_fraction,
              "val_fraction": val_fraction, "seed": seed},
    )
