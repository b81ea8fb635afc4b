"""Pathfinder files in LRA's release layout: the difficulty folders, reading and writing PNG images plus metadata.

Files use LRA's release layout, ``<root>/<difficulty>/imgs/<k>/sample_<i>.png`` plus
``<root>/<difficulty>/metadata/<k>.npy`` -- despite the suffix, text with one
space-separated row per image (``imgs/<k> sample_<i>.png <i> <label> ...``); LRA's
builder reads columns 0, 1 and 3 (folder, file, label). The original ``np.save`` form of
the metadata is read too.
"""
from __future__ import annotations

import functools
import math
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from modalities.datasets.io import LazySplit, require_dir

DIFFICULTIES: dict[str, int] = {"curv_baseline": 6, "curv_contour_length_9": 9, "curv_contour_length_14": 14}
"""LRA's difficulty folders and their target contour lengths. LRA's leaderboard task is
the hardest (``pathfinder32_hard`` / ``pathfinder128_hard``: ``curv_contour_length_14``)."""
DEFAULT_DIFFICULTY = "curv_contour_length_14"
_NPY_MAGIC = b"\x93NUMPY"


def read_pathfinder_png(path: str | os.PathLike, size: int | None = None) -> np.ndarray:
    """Decode one image to uint8 ``[H, W]`` (colour is converted to gray); ``ValueError`` if corrupt or of the wrong size."""
    try:
        with Image.open(path) as img:
            img.load()
            array = np.asarray(img if img.mode == "L" else img.convert("L"), dtype=np.uint8)
    except FileNotFoundError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"{path} is not a readable PNG ({err}); re-extract or regenerate the data set") from err
    if size is not None and array.shape != (size, size):
        raise ValueError(f"{path} is {array.shape[0]}x{array.shape[1]} but this data set has {size}x{size} images")
    return array


def write_pathfinder_folder(
    root: str | os.PathLike,
    samples: Iterable[tuple[np.ndarray, int]],
    difficulty: str = DEFAULT_DIFFICULTY,
    images_per_folder: int = 1000,
    overwrite: bool = False,
) -> Path:
    """Write images in LRA's layout under ``root/difficulty``; returns that folder.

    The folder is built beside its destination and moved into place with ``os.replace``,
    so readers never see a half-written data set.
    """
    root = Path(root)
    target = root / difficulty
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} already exists; pass overwrite=True to replace it")
    if images_per_folder < 1:
        raise ValueError(f"images_per_folder must be >= 1, got {images_per_folder}")
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=root, prefix=f".{difficulty}."))
    try:
        rows: dict[int, list[str]] = {}
        shape = None
        for i, (image, label) in enumerate(samples):
            image = np.asarray(image)
            if image.ndim != 2 or image.dtype != np.uint8:
                raise ValueError(f"sample {i}: expected a uint8 [H, W] image, got {image.dtype} {image.shape}")
            shape = shape or image.shape
            if image.shape != shape:
                raise ValueError(f"sample {i} is {image.shape}, the first sample {shape}; a data set has one image size")
            if label not in (0, 1):
                raise ValueError(f"sample {i}: label must be 0 or 1, got {label!r}")
            folder, index = divmod(i, images_per_folder)
            subdir = f"imgs/{folder}"
            (staging / subdir).mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(staging / subdir / f"sample_{index}.png", format="PNG")
            rows.setdefault(folder, []).append(f"{subdir} sample_{index}.png {index} {int(label)}")
        (staging / "metadata").mkdir()
        for folder, lines in rows.items():
            (staging / "metadata" / f"{folder}.npy").write_text("\n".join(lines) + "\n", encoding="utf-8")
        if target.exists():
            old = Path(tempfile.mkdtemp(dir=root, prefix=f".{difficulty}.old."))
            os.replace(target, old / "data")
            os.replace(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _numeric_stem_order(path: Path) -> tuple[float, str]:
    """Sort ``2.npy`` before ``10.npy`` (batch folders are numbered)."""
    return (int(path.stem) if path.stem.isdigit() else math.inf, path.stem)


def _metadata_rows(path: Path) -> list[list[str]]:
    raw = path.read_bytes()
    if raw.startswith(_NPY_MAGIC):  # the original generator's np.save of a string array
        with open(path, "rb") as f:
            array = np.load(f, allow_pickle=False)
        return [[str(v) for v in row] for row in np.atleast_2d(array)]
    return [line.split() for line in raw.decode("utf-8").splitlines() if line.strip()]


def read_pathfinder_folder(
    root: str | os.PathLike, size: int | None = None, difficulty: str = DEFAULT_DIFFICULTY
) -> LazySplit:
    """Index a Pathfinder folder in LRA's layout; images are decoded when accessed.

    Args:
        root: folder holding ``<difficulty>/`` (e.g. ``lra_release/pathfinder32``), or
            the difficulty folder itself (the one with ``imgs/`` and ``metadata/``).
        size: expected image side; accessing an image of another size raises ``ValueError``.
        difficulty: which difficulty folder to read (see :data:`DIFFICULTIES`).

    Returns:
        A ``LazySplit`` of ``(uint8 [H, W], label)`` in metadata order (files ``0.npy``,
        ``1.npy``, ... then rows). Zero-byte images are left out, as LRA's input
        pipeline does (the official release has one).

    Raises:
        FileNotFoundError: no such folder, no metadata files, or a listed image missing.
        ValueError: a metadata row with fewer than 4 columns or a label other than 0/1.
            Corrupt or wrongly sized images raise ``ValueError`` when accessed.
    """
    root = Path(root)
    folder = root if (root / "metadata").is_dir() else root / difficulty
    hint = f"Expected LRA's layout {root}/{difficulty}/imgs/<k>/sample_<i>.png with {root}/{difficulty}/metadata/<k>.npy."
    require_dir(folder, "Pathfinder", hint)
    metadata_files = sorted((folder / "metadata").glob("*.npy"), key=_numeric_stem_order)
    if not metadata_files:
        raise FileNotFoundError(f"no metadata/*.npy files under {folder}. {hint}")
    paths: list[str] = []
    labels: list[int] = []
    for meta in metadata_files:
        for line_no, row in enumerate(_metadata_rows(meta), start=1):
            if len(row) < 4:
                raise ValueError(f"{meta}:{line_no}: expected at least 4 columns (folder, file, index, label), got {row!r}")
            if row[3] not in ("0", "1"):
                raise ValueError(f"{meta}:{line_no}: label {row[3]!r} is not 0 or 1")
            path = folder / row[0] / row[1]
            try:
                if path.stat().st_size == 0:
                    continue
            except FileNotFoundError:
                raise FileNotFoundError(f"{path} is listed in {meta}:{line_no} but missing. {hint}") from None
            paths.append(str(path))
            labels.append(int(row[3]))
    return LazySplit(paths, labels, functools.partial(read_pathfinder_png, size=size))
