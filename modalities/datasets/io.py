"""Shared pieces of the dataset loaders: lazy splits, wav I/O, folder checks, validation carving."""
from __future__ import annotations

import os
import struct
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from sklearn.model_selection import train_test_split

from maelre.fileio import atomic_path, write_text_atomic

def _shared_data() -> Path:
    """``../shared/data`` beside the checkout, or beside the nearest folder above it that has one (git worktrees)."""
    project = Path(__file__).resolve().parents[2]
    for folder in project.parents:
        if (folder / "shared" / "data").is_dir():
            return folder / "shared" / "data"
    return project.parent / "shared" / "data"


SHARED_DATA = _shared_data()
"""``../shared/data`` beside the checkout (present on dev and CI machines)."""


def default_data_root(name: str) -> Path | None:
    """Where dataset ``name`` lives when the caller gives no ``root``.

    ``../shared/data/<name>`` beside the checkout if that folder exists, else
    ``$MAELRE_DATA/<name>`` when the environment variable is set, else ``None``.
    """
    shared = SHARED_DATA / name
    if shared.is_dir():
        return shared
    env = os.environ.get("MAELRE_DATA")
    return Path(env).expanduser() / name if env else None


def resolve_root(root: str | os.PathLike | None, name: str, hint: str) -> Path:
    """``root`` as a ``Path``, or the default of ``default_data_root(name)``.

    Raises ``FileNotFoundError`` (with ``hint``) when no root is given and there is no default.
    """
    if root is not None:
        return Path(root).expanduser()
    default = default_data_root(name)
    if default is None:
        raise FileNotFoundError(
            f"no root given for dataset {name!r} and no default found ({SHARED_DATA / name} is missing and "
            f"MAELRE_DATA is not set). Pass root=... or set MAELRE_DATA to a folder holding {name}/. {hint}"
        )
    return default


def require_dir(path: Path, what: str, hint: str) -> Path:
    """``path`` if it is a folder, else ``FileNotFoundError`` naming ``what`` it should hold and ``hint``."""
    if not path.is_dir():
        raise FileNotFoundError(f"{what} folder not found at {path}. {hint}")
    return path


def list_files(folder: Path, suffix: str, what: str, hint: str) -> list[Path]:
    """Sorted files in ``folder`` ending in ``suffix``; ``FileNotFoundError`` if the folder is missing or has none."""
    require_dir(folder, what, hint)
    files = sorted(p for p in folder.iterdir() if p.name.endswith(suffix) and not p.name.startswith(".") and p.is_file())
    if not files:
        raise FileNotFoundError(f"{what} folder {folder} contains no *{suffix} files. {hint}")
    return files


class AudioClip(NamedTuple):
    """A reference to ``frames`` samples of a wav file from sample ``start`` (``frames=-1``: to the end)."""

    path: str
    start: int = 0
    frames: int = -1


def _soundfile():
    """``soundfile``, imported on first use so loaders without audio don't need libsndfile."""
    import soundfile

    return soundfile


class TruncatedAudioWarning(UserWarning):
    """A wav file holds fewer samples than its header declares (a cut download or copy)."""


def read_wav(path: str | os.PathLike, start: int = 0, frames: int = -1, mono: bool = True) -> tuple[np.ndarray, int]:
    """Read a wav file (or a part of it) with ``soundfile``.

    A wav whose data chunk is cut short is read as far as it goes, with a
    ``TruncatedAudioWarning`` naming the file.

    Returns:
        ``(waveform, sample_rate)``: ``waveform`` is ``np.float32`` in ``[-1, 1]``, ``[T]``;
        multi-channel files are averaged to mono, or with ``mono=False`` returned as ``[C, T]``.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file cannot be decoded, holds no samples, or holds NaN/inf (names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio file {path} does not exist")
    try:
        data, sample_rate = _soundfile().read(path, start=start, frames=frames, dtype="float32", always_2d=True)
    except _soundfile().SoundFileError as err:
        raise _undecodable(path, err) from err
    if data.shape[0] == 0:
        where = f" from sample {start}" if start else ""
        raise ValueError(f"audio file {path} has no samples{where}; the file is empty or truncated: re-download or delete it")
    if not np.isfinite(data).all():
        raise ValueError(f"audio file {path} holds {int((~np.isfinite(data)).sum())} NaN or inf samples; the file is corrupt: repair or delete it")
    missing = wav_missing_bytes(path)
    if missing:
        warnings.warn(
            f"audio file {path} is truncated: its header declares {missing} more bytes of samples than the file holds; "
            "it is read as a shorter clip (re-download or delete it)", TruncatedAudioWarning, stacklevel=2,
        )
    if data.shape[1] == 1:
        wave = data[:, 0]
    else:
        wave = data.mean(axis=1) if mono else data.T
    return np.ascontiguousarray(wave, dtype=np.float32), int(sample_rate)


def wav_missing_bytes(path: str | os.PathLike) -> int:
    """Bytes of sample data a RIFF/WAVE file's ``data`` chunk declares but the file lacks (0: complete or not a wav).

    libsndfile reads such a file without complaint, as a shorter clip; this reads the chunk headers.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return 0
        offset = 12
        while offset + 8 <= size:
            f.seek(offset)
            chunk, length = struct.unpack("<4sI", f.read(8))
            if chunk == b"data":
                # 0 and 0xFFFFFFFF mark a stream written without a final length (and RF64).
                return 0 if length in (0, 0xFFFFFFFF) else max(0, length - (size - offset - 8))
            offset += 8 + length + (length & 1)  # chunks are padded to even sizes
    return 0


