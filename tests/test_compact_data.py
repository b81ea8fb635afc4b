"""Compact sCIFAR-10 file: exact round trip, integrity checks, and a tiny on-device recipe run from it."""
from __future__ import annotations

import json

import numpy as np
import pytest

from maelre.engine.runner import run_recipe
from maelre.recipe import RecipeError, parse_recipe
from modalities.datasets import load_dataset
from modalities.datasets.compact import gradient_residual, read_scifar10, undo_gradient_residual, write_scifar10

CLASSES = [f"c{i}" for i in range(10)]


def tiny_scifar(n_per_class: int = 3, side: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n_per_class`` images of each class per split (split codes 0, 1, 2), each image brighter for its class."""
    rng = np.random.default_rng(seed)
    labels = np.tile(np.repeat(np.arange(10), n_per_class), 3)
    split = np.repeat(np.arange(3), 10 * n_per_class)
    images = rng.integers(0, 40, (len(labels), side, side)) + 20 * labels[:, None, None]
    return images.astype(np.uint8), labels, split


def test_gradient_residual_round_trips_exactly() -> None:
    images = np.random.default_rng(1).integers(0, 256, (5, 7, 9), dtype=np.uint8)
    np.testing.assert_array_equal(undo_gradient_residual(gradient_residual(images)), images)
    ramp = np.tile(np.arange(9, dtype=np.uint8), (1, 7, 1))  # every row 0..8: only the first row is not predicted
    residual = gradient_residual(ramp)
    assert residual[0, 0].tolist() == [0] + [1] * 8 and not residual[0, 1:].any()


def test_write_read_and_integrity_checks(tmp_path) -> None:
    images, labels, split = tiny_scifar()
    path = write_scifar10(tmp_path / "s.npz", images, labels, split, CLASSES, {"test": True})
    got, got_labels, got_split, meta = read_scifar10(path)
    np.testing.assert_array_equal(got, images)
    assert got_labels.tolist() == labels.tolist() and got_split.tolist() == split.tolist()
    assert meta["counts"]["val"] == [3] * 10 and not list(tmp_path.glob(".*"))  # atomic write left no temp file

    data = load_dataset("scifar10", root=path)  # the file itself (a folder must hold scifar10_gray.npz)
    assert (len(data.train), len(data.val), len(data.test)) == (30, 30, 30) and data.classes == CLASSES
    x, y = data.test[4]
    assert x.shape == (8, 8) and x.dtype == np.uint8 and y == 1

    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    blob = arrays["pixels_xz"].copy()
    blob[len(blob) // 2] ^= 0xFF
    np.savez(tmp_path / "bad_xz.npz", **{**arrays, "pixels_xz": blob})
    with pytest.raises(ValueError, match="corrupt|sha256"):
        read_scifar10(tmp_path / "bad_xz.npz")
    meta = json.loads(str(arrays["meta"]))
    np.savez(tmp_path / "bad_sha.npz", **{**arrays, "meta": np.array(json.dumps({**meta, "sha256": "0" * 64}))})
    with pytest.raises(ValueError, match="sha256 check"):
        read_scifar10(tmp_path / "bad_sha.npz")
    np.savez(tmp_path / "bad_counts.npz", **{**arrays, "labels": np.zeros_like(arrays["labels"])})
    with pytest.raises(ValueError, match="per-class counts"):
        read_scifar10(tmp_path / "bad_counts.npz")
    with pytest.raises(FileNotFoundError, match="make_compact_data.py"):
        load_dataset("scifar10", root=tmp_path / "missing")


def recipe(root, **data) -> dict:
    return {
        "name": "tiny_scifar",
        "data": {"dataset": {"name": "scifar10", "root": str(root)}, "adapter": {"name": "pixels", "channels": "gray", "max_len": 64},
                 "batch_size": 10, "val_fraction": 0.0, "on_device": True, "augment": {"hflip": True, "shift": 2}, **data},
        "model": {"backbone": "transformer", "dim": 16, "depth": 1, "heads": 2, "mlp_ratio": 2.0, "drop_path": 0.1},
        "loss": {"label_smoothing": 0.1},
        "trainer": {"max_epochs": 2, "accelerator": "cpu", "enable_progress_bar": False},
    }


def test_recipe_trains_on_device_with_augmentation(tmp_path) -> None:
    images, labels, split = tiny_scifar()
    write_scifar10(tmp_path / "scifar10_gray.npz", images, labels, split, CLASSES, {})
    results = run_recipe(parse_recipe(recipe(tmp_path)), run_dir=tmp_path / "run", progress=False)
    assert results["samples"] == {"train": 30, "val": 30, "test": 30}
    assert results["global_step"] == 6 and results["metrics"]["val/best_acc"] is not None
    assert (tmp_path / "run" / "checkpoints" / "best").is_dir()


def test_recipe_checks_on_device_options(tmp_path) -> None:
    with pytest.raises(RecipeError, match="data.augment: augment runs on batches held on the device"):
        parse_recipe(recipe(tmp_path, on_device=False))
    with pytest.raises(RecipeError, match="augment has no setting 'flip'; did you mean 'hflip'"):
        parse_recipe(recipe(tmp_path, augment={"flip": True}))
    with pytest.raises(RecipeError, match="shift must be an integer"):
        parse_recipe(recipe(tmp_path, augment={"shift": 2.5}))
    with pytest.raises(RecipeError, match="bucket_by_length and cache do not apply"):
        parse_recipe(recipe(tmp_path, bucket_by_length=True))
    bad = recipe(tmp_path)
    bad["data"]["adapter"] = {"name": "image", "img_size": 8, "patch_size": 4, "in_chans": 1}
    with pytest.raises(RecipeError, match="data.on_device: batches on the device are built for the 'pixels' adapter"):
        parse_recipe(bad)
