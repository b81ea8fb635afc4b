"""Recognise the inputs users hand to ``MAELREClassifier`` and turn them into per-sample items.

Accepted ``X`` (``n`` samples):

===========  ==================================================================
modality     forms of ``X``
===========  ==================================================================
timeseries   numpy/array-like ``(n, T)`` (univariate) or ``(n, C, T)`` (multivariate);
             a list of ``(T_i,)`` or ``(C, T_i)`` arrays (variable length); a plain
             numeric ``DataFrame`` (``(n, T)``); sktime ``nested_univ`` and
             ``pd-multiindex`` panels
text         a list / 1D array / ``Series`` of strings
audio        a list of ``(waveform, sample_rate)`` pairs; or waveforms (list or
             ``(n, T)`` / ``(n, C, T)`` array) together with ``sample_rate=``
image        ``(n, H, W)`` or ``(n, H, W, C)`` arrays (a 3D array counts as images
             under ``modality="auto"`` only when its dtype is ``uint8``); a list of
             ``(H, W)`` / ``(H, W, C)`` arrays
===========  ==================================================================

``detect_input`` names the modality and the layout (with a sentence saying why, which
the estimator logs); ``to_items`` converts ``X`` to one item per sample in the form the
modality's adapter ``encode`` takes. Tabular input (``layout == "table"``) is validated
by the estimator itself with scikit-learn's ``validate_data`` so that ``n_features_in_``
and ``feature_names_in_`` follow scikit-learn's rules.
"""
from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

MODALITIES = ("timeseries", "text", "audio", "image")


@dataclass(frozen=True)
class DetectedInput:
    """What ``X`` is.

    Attributes:
        modality: one of ``MODALITIES``.
        layout: ``"table"`` (2D numeric, fixed length: scikit-learn feature semantics),
            ``"array"`` (numeric ndarray of rank 3 or 4), ``"sequence"`` (list of
            per-sample arrays), ``"panel"`` (sktime pandas panel), ``"text"`` (strings),
            ``"audio_pairs"`` (``(waveform, sample_rate)`` pairs).
        reason: one sentence saying why (logged when ``modality="auto"``).
    """

    modality: str
    layout: str
    reason: str


def _is_string(x: Any) -> bool:
    return isinstance(x, (str, np.str_))


def _is_audio_pair(x: Any) -> bool:
    return (
        isinstance(x, tuple)
        and len(x) == 2
        and isinstance(x[1], numbers.Integral)
        and not isinstance(x[1], bool)
        and not _is_string(x[0])
        and np.ndim(x[0]) in (1, 2)
    )


def _is_pandas_panel(X: Any) -> bool:
    """sktime ``pd-multiindex`` (rows indexed by (instance, time)) or ``nested_univ`` (Series in cells)."""
    if not isinstance(X, pd.DataFrame) or X.shape[0] == 0:
        return False
    if isinstance(X.index, pd.MultiIndex):
        return True
    return X.shape[1] > 0 and isinstance(X.iloc[0, 0], (pd.Series, np.ndarray))


def _element_ranks(X: Sequence) -> set[int]:
    return {int(np.ndim(x)) for x in X}


def _is_rectangular(X: Sequence) -> bool:
    """True when every element of ``X`` is a 1D sequence of the same length (a table as nested lists)."""
    first = np.shape(X[0])
    return len(first) == 1 and all(np.shape(x) == first for x in X)


def _describe(X: Any) -> str:
    shape = getattr(X, "shape", None)
    return f"{type(X).__name__}" + (f" of shape {tuple(shape)}" if shape is not None else "")


