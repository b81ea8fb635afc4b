"""``MAELRESktimeClassifier``: ``MAELREClassifier`` as an sktime time-series classifier.

sktime converts whatever panel the user holds (``nested_univ``, ``pd-multiindex`` ...)
to one of ``X_inner_mtype`` (``numpy3D`` arrays stay as they are, everything else becomes
a ``df-list``, which holds unequal lengths) and this class hands it to a
``MAELREClassifier`` with ``modality="timeseries"`` (a uint8 panel is still series here).

>>> from sktime.datasets import load_basic_motions
>>> from maelre.sktime_adapter import MAELRESktimeClassifier
>>> X, y = load_basic_motions(split="train", return_X_y=True)
>>> clf = MAELRESktimeClassifier(dim=32, depth=2, heads=2, max_epochs=10, random_state=0).fit(X, y)  # doctest: +SKIP
"""
from __future__ import annotations

from typing import Any

import numpy as np
from sktime.classification.base import BaseClassifier

from maelre.estimator import MAELREClassifier


class MAELRESktimeClassifier(BaseClassifier):
    """sktime ``BaseClassifier`` around ``MAELREClassifier`` (multivariate, unequal length).

    Parameters are those of ``MAELREClassifier`` (see its docstring) except ``modality``
    (always ``"timeseries"``) and ``sample_rate``.

    Attributes
    ----------
    estimator_ : MAELREClassifier
        The fitted scikit-learn estimator (``estimator_.model_`` is the network).
    classes_, n_classes_ :
        Set by sktime's ``BaseClassifier.fit``.

    Examples
    --------
    >>> from sktime.datasets import load_unit_test
    >>> from maelre.sktime_adapter import MAELRESktimeClassifier
    >>> X_train, y_train = load_unit_test(split="train", return_X_y=True)
    >>> X_test, y_test = load_unit_test(split="test", return_X_y=True)
    >>> clf = MAELRESktimeClassifier(dim=16, depth=1, heads=2, max_epochs=2, random_state=0)
    >>> clf = clf.fit(X_train, y_train)
    >>> clf.predict_proba(X_test).shape
    (22, 2)
    """

    _tags = {
        "authors": ["maelre developers"],
        "maintainers": ["maelre developers"],
        "python_dependencies": ["torch", "lightning"],
        "X_inner_mtype": ["df-list", "numpy3D"],  # unequal-length panels become df-list
        "y_inner_mtype": "numpy1D",
        "capability:multivariate": True,
        "capability:unequal_length": True,
        "capability:missing_values": False,
        "capability:predict_proba": True,
        "capability:class_weight": True,
        "capability:random_state": True,
        "property:randomness": "derandomized",
        "classifier_type": "feature",
    }

    def __init__(
        self,
        backbone: str = "maelre",
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
    ) -> None:
        self.backbone = backbone
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
        super().__init__()

    def _estimator(self) -> MAELREClassifier:
        return MAELREClassifier(modality="timeseries", **self.get_params(deep=False))

    def _fit(self, X: Any, y: np.ndarray) -> "MAELRESktimeClassifier":
        """``X``: numpy3D ``(n, C, T)`` or df-list (``(T_i, C)`` frames); ``y``: 1D labels."""
        self.estimator_ = self._estimator().fit(X, y)
        return self

    def _predict_proba(self, X: Any) -> np.ndarray:
        """``(n, n_classes)`` probabilities, columns in ``classes_`` order."""
        return self.estimator_.predict_proba(X)

    def _predict(self, X: Any) -> np.ndarray:
        return self.estimator_.predict(X)

    @classmethod
    def get_test_params(cls, parameter_set: str = "default") -> list[dict]:
        """Tiny configurations for sktime's estimator checks (seconds on a CPU)."""
        tiny = {"dim": 8, "depth": 1, "heads": 2, "max_epochs": 1, "batch_size": 16, "random_state": 0, "device": "cpu"}
        return [
            tiny,
            {**tiny, "backbone": "transformer", "class_weight": "balanced", "early_stopping": True, "validation_fraction": 0.25},
        ]
