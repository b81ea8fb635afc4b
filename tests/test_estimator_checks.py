"""scikit-learn's own estimator checks on a tiny ``MAELREClassifier``."""
from __future__ import annotations

from sklearn.utils.estimator_checks import parametrize_with_checks

from maelre.estimator import MAELREClassifier

TINY = dict(dim=16, depth=1, heads=2, max_epochs=10, batch_size=32, lr=3e-3, random_state=0)


def expected_failures(estimator: MAELREClassifier) -> dict[str, str]:
    return {}


@parametrize_with_checks([MAELREClassifier(**TINY)], expected_failed_checks=expected_failures)
def test_sklearn_compatible(estimator, check):
    check(estimator)