def wav_info(path: str | os.PathLike) -> tuple[int, int]:
    """``(frames, sample_rate)`` of a wav file from its header; same errors as ``read_wav``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio file {path} does not exist")
    try:
        info = _soundfile().info(path)
    except _soundfile().SoundFileError as err:
        raise _undecodable(path, err) from err
    return int(info.frames), int(info.samplerate)


def _undecodable(path: Path, err: Exception) -> ValueError:
    return ValueError(f"cannot decode audio file {path} ({err}); the file is corrupt or not audio: re-download or delete it")


def read_clip(clip: AudioClip) -> tuple[np.ndarray, int]:
    """``read_wav`` for an ``AudioClip`` (a module-level function, so lazy splits pickle)."""
    return read_wav(clip.path, clip.start, clip.frames)


def write_wav(path: str | os.PathLike, wave: np.ndarray, sample_rate: int) -> None:
    """Write ``wave`` (float ``[T]`` in ``[-1, 1]``) as 16-bit PCM wav, atomically (temp file + ``os.replace``)."""
    path = Path(path)
    pcm = np.clip(np.asarray(wave, dtype=np.float32), -1.0, 32767 / 32768)  # PCM_16 cannot hold +1.0
    with atomic_path(path) as tmp:
        _soundfile().write(tmp, pcm, sample_rate, subtype="PCM_16", format="WAV")


def read_text(path: str | os.PathLike, what: str = "text file") -> str:
    """``path`` read as UTF-8; a file that is not UTF-8 is a ``ValueError`` naming it (``what``: how to call it)."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{what} {path} is not UTF-8 text (byte {err.start} is {err.object[err.start]:#04x}); "
                         "convert it to UTF-8, or re-extract or delete it if it is damaged") from err


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temp file + ``os.replace``)."""
    write_text_atomic(path, text)


class LazySplit(Sequence):
    """A split of ``(x, label_index)`` pairs whose inputs are produced on access.

    ``split[i]`` returns ``(load(items[j]), labels[j])`` for the ``i``-th selected index
    ``j``: ``items`` are per-example references (file paths, ``AudioClip``s, rows of an
    array) and ``load`` turns one into the raw input (``None``: the item itself). Subsets
    share ``items``, so carving a validation split copies no data. Keep ``load`` a
    module-level function so the split pickles into data-loader workers.

    Args:
        items: one reference per example (list or array, indexed by position).
        labels: class index per example, ``[len(items)]``.
        load: reference -> raw input, or ``None``.
        indices: positions of ``items`` in this split (default: all, in order).
    """

    def __init__(
        self,
        items: Sequence[Any] | np.ndarray,
        labels: Sequence[int] | np.ndarray,
        load: Callable[[Any], Any] | None = None,
        indices: np.ndarray | None = None,
    ) -> None:
        labels = np.asarray(labels, dtype=np.int64)
        if labels.shape != (len(items),):
            raise ValueError(f"need one label per item: got {len(items)} items and labels of shape {labels.shape}")
        self._items = items
        self._labels = labels
        self._load = load
        self._indices = np.arange(len(items)) if indices is None else np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        if not isinstance(index, (int, np.integer)):
            raise TypeError(f"split indices must be integers, got {type(index).__name__}; use .subset(indices) for several")
        n = len(self._indices)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for a split of {n} examples")
        j = self._indices[index]
        item = self._items[j]
        return (item if self._load is None else self._load(item)), int(self._labels[j])

    @property
    def labels(self) -> np.ndarray:
        """Class index of every example, ``[len(self)]`` (no input is loaded)."""
        return self._labels[self._indices]

    @property
    def items(self) -> list[Any]:
        """The reference of every example (paths, clips, ...) without loading it."""
        return [self._items[j] for j in self._indices]

    def subset(self, indices: Sequence[int] | np.ndarray) -> "LazySplit":
        """The examples at positions ``indices`` of this split, as a new split sharing the items."""
        return LazySplit(self._items, self._labels, self._load, self._indices[np.asarray(indices, dtype=np.int64)])


def check_fraction(value: float, name: str = "val_fraction") -> float:
    """``value`` if it lies in ``[0, 1)``, else ``ValueError``."""
    if not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}; use 0 for no validation split")
    return float(value)


def carve_validation(
    split: LazySplit, val_fraction: float, seed: int, stratify: Sequence[Any] | np.ndarray | None = None
) -> tuple[LazySplit, LazySplit | None]:
    """Split ``split`` into ``(train, val)`` with sklearn's seeded, stratified ``train_test_split``.

    Args:
        split: the full training split.
        val_fraction: share of ``split`` moved to validation, in ``[0, 1)``; 0 returns ``(split, None)``.
        seed: ``random_state`` of the shuffle; the same seed gives the same split.
        stratify: one key per example to stratify on (default: the labels).

    Both parts keep the original example order.
    """
    if check_fraction(val_fraction) == 0.0:
        return split, None
    keys = split.labels if stratify is None else np.asarray(stratify)
    try:
        train_idx, val_idx = train_test_split(np.arange(len(split)), test_size=val_fraction, random_state=seed, stratify=keys)
    except ValueError as err:
        raise ValueError(
            f"val_fraction={val_fraction} cannot carve a stratified validation split from {len(split)} training examples "
            f"with {len(np.unique(keys))} strata ({err}); use a larger val_fraction or 0"
        ) from err
    return split.subset(np.sort(train_idx)), split.subset(np.sort(val_idx))
