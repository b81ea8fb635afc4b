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

import logging
import warnings
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import check_random_state, column_or_1d
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_consistent_length, check_is_fitted, validate_data

from maelre.estimator_io import _FITTED_ATTRS, _FORMAT, _METADATA_KEY, _Persistence, _read_state  # noqa: F401  (re-exported)
from maelre.estimator_settings import (  # noqa: F401  (re-exported)
    GENERIC_DEFAULTS,
    TARGET_TOKENS,
    TS_ADAPTER_DEFAULTS,
    TS_BUCKET_BATCHES,
    TS_EPOCH_RANGE,
    TS_LARGE,
    TS_MAELRE_DEFAULTS,
    TS_TARGET_STEPS,
    _data_defaults,
    auto_settings,
)
from maelre.inputs import DetectedInput, detect_input, to_items

logger = logging.getLogger(__name__)

#: adapter name -> the kind of input it reads (``"pixels"`` reads images, one token per pixel)
ADAPTER_INPUTS = {"timeseries": "timeseries", "text": "text", "audio": "audio", "image": "image", "pixels": "image"}


def _varies_in_length(adapter_name: str, samples: list) -> bool:
    """Whether training batches should be length-bucketed: time series of different lengths.

    Random batches of a set whose lengths vary tenfold are nearly all padded to the longest
    series; bucketing cuts that padding (PLAID: most of the compute).
    """
    return adapter_name == "timeseries" and len({x.shape[-1] for x, _ in samples}) > 1


