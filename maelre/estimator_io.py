"""Saving and loading a fitted ``MAELREClassifier`` without pickle: weights as safetensors, the fitted state as JSON in its metadata.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from sklearn.utils.validation import check_is_fitted

_FORMAT = "maelre.MAELREClassifier/1"
_METADATA_KEY = "maelre_estimator"
# learned state besides the network itself, as JSON-able values (``save``/``load`` and pickling)
_FITTED_ATTRS = ("modality_", "n_iter_", "history_", "settings_", "n_features_in_", "feature_names_in_")


class _Persistence:
    """``save``/``load`` and pickling of ``MAELREClassifier`` (its network travels as safetensors bytes)."""

    def _fitted_state(self) -> dict:
        """JSON-able description of everything learned, besides the weights."""
        state = {
            "format": _FORMAT,
            "classes": {"dtype": "object" if self.classes_.dtype == object else self.classes_.dtype.str, "values": self.classes_.tolist()},
            "spec": self.model_.spec.to_dict(),
            "preprocessing": self.adapter_.preprocessing_state(),
        }
        for attr in _FITTED_ATTRS:
            if hasattr(self, attr):
                value = getattr(self, attr)
                state[attr] = value.tolist() if isinstance(value, np.ndarray) else value
        return state

    def _restore(self, state: dict, weights: dict[str, torch.Tensor]) -> None:
        """Set the fitted attributes from ``_fitted_state`` output and the weights."""
        from maelre.engine import ModelSpec, model_from_spec
        from modalities import create_adapter

        spec = ModelSpec.from_dict(state["spec"])
        adapter = create_adapter(spec.adapter, **spec.adapter_config)
        adapter.load_preprocessing_state(state["preprocessing"])
        model = model_from_spec(adapter, spec)
        model.load_state_dict(weights, strict=True)
        classes = state["classes"]
        self.classes_ = np.asarray(classes["values"], dtype=object if classes["dtype"] == "object" else np.dtype(classes["dtype"]))
        self.model_ = model.eval()
        self.adapter_ = model.adapter
        for attr in _FITTED_ATTRS:
            if attr in state:
                value = state[attr]
                setattr(self, attr, np.asarray(value, dtype=object) if attr == "feature_names_in_" else value)

    def _to_safetensors(self, extra: dict | None = None) -> bytes:
        """Weights as safetensors bytes; ``_fitted_state()`` (plus ``extra``) as JSON in the metadata."""
        # clones: safetensors refuses tensors that share storage
        weights = {k: v.detach().cpu().clone().contiguous() for k, v in self.model_.state_dict().items()}
        try:
            meta = json.dumps({**self._fitted_state(), **(extra or {})})
        except TypeError as err:
            raise ValueError(f"cannot save: labels, parameters and fitted state must be JSON-serialisable ({err})") from None
        return save_safetensors(weights, metadata={_METADATA_KEY: meta})

    def save(self, path: str | os.PathLike) -> Path:
        """Write the fitted estimator to one ``.safetensors`` file, atomically.

        Weights are safetensors tensors; parameters, classes, the model spec, the
        adapter's preprocessing state and the training history are JSON in the file's
        metadata (key ``maelre_estimator``). Nothing is pickled.

        Returns:
            the path written.

        Raises:
            ValueError: a parameter or label is not JSON-serialisable (e.g. ``random_state``
                given as a ``RandomState``: pass an int).
        """
        check_is_fitted(self)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        blob = self._to_safetensors({"params": self.get_params(deep=False)})
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(blob)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "MAELREClassifier":
        """Rebuild an estimator written by ``save`` (no unpickling)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no saved MAELREClassifier at {path}")
        blob = path.read_bytes()
        try:
            state, weights = _read_state(blob), load_safetensors(blob)
        except (ValueError, SafetensorError) as err:  # a truncated copy, or another file
            raise ValueError(f"cannot load a MAELREClassifier from {path} ({' '.join(str(err).split())}); "
                             "the file is damaged or was not written by MAELREClassifier.save: save the fitted estimator again") from err
        if "params" not in state:
            raise ValueError(f"{path} holds fitted state without parameters; was it written by MAELREClassifier.save?")
        est = cls(**state["params"])
        est._restore(state, weights)
        return est

    def __getstate__(self) -> dict:
        # the network travels as safetensors bytes, not as pickled nn.Module objects
        state = super().__getstate__()
        if "model_" in state:
            state = {k: v for k, v in state.items() if k not in ("model_", "adapter_", "classes_", *_FITTED_ATTRS)}
            state["_fitted_safetensors"] = self._to_safetensors()
        return state

    def __setstate__(self, state: dict) -> None:
        blob = state.pop("_fitted_safetensors", None)
        super().__setstate__(state)
        if blob is not None:
            self._restore(_read_state(blob), load_safetensors(blob))


def _read_state(blob: bytes) -> dict:
    """The fitted state stored in a safetensors blob's metadata (8-byte little-endian header size, then JSON)."""
    if len(blob) < 8:
        raise ValueError("not a safetensors file: too short")
    size = int.from_bytes(blob[:8], "little")
    try:
        header = json.loads(blob[8 : 8 + size])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError("not a safetensors file: unreadable header") from None
    meta = (header.get("__metadata__") or {}).get(_METADATA_KEY)
    if meta is None:
        raise ValueError("this safetensors file holds no MAELREClassifier state; was it written by MAELREClassifier.save?")
    state = json.loads(meta)
    if state.get("format") != _FORMAT:
        raise ValueError(f"unsupported MAELREClassifier file format {state.get('format')!r} (this version reads {_FORMAT!r})")
    return state
