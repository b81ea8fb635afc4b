"""Image datasets: CIFAR-10 (``"cifar10"``) through ``torchvision.datasets.CIFAR10``, and
scikit-learn's bundled handwritten digits (``"digits"``), which need no download.

Inputs are ``np.ndarray uint8 [H, W, C]`` (HWC, C = 3, or 1 with ``grayscale=True``; digits: C = 1).
"""
from __future__ import annotations

import os

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits as sklearn_digits
from torchvision.datasets import CIFAR10

from modalities.base import DatasetSplits
from modalities.datasets import register_dataset
from modalities.datasets.io import LazySplit, carve_validation, resolve_root
from modalities.image import rgb_to_gray

CIFAR10_HINT = (
    "CIFAR-10 is the folder 'cifar-10-batches-py' (data_batch_1..5, test_batch, batches.meta) extracted from "
    "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz. Pass root= the folder that contains it, or download=True."
)


class _UncheckedCIFAR10(CIFAR10):
    """``CIFAR10`` that checks only that the files exist, for custom or subsampled copies."""

    train_list = [[name, None] for name, _ in CIFAR10.train_list]
    test_list = [[name, None] for name, _ in CIFAR10.test_list]
    meta = {**CIFAR10.meta, "md5": None}


def gray_hwc(image: np.ndarray) -> np.ndarray:
    """``uint8 [H, W, 3]`` -> ``uint8 [H, W, 1]`` with the "pixels" adapter's own BT.601 luma (``rgb_to_gray``)."""
    return rgb_to_gray(image)[..., None]


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
        root: folder holding ``cifar-10-batches-py`` (``None``: ``../shared/data/cifar10`` or
            ``$MAELRE_DATA/cifar10``).
        grayscale: convert each image on access to one luma channel (ITU-R BT.601
            weights, as the LRA Image / sequential-CIFAR task uses) with the "pixels"
            adapter's own ``rgb_to_gray``, so the result is what that adapter computes
            from the RGB image.
        val_fraction: share of train moved to ``val``, stratified by class and seeded.
        seed: seed of the validation carve.
        download: fetch the archive with torchvision into ``root`` if absent.
        verify_checksums: check the files against torchvision's MD5 sums (turn off for a
            custom copy in the same layout).

    Returns:
        ``DatasetSplits`` with modality ``"image"``: items ``uint8 [32, 32, 3]`` (or
        ``[32, 32, 1]``), classes from ``batches.meta`` (airplane, automobile, ...).
    """
    root = resolve_root(root, "cifar10", CIFAR10_HINT)
    folder = root / CIFAR10.base_folder
    if not download:
        names = [name for name, _ in CIFAR10.train_list + CIFAR10.test_list] + [CIFAR10.meta["filename"]]
        missing = [name for name in names if not (folder / name).is_file()]
        if missing:
            what = "folder not found" if not folder.is_dir() else f"is missing {', '.join(missing)}"
            raise FileNotFoundError(f"CIFAR-10 {folder} {what}. {CIFAR10_HINT}")
    dataset_class = CIFAR10 if verify_checksums else _UncheckedCIFAR10
    try:
        train = dataset_class(str(root), train=True, download=download)
        test = dataset_class(str(root), train=False, download=download)
    except OSError as err:  # offline download (URLError)
        raise FileNotFoundError(f"could not download CIFAR-10 into {root} ({err}). {CIFAR10_HINT}") from err
    except RuntimeError as err:  # torchvision: "Dataset not found or corrupted"
        raise ValueError(f"CIFAR-10 files in {folder} fail torchvision's checksum ({err}); re-download them, "
                         "or pass verify_checksums=False for a custom copy in the same layout") from err
    load = gray_hwc if grayscale else None
    train_split, val_split = carve_validation(LazySplit(train.data, train.targets, load), val_fraction, seed)
    return DatasetSplits(
        train=train_split,
        test=LazySplit(test.data, test.targets, load),
        val=val_split,
        classes=list(train.classes),
        modality="image",
        meta={"source": "cifar10", "root": str(root), "grayscale": grayscale, "val_fraction": val_fraction, "seed": seed},
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