def _detect_auto(X: Any, sample_rate: int | None) -> DetectedInput:
    if _is_pandas_panel(X):
        return DetectedInput("timeseries", "panel", "X is an sktime panel DataFrame (nested_univ or pd-multiindex), so it is time series")
    if isinstance(X, (pd.DataFrame, pd.Series)):
        X = X.to_numpy()
    if isinstance(X, np.ndarray):
        if X.dtype.kind in "US" or (X.dtype == object and X.size and all(_is_string(x) for x in X.ravel())):
            if X.ndim != 1:
                raise ValueError(f"text input must be a 1D list of documents, got a string array of shape {X.shape}")
            return DetectedInput("text", "text", "X holds strings, so it is text")
        if X.dtype == object and X.ndim == 1 and X.size:
            return _detect_auto(list(X), sample_rate)
        if sample_rate is not None and X.ndim in (2, 3):
            layout = "table" if X.ndim == 2 else "array"
            return DetectedInput("audio", layout, f"sample_rate={sample_rate} was given, so the rows of the {X.ndim}D array are waveforms")
        if X.ndim == 2:
            return DetectedInput("timeseries", "table", f"X is a 2D numeric array {X.shape}: one univariate series of length {X.shape[1]} per row")
        if X.ndim == 3 and X.dtype == np.uint8:
            return DetectedInput("image", "array", f"X is a 3D uint8 array {X.shape}: read as grayscale images (n, H, W)")
        if X.ndim == 3:
            return DetectedInput(
                "timeseries",
                "array",
                f"X is a 3D {X.dtype} array {X.shape}: read as multivariate series (n, C, T); "
                "pass modality='image' if these are (n, H, W) images",
            )
        if X.ndim == 4:
            return DetectedInput("image", "array", f"X is a 4D array {X.shape}: read as images (n, H, W, C)")
        # rank 0/1 numeric arrays fall through to scikit-learn's own error ("Expected 2D array ...")
        return DetectedInput("timeseries", "table", f"X is a {X.ndim}D numeric array")
    if isinstance(X, (list, tuple)):
        if len(X) == 0:
            raise ValueError("X is empty; pass at least one sample")
        if all(_is_string(x) for x in X):
            return DetectedInput("text", "text", "X is a list of strings, so it is text")
        if all(_is_audio_pair(x) for x in X):
            return DetectedInput("audio", "audio_pairs", "X is a list of (waveform, sample_rate) pairs, so it is audio")
        if any(_is_string(x) for x in X):
            raise ValueError("X mixes strings with other values; text input must be a list of strings only")
        if _is_rectangular(X) and sample_rate is None:
            return DetectedInput("timeseries", "table", f"X is a list of {len(X)} equal-length numeric rows: one univariate series per row")
        ranks = _element_ranks(X)
        if 0 in ranks:
            odd = next((i for i, x in enumerate(X) if np.ndim(x) == 0 and not isinstance(x, numbers.Number)), None)
            if odd is not None:  # None, a dict, ...: not a number, so not a flat list of them either
                raise ValueError(f"X[{odd}] is {type(X[odd]).__name__} {X[odd]!r}, not a sample; pass arrays (series, images), "
                                 "strings (text) or (waveform, sample_rate) pairs, with no missing entries")
            raise ValueError("X is a flat list of numbers; pass one sample per row, e.g. a 2D (n, T) array, or [series] for a single series")
        if sample_rate is not None and ranks <= {1, 2}:
            return DetectedInput("audio", "sequence", f"sample_rate={sample_rate} was given, so the list elements are waveforms")
        if ranks <= {1, 2}:
            return DetectedInput(
                "timeseries",
                "sequence",
                "X is a list of 1D/2D arrays: read as (variable-length) series, 2D ones as (C, T)",
            )
        if ranks == {3}:
            return DetectedInput("image", "sequence", "X is a list of 3D arrays: read as (H, W, C) images")
        raise ValueError(
            f"cannot tell what X is: a list whose elements have ranks {sorted(ranks)}; "
            "pass series as 1D (T,) or 2D (C, T) arrays, images as 2D/3D arrays with modality='image'"
        )
    # anything else (sparse matrices, scalars ...) goes to scikit-learn's validation, which names the problem
    return DetectedInput("timeseries", "table", f"X is a {type(X).__name__}")


_ALLOWED_LAYOUTS = {
    "timeseries": {"table", "array", "sequence", "panel"},
    "text": {"text"},
    "audio": {"table", "array", "sequence", "audio_pairs"},
    "image": {"array", "sequence"},
}


