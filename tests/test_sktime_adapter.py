"""``MAELRESktimeClassifier``: sktime's own estimator checks and real UEA panels."""
from __future__ import annotations

import numpy as np
import pytest
from sktime.datasets import load_UCR_UEA_dataset
from sktime.datatypes import convert_to
from sktime.utils.estimator_checks import check_estimator

from maelre.estimator import MAELREClassifier
from maelre.sktime_adapter import MAELRESktimeClassifier


pytestmark = pytest.mark.usefixtures("torch_single_thread")


def test_passes_sktime_estimator_checks():
    # every check sktime has for classifiers, on both get_test_params configurations,
    # including the univariate, multivariate and unequal-length scenarios
    results = check_estimator(MAELRESktimeClassifier, raise_exceptions=True)
    assert results and all(outcome == "PASSED" for outcome in results.values())


def test_tags_match_what_the_wrapper_does():
    tags = MAELRESktimeClassifier.get_class_tags()
    assert tags["capability:multivariate"] and tags["capability:unequal_length"]
    assert tags["capability:predict_proba"] and not tags["capability:missing_values"]
    assert tags["X_inner_mtype"][0] == "df-list"  # where unequal-length panels go
    assert set(MAELRESktimeClassifier().get_params()) == set(MAELREClassifier().get_params()) - {"modality", "sample_rate"}


def test_defaults_match_the_sklearn_estimator():
    """The two signatures are written out (both libraries read parameters from ``__init__``), so check they agree."""
    sktime, sklearn = MAELRESktimeClassifier().get_params(), MAELREClassifier().get_params()
    assert sktime == {k: sklearn[k] for k in sktime}


def test_multivariate_unequal_length_panel():
    X, y = load_UCR_UEA_dataset("JapaneseVowels", split="train", return_X_y=True)
    X_test, y_test = load_UCR_UEA_dataset("JapaneseVowels", split="test", return_X_y=True)
    X = convert_to(X, to_type="pd-multiindex")  # 12 channels, lengths 7..26
    clf = MAELRESktimeClassifier(dim=16, depth=1, heads=2, max_epochs=8, lr=1e-2, random_state=0).fit(X, y)
    assert clf.estimator_.modality_ == "timeseries" and clf.estimator_.adapter_.channels == 12
    proba = clf.predict_proba(X_test)  # nested_univ, lengths up to 29: longer than any training series
    assert proba.shape == (len(X_test), 9)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
    assert (clf.predict(X_test) == y_test).mean() > 0.5  # 9 classes: chance is about 0.11


def test_uint8_panels_stay_time_series():
    rng = np.random.default_rng(0)
    X = rng.integers(0, 255, size=(12, 3, 20), dtype=np.uint8)  # would be images under modality="auto"
    y = np.array(["a", "b"] * 6)
    clf = MAELRESktimeClassifier(dim=8, depth=1, heads=2, max_epochs=1, random_state=0).fit(X, y)
    assert clf.estimator_.modality_ == "timeseries" and clf.estimator_.adapter_.channels == 3
    assert set(clf.predict(X)) <= {"a", "b"}


# ----------------------------------------------------------------- benchmarks/sktime_ucr.py machinery
@pytest.fixture(scope="module")
def bench(benchmark_script):
    """``benchmarks/sktime_ucr.py`` imported as a module (it is a script, not part of the package)."""
    return benchmark_script("sktime_ucr")


class _Scripted:
    """Stand-in estimator: predicts the first training label, optionally after sleeping or failing."""

    def __init__(self, sleep: float = 0.0, fail: bool = False) -> None:
        self.sleep, self.fail = sleep, fail

    def fit(self, X, y):
        import time

        if self.fail:
            raise RuntimeError("scripted failure")
        time.sleep(self.sleep)
        self.label = y[0]
        return self

    def predict(self, X):
        return np.full(len(X), self.label)


def test_benchmark_records_ok_timeout_and_error_rows(bench, monkeypatch, tmp_path):
    data = bench.load_dataset("GunPoint")
    monkeypatch.setitem(bench.FACTORIES, "MiniRocket", lambda d, s: _Scripted())
    monkeypatch.setitem(bench.FACTORIES, "1NN-DTW", lambda d, s: _Scripted(sleep=30.0))
    monkeypatch.setitem(bench.FACTORIES, "MAELRE", lambda d, s: _Scripted(fail=True))
    ok = bench.run_with_budget("MiniRocket", data, {}, budget_s=60, threads=1)
    assert ok["status"] == "ok" and ok["accuracy"] == pytest.approx((data.y_test == data.y_train[0]).mean())
    slow = bench.run_with_budget("1NN-DTW", data, {}, budget_s=1.0, threads=1)
    assert slow["status"] == "timeout" and "1 s" in slow["error"]
    failed = bench.run_with_budget("MAELRE", data, {}, budget_s=60, threads=1)
    assert failed["status"] == "error" and "scripted failure" in failed["error"]

    rows = [
        {"dataset": "GunPoint", "model": m, **data.describe(), "accuracy": None, "fit_seconds": None, "predict_seconds": None, **r}
        for m, r in (("MAELRE", {**ok, "accuracy": 0.8}), ("MiniRocket", ok), ("1NN-DTW", slow))
    ]
    doc = {"meta": bench.collect_meta(bench.parse_args(["--datasets", "GunPoint"]), bench.MAELRE_DEFAULTS, "python x"), "results": rows}
    text = bench.render_markdown(doc)
    assert "| GunPoint | 50/150 x 1 x 150 | 2 | 0.800 | 0.493 | timeout | +0.307 |" in text
    assert "1NN-DTW on GunPoint: **timeout**" in text
    # --report-only re-renders the page from the results file; --note replaces its notes
    out, page = tmp_path / "r.json", tmp_path / "r.md"
    bench.write_json_atomic(out, doc)
    assert bench.main(["--report-only", "--out", str(out), "--doc", str(page), "--note", "load 1.0 to 1.2"]) == 0
    assert "## Notes\n\n- load 1.0 to 1.2\n" in page.read_text()
    assert bench.read_json(out)["meta"]["notes"] == ["load 1.0 to 1.2"]


def test_benchmark_rejects_unknown_datasets(bench):
    with pytest.raises(SystemExit):
        bench.parse_args(["--datasets", "NotAUCRSet"])


def test_benchmark_reports_the_mean_over_seeds_with_their_range(bench):
    runs = [{"status": "ok", "accuracy": a, "fit_seconds": f, "predict_seconds": 0.5} for a, f in ((0.6, 10.0), (0.8, 20.0), (0.7, 30.0))]
    row = bench.over_seeds(runs, [0, 1, 2])
    assert (row["accuracy"], row["fit_seconds"], row["seed_accuracies"]) == (pytest.approx(0.7), pytest.approx(20.0), [0.6, 0.8, 0.7])
    assert bench._cell(row) == "0.700 (0.600-0.800)"
    failed = bench.over_seeds([runs[0], {"status": "timeout", "error": "slow"}], [0, 1])
    assert failed["status"] == "timeout" and failed["seeds"] == [0, 1]  # one seed that did not finish fails the row
    assert bench.parse_args([]).seeds == [0, 1, 2]