class MAELREClassifier(_Persistence, ClassifierMixin, BaseEstimator):
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
    dim, depth, heads : int or "auto", default="auto"
        Token width, number of blocks, attention heads (``dim % heads == 0``). ``"auto"``:
        see *Data-derived defaults* below (64, 4, 4 outside time series).
    backbone_params : dict, default=None
        Further backbone config fields (e.g. ``{"exact_blocks": 2}``); not
        ``dim``/``depth``/``heads``.
    adapter_params : dict, default=None
        Adapter config fields overriding the data-derived defaults (time series: point
        tokens up to 128 steps, else patches of ``ceil(T / 128)`` steps, ``max_len`` the
        longest training series; audio: ``sample_rate`` of the data; images:
        ``img_size``, ``in_chans`` and the smallest patch of at least 2x2 pixels giving
        at most 128 patches). Not ``dim``.
    max_epochs : int or "auto", default="auto"
        Training epochs (fewer with ``early_stopping``); ``"auto"``: 20 outside time series.
    batch_size : int or "auto", default="auto"
        Training batch size (prediction uses twice this); ``"auto"``: 32 outside time series.
    lr : float or "auto", default="auto"
        Peak AdamW learning rate (cosine decay); ``"auto"``: 1e-3 outside time series.
    weight_decay : float, default=0.05
        AdamW decoupled weight decay (not on biases and norms).
    class_weight : dict, "balanced" or None, default=None
        Cross-entropy class weights: ``{label: weight}``, or ``"balanced"``
        (``n_samples / (n_classes * count)``, as in scikit-learn).
    early_stopping : bool or "auto", default="auto"
        True: hold out ``validation_fraction`` of the training data (stratified), stop after
        ``n_iter_no_change`` epochs without a better validation accuracy, and keep the
        best epoch's weights. ``"auto"``: for time series of at least 1000 training series
        with ``max_epochs="auto"``, the same split, stopping on the validation loss;
        otherwise off (small sets train the whole epoch budget on all their series).
    validation_fraction : float or "auto", default="auto"
        Held-out share for early stopping; ``"auto"``: 0.2 for time series, else 0.1.
    n_iter_no_change : int or "auto", default="auto"
        Patience of early stopping in epochs; ``"auto"``: a quarter of the epoch budget
        (at least 10) for time series, else 5.
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

    Data-derived defaults (time series)
    -----------------------------------
    Every ``"auto"`` follows one set of rules, read off the training set (``n`` series,
    longest ``T`` steps); ``auto_settings`` implements them and ``docs/sklearn.md`` lists
    them. The adapter gets per-series normalization with scale channels and the
    convolutional stem (``adapter_params`` override both).

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
    settings_ : dict
        The settings ``fit`` used, every ``"auto"`` resolved (``dim``, ``depth``, ``heads``,
        ``max_epochs``, ``batch_size``, ``lr``, ``early_stopping``, ``stop_on``, ...).
    """

    _parameter_constraints: dict = {
        "backbone": [str],
        "modality": [StrOptions({"auto", *ADAPTER_INPUTS})],
        "dim": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "depth": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "heads": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "backbone_params": [dict, None],
        "adapter_params": [dict, None],
        "max_epochs": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "batch_size": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "lr": [Interval(Real, 0, None, closed="neither"), StrOptions({"auto"})],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "class_weight": [dict, StrOptions({"balanced"}), None],
        "early_stopping": ["boolean", StrOptions({"auto"})],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither"), StrOptions({"auto"})],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "random_state": ["random_state"],
        "device": [str],
        "verbose": ["verbose"],
        "sample_rate": [Interval(Integral, 1, None, closed="left"), None],
    }

    def __init__(
        self,
        backbone: str = "maelre",
        modality: str = "auto",
        dim: int | str = "auto",
        depth: int | str = "auto",
        heads: int | str = "auto",
        backbone_params: dict | None = None,
        adapter_params: dict | None = None,
        max_epochs: int | str = "auto",
        batch_size: int | str = "auto",
        lr: float | str = "auto",
        weight_decay: float = 0.05,
        class_weight: dict | str | None = None,
        early_stopping: bool | str = "auto",
        validation_fraction: float | str = "auto",
        n_iter_no_change: int | str = "auto",
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
    def _adapter_config(self, adapter: str, items: list, settings: dict) -> dict:
        """Data-derived adapter defaults, overridden by ``adapter_params``; ``dim`` and padding tied to the backbone."""
        from maelre.recipe import _length_multiple

        params = dict(self.adapter_params or {})
        if "dim" in params:
            raise ValueError("set the token width with the estimator's dim parameter, not adapter_params['dim']")
        config = {**_data_defaults(adapter, items, params), **params, "dim": settings["dim"]}
        config.setdefault("pad_to_multiple", _length_multiple(self.backbone, self._backbone_config(settings)))
        return config

    def _backbone_config(self, settings: dict, adapter: Any = None) -> dict:
        """Backbone kwargs; with the fitted ``adapter``, MAELRE gets ``TS_MAELRE_DEFAULTS`` for time series (under
        ``backbone_params``) and its switch threshold is raised where the depth cannot reach ``dim``."""
        params = dict(self.backbone_params or {})
        clash = sorted({"dim", "depth", "heads"} & set(params))
        if clash:
            raise ValueError(f"set {', '.join(clash)} with the estimator's own parameters, not backbone_params")
        config = {"dim": settings["dim"], "depth": settings["depth"], "heads": settings["heads"], **params}
        if adapter is not None and self.backbone == "maelre":
            from maelre.backbones.maelre import reachable_threshold

            if adapter.modality == "timeseries":
                config = {**TS_MAELRE_DEFAULTS, **config}
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
        from maelre.engine import split_validation
        from maelre.engine.seed import rng_state, set_rng_state
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
        settings = auto_settings(self.get_params(deep=False), adapter_name, labels)
        self._report("settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()))
        train, val = split_validation(samples, settings["validation_fraction"], seed) if settings["early_stopping"] else (samples, None)

        caller_rng = rng_state()  # the engine seeds the global generators; give the caller's back afterwards
        try:
            result = self._train(adapter_name, train, val, settings, settings["max_epochs"], seed, len(classes), weights, classes)
        finally:
            set_rng_state(caller_rng)

        self.classes_ = classes
        self.modality_ = adapter_name
        self.settings_ = settings
        self.model_ = result.model
        self.adapter_ = result.model.adapter
        self.history_ = result.history
        self.n_iter_ = len(result.history)
        self._report(f"trained {self.n_iter_} epochs on {len(train)} samples in {result.fit_seconds:.1f} s")
        return self

    def _train(
        self, adapter_name: str, train: list, val: list | None, settings: dict, epochs: int, seed: int,
        num_classes: int, weights: list | None, classes: np.ndarray,
    ) -> Any:
        """Build adapter + backbone + head from ``settings`` and train it for ``epochs`` (stopping early when ``val`` is given)."""
        from maelre.engine import OptimConfig, TrainerConfig, build_model, fit_classifier, prepare_adapter
        from maelre.engine.seed import seed_everything

        seed_everything(seed)  # weight init happens here, before fit_classifier seeds the training run
        adapter = prepare_adapter(adapter_name, self._adapter_config(adapter_name, [x for x, _ in train], settings), train)
        model = build_model(adapter, self.backbone, self._backbone_config(settings, adapter), num_classes=num_classes)
        trainer_cfg = TrainerConfig(
            max_epochs=epochs,
            seed=seed,
            early_stopping_patience=settings["n_iter_no_change"] if val is not None else None,
            # the auto rules wait for the validation loss: accuracy on a small split plateaus at once
            early_stopping_monitor=settings["stop_on"],
            enable_progress_bar=self.verbose >= 2,
            **self._trainer_device(),
        )
        fused = self._torch_device().type in ("cpu", "cuda")  # one kernel for all parameters: faster for small models
        optim_cfg = OptimConfig(lr=float(settings["lr"]), weight_decay=float(self.weight_decay), fused=fused)
        with warnings.catch_warnings():
            # without early stopping there is deliberately no validation loader
            warnings.filterwarnings("ignore", message=".*validation_step.*val_dataloader")
            return fit_classifier(
                model, train, val, trainer_cfg, optim_cfg, batch_size=settings["batch_size"], class_weights=weights,
                classes=[str(c) for c in classes], cache=adapter_name == "timeseries",  # its encode is deterministic
                bucket_by_length=_varies_in_length(adapter_name, train), bucket_batches=TS_BUCKET_BATCHES,
            )

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, shape ``(n_samples, n_classes)``; columns ordered as ``classes_``, rows sum to 1."""
        from maelre.engine import predict_proba

        check_is_fitted(self)
        items, _, _ = self._items(X, reset=False)
        batch_size = 2 * getattr(self, "settings_", GENERIC_DEFAULTS)["batch_size"]
        proba = predict_proba(self.model_, items, batch_size=batch_size, device=self._torch_device()).astype(np.float64)
        self.model_.cpu()
        return proba / proba.sum(axis=1, keepdims=True)

    def predict(self, X: Any) -> np.ndarray:
        """Most probable class of each sample, shape ``(n_samples,)``, from ``classes_``."""
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

