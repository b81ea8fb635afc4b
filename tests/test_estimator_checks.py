"""scikit-learn's own estimator checks on a tiny ``MAELREClassifier``."""
from __future__ import annotations

import pytest
import torch
from sklearn.utils.estimator_checks import parametrize_with_checks

from maelre.estimator import MAELREClassifier

TINY = dict(dim=16, depth=1, heads=2, max_epochs=5, batch_size=32, lr=1e-2, random_state=0)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # tiny models: intra-op threads only add synchronisation (and contend with xdist workers)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def expected_failures(estimator: MAELREClassifier) -> dict[str, str]:
    return {}


@parametrize_with_checks([MAELREClassifier(**TINY)], expected_failed_checks=expected_failures)
def test_sklearn_compatible(estimator, check):
    check(estimator)
