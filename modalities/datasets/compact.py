"""Compact single-file forms of the real leaderboard data, small enough to carry to a GPU machine.

================ ================================ ===========================================
dataset          file (default ``.carry/data/``)  content
================ ================================ ===========================================
``scifar10``     ``scifar10_gray.npz``            LRA-grayscale CIFAR-10, uint8 [60000, 32, 32],
                                                  labels, split (train / val / test)
``imdb_bytes``   ``imdb_bytes.npz``               IMDB reviews as UTF-8 bytes cut to 4,000
                                                  (LRA Text), lengths, labels, split
================ ================================ ===========================================

Each file is an uncompressed ``.npz`` (read with ``allow_pickle=False``) whose big array is
stored xz-compressed: for the images, the residual of the 2-D gradient predictor
``x - left - up + upleft`` (mod 256), which ``np.cumsum`` along both axes undoes exactly;
for the text, the concatenated bytes. A JSON ``meta`` entry records the format, the
sha256 of the decoded array and the expected counts, which the reader checks.

``benchmarks/make_compact_data.py`` writes both files from the archives.
"""
from __future__ import annotations

import hashlib
import json
import lzma
import os
from pathlib import Path
from typing import Any

import numpy as np

from maelre.fileio import atomic_path
from modalities.base import DatasetSplits
from modalities.datasets import register_dataset
from modalities.datasets.io import LazySplit

PROJECT_ROOT = Path(__file__).resolve().parents[2]
COMPACT_DIR = PROJECT_ROOT / ".carry" / "data"
"""Default folder of the compact files (git-ignored; carried to the GPU machine)."""
SCIFAR10_FILE = "scifar10_gray.npz"
IMDB_FILE = "imdb_bytes.npz"
SPLITS = ("train", "val", "test")
SCIFAR10_VAL_PER_CLASS = 500
"""Validation images per class carved from train (5,000 in all, LRA's 10% hold-out)."""
LRA_TEXT_MAX_BYTES = 4000
MAKE_HINT = "make it with `python benchmarks/make_compact_data.py` (reads the CIFAR-10 / IMDB archives in ../shared/data)"


def gradient_residual(images: np.ndarray) -> np.ndarray:
    """uint8 ``[n, H, W]`` -> uint8 residuals of the predictor ``left + up - upleft`` (zero outside the image)."""
    x = images.astype(np.int16)
    r = x.copy()
    r[:, :, 1:] -= x[:, :, :-1]
    out = r.copy()
    out[:, 1:, :] -= r[:, :-1, :]
    return (out % 256).astype(np.uint8)


def undo_gradient_residual(residual: np.ndarray) -> np.ndarray:
    """Inverse of :func:`gradient_residual`: cumulative sums along both axes, modulo 256 (uint8 wraps)."""
    return np.cumsum(np.cumsum(residual, axis=2, dtype=np.uint8), axis=1, dtype=np.uint8)


