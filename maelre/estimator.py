"""``MAELREClassifier``: a scikit-learn classifier over any modality maelre handles.

One estimator takes time series, text, audio or images (see ``maelre.inputs`` for the
accepted forms of ``X``), picks the matching modality adapter, builds adapter + backbone
+ head with ``maelre.engine.build_model`` and trains it with
``maelre.engine.fit_classifier``; nothing here is a training loop of its own.

>>> from maelre import MAELREClassifier
>>> clf = MAELREClassifier(backbone="maelre", dim=32, depth=2, heads=2, max_epochs=5, random_state=0)
>>> clf.fit(X_train, y_train).score(X_test, y_test)  # doctest: +SKIP
"""
from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import warnings
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import check_random_state, column_or_1d
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_consistent_length, check_is_fitted, validate_data

from maelre.inputs import DetectedInput, detect_input, to_items

logger = logging.getLogger(__name__)

#: adapter name -> the kind of input it reads (``"pixels"`` reads images, one token per pixel)
ADAPTER_INPUTS = {"timeseries": "timeseries", "text": "text", "audio": "audio", "image": "image", "pixels": "image"}
#: data-derived defaults aim at about this many tokens per sample (patches of series and images)
TARGET_TOKENS = 128
_FORMAT = "maelre.MAELREClassifier/1"
_METADATA_KEY = "maelre_estimator"
# learned state besides the network itself, as JSON-able values (``save``/``load`` and pickling)
_FITTED_ATTRS = ("modality_", "n_iter_", "history_", "n_features_in_", "feature_names_in_")