def detect_input(X: Any, modality: str = "auto", sample_rate: int | None = None) -> DetectedInput:
    """Name the modality and layout of ``X``.

    Args:
        X: the samples (see the module docstring for the accepted forms).
        modality: ``"auto"`` or one of ``MODALITIES``; an explicit modality overrides
            the guess (e.g. ``"image"`` for a float ``(n, H, W)`` array).
        sample_rate: waveforms' sample rate in Hz; given with bare waveforms it means audio.

    Returns:
        ``DetectedInput(modality, layout, reason)``.

    Raises:
        ValueError: ``X`` is empty, of an unknown form, or does not fit ``modality``.
    """
    if modality != "auto" and modality not in MODALITIES:
        raise ValueError(f"modality must be 'auto' or one of {MODALITIES}, got {modality!r}")
    if sample_rate is not None and modality not in ("auto", "audio"):
        raise ValueError(f"sample_rate only applies to audio, but modality={modality!r}; drop sample_rate or use modality='audio'")
    if modality == "audio" and sample_rate is None and not (isinstance(X, (list, tuple)) and X and all(_is_audio_pair(x) for x in X)):
        raise ValueError("audio needs a sample rate: pass (waveform, sample_rate) pairs or set sample_rate= on the estimator")
    guessed = _detect_auto(X, sample_rate if modality in ("auto", "audio") else None)
    if modality in ("auto", guessed.modality):
        return guessed
    layout = guessed.layout
    if modality == "image" and layout == "table":
        raise ValueError(f"images need a 3D (n, H, W) or 4D (n, H, W, C) array, got {_describe(X)}")
    if layout not in _ALLOWED_LAYOUTS[modality]:
        raise ValueError(f"modality={modality!r} does not take this input: {guessed.reason}")
    return DetectedInput(modality, layout, f"modality={modality!r} was given")


def series_items(X: Any, allow_nan: bool = False) -> list[np.ndarray]:
    """Time series as a list of float64 ``(C, T_i)`` arrays (``modalities.timeseries.to_series_list``).

    Raises:
        ValueError: non-numeric, empty or infinite series, or NaN unless ``allow_nan``
            (the time-series adapter's ``nan_policy`` decides what NaN means).
    """
    from modalities.timeseries import to_series_list

    series = to_series_list(X)
    if not allow_nan:
        for i, s in enumerate(series):
            if np.isnan(s).any():
                raise ValueError(
                    f"sample {i} contains NaN; clean the data or pass adapter_params={{'nan_policy': 'interpolate'}} "
                    "('zero' or 'mask' also work)"
                )
    return series


def _waveforms(X: Any) -> list:
    if isinstance(X, np.ndarray):
        return list(X)
    return [x.to_numpy() if isinstance(x, pd.Series) else x for x in X]


def to_items(X: Any, detected: DetectedInput, sample_rate: int | None = None, allow_nan: bool = False) -> list:
    """One raw item per sample of ``X``, in the form the modality's adapter ``encode`` takes.

    Returns:
        timeseries: float64 ``(C, T_i)`` arrays; text: ``str``; audio:
        ``(waveform, sample_rate)`` pairs; image: ``(H, W)`` / ``(H, W, C)`` arrays.
        The adapters validate the values (dtype, range, size) with their own messages.

    Raises:
        ValueError: see ``series_items``; bare waveforms without ``sample_rate``.
    """
    if detected.modality == "text":
        return [str(x) for x in (X.tolist() if isinstance(X, (np.ndarray, pd.Series)) else X)]
    if detected.modality == "image":
        return list(X)
    if detected.modality == "audio":
        if detected.layout == "audio_pairs":
            return list(X)
        if sample_rate is None:
            raise ValueError("bare waveforms need sample_rate= on the estimator (or pass (waveform, sample_rate) pairs)")
        return [(w, int(sample_rate)) for w in _waveforms(X)]
    return series_items(X, allow_nan)