def sha256_of(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def _write_npz(path: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> Path:
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, meta=np.array(json.dumps(meta)), **arrays)
    return path


def _read_npz(path: Path, kind: str, keys: tuple[str, ...]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    if not path.is_file():
        raise FileNotFoundError(f"no compact {kind} file at {path}; {MAKE_HINT}, or pass root= the folder holding {path.name}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in (*keys, "meta")}
        meta = json.loads(str(arrays.pop("meta")))
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as err:
        raise ValueError(f"compact {kind} file {path} is unreadable or incomplete ({err}); delete it and {MAKE_HINT}") from err
    if meta.get("format") != kind:
        raise ValueError(f"{path} holds {meta.get('format')!r} data, not {kind!r}; point root at the right file")
    return arrays, meta


def _unxz(blob: np.ndarray, path: Path) -> bytes:
    try:
        return lzma.decompress(blob.tobytes())
    except lzma.LZMAError as err:
        raise ValueError(f"compact file {path} is corrupt ({err}); delete it and {MAKE_HINT}") from err


def _check_digest(array: np.ndarray, meta: dict, path: Path) -> None:
    if sha256_of(array) != meta.get("sha256"):
        raise ValueError(f"compact file {path} fails its sha256 check (the decoded data differ from what was written); "
                         f"delete it and {MAKE_HINT}")


def _split_codes(split: np.ndarray, labels: np.ndarray, meta: dict, path: Path) -> None:
    counts = {name: np.bincount(labels[split == i], minlength=len(meta["classes"])).tolist() for i, name in enumerate(SPLITS)}
    if counts != meta["counts"]:
        raise ValueError(f"compact file {path}: per-class counts {counts} differ from the recorded {meta['counts']}; "
                         f"delete it and {MAKE_HINT}")


# ----------------------------------------------------------------------------- sCIFAR-10


def write_scifar10(path: str | os.PathLike, images: np.ndarray, labels: np.ndarray, split: np.ndarray,
                   classes: list[str], source: dict[str, Any], preset: int = 6) -> Path:
    """Write grayscale sCIFAR-10 atomically.

    Args:
        path: output ``.npz``.
        images: uint8 ``[n, 32, 32]`` (LRA grayscale).
        labels: class index ``[n]``.
        split: 0 train, 1 val, 2 test, ``[n]``.
        classes: the 10 class names.
        source: provenance recorded in ``meta`` (archive name, sha256, ...).
        preset: xz preset (6: ~41 MiB; higher presets gain little on this data).
    """
    images = np.ascontiguousarray(images, dtype=np.uint8)
    if images.ndim != 3 or labels.shape != (len(images),) or split.shape != (len(images),):
        raise ValueError(f"need images [n, H, W] with n labels and split codes, got {images.shape}, {labels.shape}, {split.shape}")
    blob = lzma.compress(gradient_residual(images).tobytes(), preset=preset)
    labels, split = labels.astype(np.uint8), split.astype(np.uint8)
    meta = {
        "format": "scifar10", "version": 1, "shape": list(images.shape), "sha256": sha256_of(images),
        "classes": list(classes), "splits": list(SPLITS), "grayscale": "LRA: tf.image.rgb_to_grayscale, truncated",
        "counts": {name: np.bincount(labels[split == i], minlength=len(classes)).tolist() for i, name in enumerate(SPLITS)},
        "source": source,
    }
    return _write_npz(Path(path), {"pixels_xz": np.frombuffer(blob, dtype=np.uint8), "labels": labels, "split": split}, meta)


def read_scifar10(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """Read and verify a compact sCIFAR-10 file -> ``(images uint8 [n, 32, 32], labels int64 [n], split [n], meta)``.

    Raises:
        FileNotFoundError: no file (says how to make it).
        ValueError: unreadable, corrupt (xz or sha256) or with counts other than recorded.
    """
    path = Path(path)
    arrays, meta = _read_npz(path, "scifar10", ("pixels_xz", "labels", "split"))
    shape = tuple(meta["shape"])
    raw = _unxz(arrays["pixels_xz"], path)
    if len(raw) != int(np.prod(shape)):
        raise ValueError(f"compact file {path}: decoded {len(raw)} bytes, expected {shape}; delete it and {MAKE_HINT}")
    images = undo_gradient_residual(np.frombuffer(raw, dtype=np.uint8).reshape(shape))
    _check_digest(images, meta, path)
    labels, split = arrays["labels"].astype(np.int64), arrays["split"]
    _split_codes(split, labels, meta, path)
    return images, labels, split, meta


def _default_file(root: str | os.PathLike | None, filename: str) -> Path:
    if root is None:
        return COMPACT_DIR / filename
    root = Path(root).expanduser()
    return root / filename if root.is_dir() else root


@register_dataset("scifar10")
def load_scifar10(root: str | os.PathLike | None = None) -> DatasetSplits:
    """sCIFAR-10 / LRA Image from the compact file: 45,000 train / 5,000 val / 10,000 test grayscale images.

    The validation split is fixed in the file (500 images per class carved from train
    with a seeded stratified split), so ``data.val_fraction`` does not apply.

    Args:
        root: the ``.npz`` file, or the folder holding ``scifar10_gray.npz``
            (``None``: ``.carry/data`` in the project).

    Returns:
        ``DatasetSplits`` with modality ``"image"``: items ``uint8 [32, 32]`` (one gray
        channel, LRA's conversion), CIFAR-10's 10 classes.
    """
    path = _default_file(root, SCIFAR10_FILE)
    images, labels, split, meta = read_scifar10(path)
    parts = [LazySplit(images, labels).subset(np.flatnonzero(split == i)) for i in range(len(SPLITS))]
    return DatasetSplits(train=parts[0], val=parts[1], test=parts[2], classes=list(meta["classes"]), modality="image",
                         meta={"source": "compact", "file": str(path), "sha256": meta["sha256"], "grayscale": meta["grayscale"]})


# ----------------------------------------------------------------------------- IMDB bytes


def lra_text_bytes(text: str, max_bytes: int = LRA_TEXT_MAX_BYTES) -> bytes:
    """LRA Text's input: the UTF-8 bytes of ``text`` cut to ``max_bytes`` (``tf_encode(...)[:max_length]``)."""
    return text.encode("utf-8")[:max_bytes]


def write_imdb(path: str | os.PathLike, texts: list[bytes], labels: np.ndarray, split: np.ndarray, classes: list[str],
               source: dict[str, Any], max_bytes: int = LRA_TEXT_MAX_BYTES, preset: int = 6) -> Path:
    """Write IMDB as byte strings (each at most ``max_bytes``) atomically: xz of their concatenation + lengths.

    Args:
        path: output ``.npz``.
        texts: UTF-8 bytes per review, already cut (:func:`lra_text_bytes`).
        labels: class index ``[n]``; split: 0 train, 1 val, 2 test ``[n]``.
        classes: class names; source: provenance recorded in ``meta``.
    """
    lengths = np.array([len(t) for t in texts], dtype=np.uint16)
    if lengths.max(initial=0) > max_bytes or labels.shape != (len(texts),) or split.shape != (len(texts),):
        raise ValueError(f"need {len(texts)} labels and split codes and texts of at most {max_bytes} bytes")
    joined = b"".join(texts)
    labels, split = labels.astype(np.uint8), split.astype(np.uint8)
    meta = {
        "format": "imdb_bytes", "version": 1, "max_bytes": max_bytes, "total_bytes": len(joined),
        "sha256": hashlib.sha256(joined).hexdigest(), "classes": list(classes), "splits": list(SPLITS),
        "counts": {name: np.bincount(labels[split == i], minlength=len(classes)).tolist() for i, name in enumerate(SPLITS)},
        "source": source,
    }
    blob = np.frombuffer(lzma.compress(joined, preset=preset), dtype=np.uint8)
    return _write_npz(Path(path), {"bytes_xz": blob, "lengths": lengths, "labels": labels, "split": split}, meta)


def read_imdb(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """Read and verify a compact IMDB file.

    Returns:
        ``(tokens uint8 [n, max_bytes] zero-padded, lengths int64 [n], labels int64 [n], split [n], meta)``.

    Raises:
        FileNotFoundError: no file (says how to make it).
        ValueError: unreadable, corrupt (xz or sha256) or with counts other than recorded.
    """
    path = Path(path)
    arrays, meta = _read_npz(path, "imdb_bytes", ("bytes_xz", "lengths", "labels", "split"))
    joined = _unxz(arrays["bytes_xz"], path)
    lengths = arrays["lengths"].astype(np.int64)
    if len(joined) != meta["total_bytes"] or lengths.sum() != len(joined):
        raise ValueError(f"compact file {path}: {len(joined)} bytes for lengths summing to {lengths.sum()}; delete it and {MAKE_HINT}")
    if hashlib.sha256(joined).hexdigest() != meta.get("sha256"):
        raise ValueError(f"compact file {path} fails its sha256 check; delete it and {MAKE_HINT}")
    labels, split = arrays["labels"].astype(np.int64), arrays["split"]
    _split_codes(split, labels, meta, path)
    flat = np.frombuffer(joined, dtype=np.uint8)
    tokens = np.zeros((len(lengths), meta["max_bytes"]), dtype=np.uint8)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    rows = np.repeat(np.arange(len(lengths)), lengths)
    tokens[rows, np.arange(len(flat)) - np.repeat(starts, lengths)] = flat
    return tokens, lengths, labels, split, meta


@register_dataset("imdb_bytes")
def load_imdb_bytes(root: str | os.PathLike | None = None, *, val_fraction: float = 0.0, seed: int = 0) -> DatasetSplits:
    """IMDB for LRA Text from the compact file: 25,000 train / 25,000 test reviews cut to 4,000 UTF-8 bytes.

    Args:
        root: the ``.npz`` file, or the folder holding ``imdb_bytes.npz`` (``None``: ``.carry/data``).
        val_fraction: share of train moved to ``val``, stratified and seeded (LRA validates
            on the test set; 0 gives ``val=None``).
        seed: seed of the validation carve.

    Returns:
        ``DatasetSplits`` with modality ``"text"``: review strings of at most 4,000 bytes
        (the text adapter's ``tokenizer="byte"`` gives back the same bytes), classes ``["neg", "pos"]``.
    """
    from modalities.datasets.io import carve_validation

    path = _default_file(root, IMDB_FILE)
    tokens, lengths, labels, split, meta = read_imdb(path)
    texts = [bytes(row[:n]).decode("utf-8", errors="ignore") for row, n in zip(tokens, lengths)]
    everything = LazySplit(texts, labels)
    train, val = carve_validation(everything.subset(np.flatnonzero(split == 0)), val_fraction, seed)
    return DatasetSplits(train=train, val=val, test=everything.subset(np.flatnonzero(split == 2)), classes=list(meta["classes"]),
                         modality="text", meta={"source": "compact", "file": str(path), "sha256": meta["sha256"],
                                                "max_bytes": meta["max_bytes"], "val_fraction": val_fraction, "seed": seed})


__all__ = ["load_imdb_bytes", "load_scifar10", "lra_text_bytes", "read_imdb", "read_scifar10", "write_imdb", "write_scifar10",
           "gradient_residual", "undo_gradient_residual"]