class MAELREClassifier(ClassifierMixin, BaseEstimator):
    """Classify time series, text, audio or images with a maelre encoder (scikit-learn API).

    Parameters
    ----------
    backbone : str, default="maelre"
        Registered backbone (``maelre.list_backbones()``): ``"maelre"``, ``"transformer"``,
        ``"perceiver_ar"``, ``"ecp"``, ``"masformer"``.
    modality : str, default="auto"
        ``"auto"`` infers it from ``X`` (logged, and printed when ``verbose``); or one of
        ``"timeseries"``, ``"text"``, ``"audio"``, ``"image"`` (patch tokens),
        ``"pixels"`` (one token per pixel). 3D numeric arrays count as ``(n, C, T)``
        series unless their dtype is uint8; pass ``modality="image"`` for float images.
    dim, depth, heads : int, default=64, 4, 4
        Token width, number of blocks, attention heads (``dim % heads == 0``).
    backbone_params : dict, default=None
        Further backbone config fields (e.g. ``{"exact_blocks": 2}``); not
        ``dim``/``depth``/``heads``.
    adapter_params : dict, default=None
        Adapter config fields overriding the data-derived defaults (time series: point
        tokens up to 128 steps, else patches of ``ceil(T / 128)`` steps, ``max_len`` the
        longest training series; audio: ``sample_rate`` of the data; images:
        ``img_size``, ``in_chans`` and the smallest patch of at least 2x2 pixels giving
        at most 128 patches). Not ``dim``.
    max_epochs : int, default=20
        Training epochs (fewer with ``early_stopping``).
    batch_size : int, default=32
        Training batch size (prediction uses twice this).
    lr : float, default=1e-3
        Peak AdamW learning rate (cosine decay).
    weight_decay : float, default=0.05
        AdamW decoupled weight decay (not on biases and norms).
    class_weight : dict, "balanced" or None, default=None
        Cross-entropy class weights: ``{label: weight}``, or ``"balanced"``
        (``n_samples / (n_classes * count)``, as in scikit-learn).
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the training data (stratified), stop after
        ``n_iter_no_change`` epochs without a better validation accuracy, and keep the
        best epoch's weights.
    validation_fraction : float, default=0.1
        Held-out share for ``early_stopping``.
    n_iter_no_change : int, default=5
        Patience of ``early_stopping`` in epochs.
    random_state : int, RandomState or None, default=None
        Seeds weight init, batch order and dropout; an int gives reproducible fits on CPU.
    device : str, default="auto"
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.
    verbose : int, default=0
        1: print what ``modality="auto"`` inferred and a summary per fit; 2: also
        Lightning's progress bar.
    sample_rate : int or None, default=None
        Sample rate (Hz) of bare waveforms; giving it makes ``modality="auto"`` read
        numeric input as audio.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels (``LabelEncoder`` order); ``predict_proba`` columns follow it.
    modality_ : str
        Adapter used (``"timeseries"``, ``"text"``, ``"audio"``, ``"image"``, ``"pixels"``).
    n_features_in_ : int
        Series length ``T`` seen in ``fit``; only for 2D fixed-length numeric ``X``.
    feature_names_in_ : ndarray of str
        Column names, when ``X`` was a DataFrame with string column names.
    model_ : maelre.SequenceClassifier
        The trained network (adapter + backbone + head), on CPU, in eval mode.
    adapter_ : modalities.base.ModalityAdapter
        ``model_.adapter`` (with its fitted preprocessing state).
    n_iter_ : int
        Epochs run.
    history_ : list of dict
        Per epoch: ``epoch``, ``step``, ``train/loss`` and, with early stopping, ``val/*``.
    """

    _parameter_constraints: dict = {
        "backbone": [str],
        "modality": [StrOptions({"auto", *ADAPTER_INPUTS})],
        "dim": [Interval(Integral, 1, None, closed="left")],
        "depth": [Interval(Integral, 1, None, closed="left")],
        "heads": [Interval(Integral, 1, None, closed="left")],
        "backbone_params": [dict, None],
        "adapter_params": [dict, None],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "class_weight": [dict, StrOptions({"balanced"}), None],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
        "device": [str],
        "verbose": ["verbose"],
        "sample_rate": [Interval(Integral, 1, None, closed="left"), None],
    }

    def __init__(
        self,
        backbone: str = "maelre",
        modality: str = "auto",
        dim: int = 64,
        depth: int = 4,
        heads: int = 4,
        backbone_params: dict | None = None,
        adapter_params: dict | None = None,
        max_epochs: int = 20,
        batch_size: int = 32,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        class_weight: dict | str | None = None,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 5,
        random_state: int | np.random.RandomState | None = None,
        device: str = "auto",
        verbose: int = 0,
        sample_rate: int | None = None,
    ) -> None:
        self.backbone = backbone
        self.modality = modality
        self.dim = dim
        self.depth = depth
        self.heads = heads
        self.backbone_params = backbone_params
        self.adapter_params = adapter_params
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.class_weight = class_weight
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.random_state = random_state
        self.device = device
        self.verbose = verbose
        self.sample_rate = sample_rate

    # ------------------------------------------------------------------ tags
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True  # (n, C, T) series, (n, H, W) images
        tags.input_tags.string = True  # a list of documents is text input
        tags.input_tags.allow_nan = self._allows_nan()
        return tags

    def _allows_nan(self) -> bool:
        """NaN is data only when the time-series adapter is told what to do with it."""
        params = self.adapter_params or {}
        return self.modality in ("auto", "timeseries") and params.get("nan_policy", "raise") != "raise"

    # ------------------------------------------------------------------ input handling
    def _input_modality(self) -> str:
        return "auto" if self.modality == "auto" else ADAPTER_INPUTS[self.modality]

    def _items(self, X: Any, *, reset: bool, y: Any = None) -> tuple[list, DetectedInput, Any]:
        """Detect and validate ``X`` -> (per-sample items, detection, validated ``y``).

        2D fixed-length numeric ``X`` goes through scikit-learn's ``validate_data``, which
        sets (``reset``) or checks ``n_features_in_`` / ``feature_names_in_``.
        """
        modality = self._input_modality() if reset else ADAPTER_INPUTS[self.modality_]
        detected = detect_input(X, modality, self.sample_rate)
        if detected.layout == "table":
            nan = "allow-nan" if self._allows_nan() else True
            if y is None:
                X = validate_data(self, X, reset=reset, dtype=[np.float64, np.float32], ensure_all_finite=nan)
            else:
                X, y = validate_data(self, X, y, reset=reset, dtype=[np.float64, np.float32], ensure_all_finite=nan)
        elif reset:
            # fixed-length feature semantics do not apply: forget what an earlier fit saw
            for attr in ("n_features_in_", "feature_names_in_"):
                self.__dict__.pop(attr, None)
        items = to_items(X, detected, self.sample_rate, allow_nan=self._allows_nan())
        return items, detected, y

    def _torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            device = torch.device(self.device)
        except RuntimeError:
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {self.device!r}") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={self.device!r} but CUDA is not available here; use device='auto' or 'cpu'")
        return device

    def _trainer_device(self) -> dict:
        """``TrainerConfig`` accelerator/devices for ``device``."""
        device = self._torch_device()
        if device.type == "cuda":
            return {"accelerator": "gpu", "devices": [device.index or 0]}
        return {"accelerator": device.type, "devices": 1}

    # ------------------------------------------------------------------ model configuration
    def _adapter_config(self, adapter: str, items: list) -> dict:
        """Data-derived adapter defaults, overridden by ``adapter_params``; ``dim`` and padding tied to the backbone."""
        from maelre.recipe import _length_multiple

        params = dict(self.adapter_params or {})
        if "dim" in params:
            raise ValueError("set the token width with the estimator's dim parameter, not adapter_params['dim']")
        config = {**_data_defaults(adapter, items, params), **params, "dim": self.dim}
        config.setdefault("pad_to_multiple", _length_multiple(self.backbone, self._backbone_config()))
        return config

    def _backbone_config(self, adapter: Any = None) -> dict:
        """Backbone kwargs; with the fitted ``adapter``, MAELRE's switch threshold is raised where the depth cannot reach ``dim``."""
        params = dict(self.backbone_params or {})
        clash = sorted({"dim", "depth", "heads"} & set(params))
        if clash:
            raise ValueError(f"set {', '.join(clash)} with the estimator's own parameters, not backbone_params")
        config = {"dim": self.dim, "depth": self.depth, "heads": self.heads, **params}
        if adapter is not None and self.backbone == "maelre":
            from maelre.backbones.maelre import reachable_threshold

            c = adapter.config
            config = reachable_threshold(config, -(-c.max_len // c.pad_to_multiple) * c.pad_to_multiple)
        return config

    def _report(self, message: str) -> None:
        logger.info(message)
        if self.verbose:
            print(f"[MAELREClassifier] {message}")

    # ------------------------------------------------------------------ fit / predict
    def fit(self, X: Any, y: Any) -> "MAELREClassifier":
        """Train on ``X`` (see ``maelre.inputs`` for its forms) and labels ``y`` of any hashable type.

        Returns:
            self
        """
        from maelre.engine import OptimConfig, TrainerConfig, build_model, fit_classifier, prepare_adapter, split_validation
        from maelre.engine.seed import rng_state, seed_everything, set_rng_state
        from maelre.registry import get_backbone_class

        self._validate_params()
        get_backbone_class(self.backbone)  # unknown names fail here, with a suggestion
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None")
        items, detected, y = self._items(X, reset=True, y=y)
        y = column_or_1d(y, warn=True)
        check_consistent_length(items, y)
        encoder = LabelEncoder().fit(y)  # first: its error for mixed label types is the clearest
        check_classification_targets(y)
        classes = encoder.classes_
        if len(classes) < 2:
            raise ValueError(f"{type(self).__name__} needs samples of at least 2 classes to train, but y has 1 class: {classes.tolist()}")
        labels = encoder.transform(y)
        weights = None if self.class_weight is None else compute_class_weight(self.class_weight, classes=classes, y=y).tolist()

        adapter_name = self.modality if self.modality != "auto" else detected.modality
        self._report(f"modality={adapter_name!r}: {detected.reason}")
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        samples = list(zip(items, labels.tolist()))
        train, val = split_validation(samples, self.validation_fraction, seed) if self.early_stopping else (samples, None)

        caller_rng = rng_state()  # the engine seeds the global generators; give the caller's back afterwards
        try:
            seed_everything(seed)  # weight init happens here, before fit_classifier seeds the training run
            adapter = prepare_adapter(adapter_name, self._adapter_config(adapter_name, [x for x, _ in train]), train)
            model = build_model(adapter, self.backbone, self._backbone_config(adapter), num_classes=len(classes))
            trainer_cfg = TrainerConfig(
                max_epochs=self.max_epochs,
                seed=seed,
                early_stopping_patience=self.n_iter_no_change if self.early_stopping else None,
                enable_progress_bar=self.verbose >= 2,
                **self._trainer_device(),
            )
            optim_cfg = OptimConfig(lr=float(self.lr), weight_decay=float(self.weight_decay))
            with warnings.catch_warnings():
                # without early stopping there is deliberately no validation loader
                warnings.filterwarnings("ignore", message=".*validation_step.*val_dataloader")
                result = fit_classifier(
                    model, train, val, trainer_cfg, optim_cfg,
                    batch_size=self.batch_size, class_weights=weights, classes=[str(c) for c in classes],
                )
        finally:
            set_rng_state(caller_rng)

        self.classes_ = classes
        self.modality_ = adapter_name
        self.model_ = result.model
        self.adapter_ = result.model.adapter
        self.history_ = result.history
        self.n_iter_ = len(result.history)
        self._report(f"trained {self.n_iter_} epochs on {len(train)} samples in {result.fit_seconds:.1f} s")
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, shape ``(n_samples, n_classes)``; columns ordered as ``classes_``, rows sum to 1."""
        from maelre.engine import predict_proba

        check_is_fitted(self)
        items, _, _ = self._items(X, reset=False)
        proba = predict_proba(self.model_, items, batch_size=2 * self.batch_size, device=self._torch_device()).astype(np.float64)
        self.model_.cpu()
        return proba / proba.sum(axis=1, keepdims=True)

    def predict(self, X: Any) -> np.ndarray:
        """Most probable class of each sample, shape ``(n_samples,)``, from ``classes_``."""
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

    # ------------------------------------------------------------------ persistence
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
        from maelre.engine import ModelSpec, build_model
        from modalities import create_adapter

        spec = ModelSpec.from_dict(state["spec"])
        adapter = create_adapter(spec.adapter, **spec.adapter_config)
        adapter.load_preprocessing_state(state["preprocessing"])
        model = build_model(adapter, spec.backbone, spec.backbone_config, spec.num_classes, spec.head_dropout, spec.two_tower)
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
        state = _read_state(blob)
        if "params" not in state:
            raise ValueError(f"{path} holds fitted state without parameters; was it written by MAELREClassifier.save?")
        est = cls(**state["params"])
        est._restore(state, load_safetensors(blob))
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


def _data_defaults(adapter: str, items: list, params: dict) -> dict:
    """Adapter settings read off the training items, given the user's ``adapter_params``.

    Time series: one token per step up to ``TARGET_TOKENS`` steps, else patches of
    ``ceil(T / TARGET_TOKENS)`` steps; ``max_len`` = the longest training series in tokens
    (for the user's ``token``/``patch_len`` when given). Audio: the data's sample rate.
    Images: ``img_size``, ``in_chans`` and the smallest patch of at least 2x2 pixels that
    gives at most ``TARGET_TOKENS`` patches.
    """
    if adapter == "timeseries":
        longest = max(x.shape[-1] for x in items)
        default_token = "point" if longest <= TARGET_TOKENS else "patch"
        token = params.get("token", default_token)
        if token == "point":
            return {"token": "point", "max_len": longest}
        patch = params.get("patch_len", math.ceil(longest / TARGET_TOKENS))
        stride = params.get("patch_stride") or patch
        return {"token": "patch", "patch_len": patch, "max_len": max(1, math.ceil(max(longest - patch, 0) / stride) + 1)}
    if adapter == "audio":
        rates = {int(rate) for _, rate in items}
        return {"sample_rate": rates.pop()} if len(rates) == 1 else {}
    if adapter == "image":
        first = np.asarray(items[0])
        h, w = first.shape[:2]
        channels = 1 if first.ndim == 2 or first.shape[-1] == 1 else 3
        common = math.gcd(h, w)
        sizes = [p for p in range(2, common + 1) if common % p == 0] or [1]
        patch = next((p for p in sizes if (h // p) * (w // p) <= TARGET_TOKENS), sizes[-1])
        return {"img_size": (h, w), "in_chans": channels, "patch_size": patch}
    return {}


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
