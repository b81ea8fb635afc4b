"""scikit-learn's own estimator checks (``parametrize_with_checks``) on a tiny ``MAELREClassifier``.

Every check applies and passes, so no ``expected_failed_checks`` are declared; the
numbers are chosen so that ``check_classifiers_train`` (accuracy > 0.83 on blobs) holds
with a margin: 5 epochs at lr 1e-2 reach about 0.87 on its 3-class problem.
The one skip comes from scikit-learn itself: its array-API check needs ``SCIPY_ARRAY_API=1``.
"""
from __future__ import annotations

import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from maelre.estimator import MAELREClassifier

TINY = dict(dim=16, depth=1, heads=2, max_epochs=5, batch_size=32, lr=1e-2, random_state=0)


pytestmark = pytest.mark.usefixtures("torch_single_thread")


@parametrize_with_checks([MAELREClassifier(**TINY)])
def test_sklearn_compatible(estimator, check):
    check(estimator)


def test_tags_describe_the_accepted_inputs():
    tags = MAELREClassifier().__sklearn_tags__()
    assert tags.input_tags.three_d_array and tags.input_tags.string and not tags.input_tags.sparse
    assert not tags.input_tags.allow_nan
    assert MAELREClassifier(adapter_params={"nan_policy": "interpolate"}).__sklearn_tags__().input_tags.allow_nan
