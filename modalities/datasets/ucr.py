"""UCR/UEA time-series classification sets (``"ucr"`` and shortcuts like ``"gunpoint"``) through sktime.

Inputs are ``np.ndarray float32 [C, T]``; T may differ between series (PLAID,
JapaneseVowels) and missing values stay NaN.
"""
from __future__ import annotations

import difflib
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from modalities.base import DatasetSplits
from modalities.datasets import register_dataset
from modalities.datasets.io import LazySplit, carve_validation

# sktime is imported inside the functions that need it, so the other dataset loaders
# work on machines without it (the GPU image has no sktime).


def sktime_bundled_dir() -> Path:
    """Where sktime's wheel ships its archive sets (no download needed)."""
    import sktime.datasets

    return Path(sktime.datasets.__file__).parent / "data"

UCR_SHORTCUTS = {
    "acsf1": "ACSF1",
    "plaid": "PLAID",
    "osuleaf": "OSULeaf",
    "arrowhead": "ArrowHead",
    "gunpoint": "GunPoint",
    "japanesevowels": "JapaneseVowels",
    "basicmotions": "BasicMotions",
    "italypowerdemand": "ItalyPowerDemand",
}
"""Registry names for the archive sets bundled with sktime."""
UCR_HINT = (
    "UCR/UEA sets load through sktime: those bundled with it (" + ", ".join(UCR_SHORTCUTS.values()) + ") need no download; "
    "others need download=True (internet) or root= a folder holding <Name>/<Name>_TRAIN.ts and <Name>_TEST.ts. "
    "Load your own .ts files with path=."
)


def _archive_files(folder: Path | None, name: str) -> bool:
    return folder is not None and (folder / name / f"{name}_TRAIN.ts").is_file() and (folder / name / f"{name}_TEST.ts").is_file()


def _canonical_name(name: str, root: Path | None) -> str:
    """The archive spelling of ``name`` (case-insensitive), among the archive lists and ``root``'s sets."""
    from sktime.datasets.tsc_dataset_names import multivariate, univariate

    known = set(univariate) | set(multivariate)
    if root is not None and root.is_dir():
        known |= {p.name for p in root.iterdir() if _archive_files(root, p.name)}
    by_lower = {n.lower(): n for n in sorted(known)}
    if name.lower() not in by_lower:
        close = difflib.get_close_matches(name.lower(), list(by_lower), n=3)
        hint = f"; did you mean {' or '.join(repr(by_lower[c]) for c in close)}?" if close else ""
        raise ValueError(f"unknown UCR/UEA dataset {name!r}{hint} {UCR_HINT}")
    return by_lower[name.lower()]


@register_dataset("ucr")
def load_ucr(
    root: str | os.PathLike | None = None,
    *,
    name: str | None = None,
    path: str | os.PathLike | None = None,
    val_fraction: float = 0.0,
    seed: int = 0,
    download: bool = False,
) -> DatasetSplits:
    """A UCR/UEA archive set (``name=``) or your own ``.ts`` files (``path=``), with the official train/test split.

    Args:
        root: folder holding ``<Name>/<Name>_TRAIN.ts`` and ``_TEST.ts`` (checked first);
            sets bundled with sktime need none. It must exist (``FileNotFoundError``) unless
            ``download=True``, which downloads a missing set here (``None``: sktime's cache).
        name: archive name, case-insensitive (``"GunPoint"``, ``"japanesevowels"``).
        path: instead of ``name``: a folder with one ``*_TRAIN.ts`` and its ``*_TEST.ts``,
            or the ``*_TRAIN.ts`` file itself; read with ``sktime.datasets.load_from_tsfile``.
        val_fraction: share of train moved to ``val``, stratified by class (sklearn, seeded).
        seed: seed of the validation carve.
        download: allow sktime to download a set that is neither bundled nor in ``root``.

    Returns:
        ``DatasetSplits`` with modality ``"timeseries"``: items ``float32 [C, T]``; classes
        are the label strings of train and test, sorted numerically when all are numbers
        (``"2"`` before ``"10"``), else alphabetically.
    """
    if (name is None) == (path is None):
        raise ValueError("pass exactly one of name= (a UCR/UEA archive set) or path= (your own *_TRAIN.ts / *_TEST.ts files)")
    if path is not None:
        if root is not None or download:
            raise ValueError("root= and download= apply to archive sets (name=), not to path=")
        train_file, test_file = _ts_pair(Path(path).expanduser())
        (x_train, y_train), (x_test, y_test) = _read_ts(train_file), _read_ts(test_file)
        title, source = train_file.name[: -len("_TRAIN.ts")], str(train_file.parent)
    else:
        root = None if root is None else Path(root).expanduser()
        if root is not None and not download and not root.is_dir():  # a typo would otherwise fall back to sktime's copy unnoticed
            raise FileNotFoundError(f"UCR/UEA root folder {root} does not exist; fix the path, or leave root= out for a set bundled with sktime. {UCR_HINT}")
        title = _canonical_name(name, root)
        extract_path = _extract_path(title, root, download)
        (x_train, y_train), (x_test, y_test) = (_read_archive(title, split, extract_path) for split in ("train", "test"))
        source = extract_path or str(sktime_bundled_dir())
    classes = class_names([*y_train, *y_test])
    index = {label: i for i, label in enumerate(classes)}
    train = LazySplit(_to_arrays(x_train, title), [index[str(v)] for v in y_train])
    test = LazySplit(_to_arrays(x_test, title), [index[str(v)] for v in y_test])
    lengths = [x.shape[1] for x in (*train.items, *test.items)]
    train, val = carve_validation(train, val_fraction, seed)
    return DatasetSplits(
        train=train,
        test=test,
        val=val,
        classes=classes,
        modality="timeseries",
        meta={"source": source, "name": title, "num_channels": int(x_train.shape[1]), "min_length": min(lengths),
              "max_length": max(lengths), "val_fraction": val_fraction, "seed": seed},
    )


