"""``maelre compare``: two runs' predictions on one test set, item by item (McNemar), and the files ``maelre fit`` writes."""
from __future__ import annotations

import json

import pytest
from scipy.stats import binomtest

from maelre.cli import main
from maelre.compare import PREDICTIONS, compare, describe, load_predictions, write_predictions
from maelre.stats import mcnemar_exact, paired_rounds, wilson_interval


def _write(path, labels, predictions):
    write_predictions(path, labels, predictions, ["x", "y", "z"])
    return load_predictions(path)


def test_mcnemar_is_the_binomial_test_of_the_disagreements():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(10, 0) == pytest.approx(2 * 0.5**10)  # all ten disagreements one way
    assert mcnemar_exact(7, 3) == pytest.approx(binomtest(3, 10).pvalue)  # symmetric in the two counts
    assert mcnemar_exact(3, 7) == mcnemar_exact(7, 3)
    with pytest.raises(ValueError, match=">= 0"):
        mcnemar_exact(-1, 2)
    low, high = wilson_interval(50, 100)
    assert (round(low, 4), round(high, 4)) == (0.4038, 0.5962)
    with pytest.raises(ValueError, match="correct <= n"):
        wilson_interval(5, 4)


def test_compare_counts_agreement_and_separates_only_what_the_test_set_can(tmp_path):
    labels = [0, 1, 2, 0, 1, 2] * 20  # 120 items
    a = _write(tmp_path / "a.json", labels, labels)  # all right
    wrong = [(y + 1) % 3 for y in labels]
    b = _write(tmp_path / "b.json", labels, labels[:60] + wrong[60:])  # half right: A alone right on 60 items
    result = compare(a, b)
    assert (result["n"], result["both_right"], result["only_a_right"], result["only_b_right"], result["both_wrong"]) == (120, 60, 60, 0, 0)
    assert result["a"]["accuracy"] == 100 and result["b"]["accuracy"] == 50 and result["difference"] == 50
    assert result["p_value"] < 1e-15
    close = _write(tmp_path / "c.json", labels, labels[:118] + wrong[118:])  # 2 items apart
    assert compare(a, close)["p_value"] == pytest.approx(0.5)  # 2 of 2 disagreements one way: not a separation
    swapped = compare(b, a)
    assert swapped["only_a_right"] == 0 and swapped["only_b_right"] == 60 and swapped["p_value"] == result["p_value"]


def test_another_test_set_or_a_bad_file_is_refused_with_the_reason(tmp_path):
    a = _write(tmp_path / "a.json", [0, 1, 2], [0, 1, 1])
    with pytest.raises(ValueError, match="not the same test set .3 and 2 samples"):
        compare(a, _write(tmp_path / "b.json", [0, 1], [0, 1]))
    with pytest.raises(ValueError, match="labels differ at 1 positions"):
        compare(a, _write(tmp_path / "c.json", [0, 1, 0], [0, 1, 0]))
    write_predictions(tmp_path / "val.json", [0, 1, 2], [0, 1, 2], split="val")
    with pytest.raises(ValueError, match="the test split and the other the val split"):
        compare(a, load_predictions(tmp_path / "val.json"))
    with pytest.raises(ValueError, match="alpha must be in"):
        describe(compare(a, a), alpha=1.5)
    with pytest.raises(FileNotFoundError, match="maelre test RUN --predictions FILE"):
        load_predictions(tmp_path / "no_run")
    (tmp_path / "bad.json").write_text(json.dumps({"labels": [1, 2]}))
    with pytest.raises(ValueError, match="is not a predictions file"):
        load_predictions(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="2 labels but 1 predictions"):
        write_predictions(tmp_path / "d.json", [0, 1], [0])


@pytest.mark.parametrize("content, message", [
    ({"labels": 5, "predictions": 5}, "is not a predictions file: it needs equally long 'labels' and 'predictions' lists of class indices"),  # was a TypeError
    ({"labels": ["x", "y"], "predictions": [0, 1]}, "lists of class indices"),
    ({"classes": ["x", "y"], "labels": [0, 1], "predictions": [0, 7]}, "is damaged: a label or prediction is not a class index below 2"),
])
def test_a_malformed_predictions_file_names_what_is_wrong(tmp_path, content, message):
    (tmp_path / "p.json").write_text(json.dumps(content))
    with pytest.raises(ValueError, match=message):
        load_predictions(tmp_path / "p.json")


def test_runs_of_different_class_lists_are_not_compared(tmp_path):
    """Two datasets with as many classes and the same label order were compared item by item, silently."""
    a = _write(tmp_path / "a.json", [0, 1, 2], [0, 1, 1])
    write_predictions(tmp_path / "b.json", [0, 1, 2], [0, 1, 2], ["cat", "dog", "eel"])
    with pytest.raises(ValueError, match=r"name their classes differently \(\['x', 'y', 'z'\] against \['cat', 'dog', 'eel'\]\)"):
        compare(a, load_predictions(tmp_path / "b.json"))


def test_a_run_directory_is_found_and_the_cli_prints_the_verdict(tmp_path, capsys):
    labels = [0, 1] * 50
    for name, predictions in (("a", labels), ("b", [0] * 100)):
        (tmp_path / name / "fit").mkdir(parents=True)
        write_predictions(tmp_path / name / "fit" / PREDICTIONS, labels, predictions)  # an lra_learn.sh run folder: RUN/fit/
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--json"]) == 0
    out = capsys.readouterr().out
    assert "the test set separates them" in out and "only A 50, only B 0" in out
    assert json.loads(out.strip().splitlines()[-1])["only_a_right"] == 50
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "nothing")]) == 2  # a clear error, not a traceback
    assert "no test_predictions.json" in capsys.readouterr().err


def test_paired_rounds_counts_the_faster_rounds_and_tests_them():
    faster, rounds, p = paired_rounds([1.0] * 8, [2.0] * 8)
    assert (faster, rounds) == (8, 8) and p < 0.01  # every round one way: as strong as 8 rounds can be
    faster, rounds, p = paired_rounds([1.0, 2.0, 1.0, 2.0], [2.0, 1.0, 2.0, 1.0])
    assert (faster, rounds) == (2, 4) and p == 1.0  # a tie in every sense
    assert paired_rounds([1.0, 1.0], [1.0, 1.0])[2] == 1.0
    with pytest.raises(ValueError, match="equally long"):
        paired_rounds([1.0, 2.0], [1.0])