def _extract_path(name: str, root: Path | None, download: bool) -> str | None:
    """sktime's ``extract_path`` for ``name``: ``root`` if it holds the set, ``None`` for a bundled set."""
    if _archive_files(root, name):
        return str(root)
    if _archive_files(sktime_bundled_dir(), name):
        return None  # sktime skips its bundled folder when given an extract_path
    if download:
        return None if root is None else str(root)
    where = f"{root / name}" if root is not None else "no root given"
    raise FileNotFoundError(f"UCR/UEA set {name!r} is not bundled with sktime and not found ({where}). {UCR_HINT}")


def _read_archive(name: str, split: str, extract_path: str | None) -> tuple[pd.DataFrame, np.ndarray]:
    try:
        from sktime.datasets import load_UCR_UEA_dataset

        return load_UCR_UEA_dataset(name, split=split, return_type="nested_univ", extract_path=extract_path)
    except RuntimeError as err:  # sktime: "All download strategies failed"
        raise FileNotFoundError(f"could not download UCR/UEA set {name!r} ({err}). {UCR_HINT}") from err


def _ts_pair(path: Path) -> tuple[Path, Path]:
    if path.is_dir():
        found = sorted(path.glob("*_TRAIN.ts"))
        if len(found) != 1:
            raise FileNotFoundError(f"{path} must hold exactly one *_TRAIN.ts file (found {len(found)}); pass the file itself as path=")
        path = found[0]
    if not path.name.endswith("_TRAIN.ts"):
        raise ValueError(f"path= must be a folder or a '<name>_TRAIN.ts' file, got {path}")
    test = path.with_name(path.name[: -len("_TRAIN.ts")] + "_TEST.ts")
    for file in (path, test):
        if not file.is_file():
            raise FileNotFoundError(f"time-series file {file} does not exist; path= needs <name>_TRAIN.ts and <name>_TEST.ts side by side")
    return path, test


def _read_ts(path: Path) -> tuple[pd.DataFrame, np.ndarray]:
    try:
        from sktime.datasets import load_from_tsfile

        return load_from_tsfile(str(path), return_data_type="nested_univ")
    except Exception as err:  # sktime's parser raises OSError, TypeError, ValueError, ... on malformed files
        raise ValueError(f"cannot parse time-series file {path} ({type(err).__name__}: {err}); it must be in sktime's .ts format") from err


def _to_arrays(frame: pd.DataFrame, name: str) -> list[np.ndarray]:
    """Nested sktime frame (a ``pd.Series`` per case and channel) -> one ``float32 [C, T]`` per case."""
    arrays = []
    for case, row in enumerate(frame.itertuples(index=False)):
        channels = [np.asarray(cell, dtype=np.float32) for cell in row]
        lengths = {len(channel) for channel in channels}
        if len(lengths) != 1:
            raise ValueError(f"{name}: case {case} has channels of different lengths {sorted(lengths)}; a series must be [C, T]")
        arrays.append(np.stack(channels))
    return arrays


def class_names(labels: Iterable[object]) -> list[str]:
    """Distinct labels as strings, sorted numerically when all parse as numbers, else alphabetically."""
    names = {str(label) for label in labels}
    try:
        return sorted(names, key=float)
    except ValueError:
        return sorted(names)


def _register_shortcut(key: str, name: str) -> None:
    def load(root: str | os.PathLike | None = None, *, val_fraction: float = 0.0, seed: int = 0) -> DatasetSplits:
        return load_ucr(root, name=name, val_fraction=val_fraction, seed=seed)

    load.__name__ = load.__qualname__ = f"load_{key}"
    load.__doc__ = f"The UCR/UEA set {name} bundled with sktime; see ``load_ucr``."
    register_dataset(key)(load)


for _key, _name in UCR_SHORTCUTS.items():
    _register_shortcut(_key, _name)
