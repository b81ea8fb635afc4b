"""Two runs on the same test set, item by item: ``maelre compare RUN_A RUN_B``.

``maelre fit`` writes ``test_predictions.json`` beside ``results.json`` (and ``maelre test RUN
--predictions FILE`` for a saved model): the labels and each model's predicted class, in the
test set's order. Two such files of the same test set give the accuracies with their 95%
intervals, the 2x2 table of agreement and McNemar's exact test (``maelre.stats``): whether the
test set tells the two apart, which two separate intervals answer only loosely.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from maelre.fileio import read_json, write_json_atomic
from maelre.stats import mcnemar_exact, wilson_interval

PREDICTIONS = "test_predictions.json"
"""The file name ``maelre fit`` writes into a run directory."""


def write_predictions(path: str | Path, labels: Any, predictions: Any, classes: list[str] | None = None, split: str = "test") -> Path:
    """``{split, classes, labels, predictions}`` as JSON (atomic); ``labels`` and ``predictions``: class indices per sample."""
    labels, predictions = [int(v) for v in labels], [int(v) for v in predictions]
    if len(labels) != len(predictions):
        raise ValueError(f"{len(labels)} labels but {len(predictions)} predictions")
    return write_json_atomic(path, {"split": split, "classes": classes, "labels": labels, "predictions": predictions})


def load_predictions(target: str | Path) -> dict[str, Any]:
    """A predictions file, or the one in a run directory (``DIR/test_predictions.json`` or ``DIR/fit/...``)."""
    target = Path(target)
    candidates = [target] if target.is_file() else [target / PREDICTIONS, target / "fit" / PREDICTIONS]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise FileNotFoundError(f"no {PREDICTIONS} at {target} (looked for {', '.join(map(str, candidates))}); runs since 2026-12-03 write "
                                f"it when they test, and 'maelre test RUN --predictions FILE' writes it for a saved model")
    data = read_json(found)
    if not isinstance(data, dict) or not all(_class_indices(data.get(key)) for key in ("labels", "predictions")) \
            or len(data["labels"]) != len(data["predictions"]):
        raise ValueError(f"{found} is not a predictions file: it needs equally long 'labels' and 'predictions' lists of class indices")
    classes = data.get("classes")
    if isinstance(classes, list) and any(not 0 <= v < len(classes) for v in (*data["labels"], *data["predictions"])):
        raise ValueError(f"{found} is damaged: a label or prediction is not a class index below {len(classes)} ({len(classes)} classes listed)")
    return {**data, "path": str(found)}


def _class_indices(values: Any) -> bool:
    """Whether ``values`` is a list of class indices (ints, not bools)."""
    return isinstance(values, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in values)


def compare(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Accuracies with 95% intervals, the agreement table and McNemar's exact p-value of two predictions files."""
    if a.get("split") != b.get("split"):
        raise ValueError(f"one file scores the {a.get('split')} split and the other the {b.get('split')} split: compare runs on the same split")
    if a.get("classes") and b.get("classes") and a["classes"] != b["classes"]:
        raise ValueError(f"the two runs name their classes differently ({a['classes'][:5]} against {b['classes'][:5]}): "
                         "compare runs of the same dataset")
    if a["labels"] != b["labels"]:
        n_a, n_b = len(a["labels"]), len(b["labels"])
        why = f"{n_a} and {n_b} samples" if n_a != n_b else f"the labels differ at {sum(x != y for x, y in zip(a['labels'], b['labels']))} positions"
        raise ValueError(f"not the same test set ({why}): McNemar's test pairs the two runs' answers item by item")
    n = len(a["labels"])
    if n == 0:
        raise ValueError("the predictions files are empty")
    right_a = [p == y for p, y in zip(a["predictions"], a["labels"])]
    right_b = [p == y for p, y in zip(b["predictions"], b["labels"])]
    both = sum(x and y for x, y in zip(right_a, right_b))
    only_a = sum(x and not y for x, y in zip(right_a, right_b))
    only_b = sum(y and not x for x, y in zip(right_a, right_b))
    out: dict[str, Any] = {"n": n, "both_right": both, "only_a_right": only_a, "only_b_right": only_b, "both_wrong": n - both - only_a - only_b}
    for key, right in (("a", right_a), ("b", right_b)):
        k = sum(right)
        low, high = wilson_interval(k, n)
        out[key] = {"path": (a if key == "a" else b)["path"], "accuracy": 100 * k / n, "ci95": [100 * low, 100 * high]}
    out["difference"] = out["a"]["accuracy"] - out["b"]["accuracy"]
    out["p_value"] = mcnemar_exact(only_a, only_b)
    return out


def describe(result: dict[str, Any], alpha: float = 0.05) -> list[str]:
    """Lines for the console: the two accuracies, the table, the test's verdict at level ``alpha``."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"--alpha must be in (0, 1), got {alpha}")
    a, b = result["a"], result["b"]
    separated = result["p_value"] < alpha
    return [
        f"A {a['path']}: {a['accuracy']:.2f}% (95% CI {a['ci95'][0]:.1f}-{a['ci95'][1]:.1f})",
        f"B {b['path']}: {b['accuracy']:.2f}% (95% CI {b['ci95'][0]:.1f}-{b['ci95'][1]:.1f})",
        f"{result['n']} items: both right {result['both_right']}, only A {result['only_a_right']}, only B {result['only_b_right']}, "
        f"both wrong {result['both_wrong']}",
        f"A - B = {result['difference']:+.2f} points; McNemar exact p = {result['p_value']:.3g}: "
        + (f"the test set separates them (p < {alpha:g})" if separated else f"the test set does not separate them (p >= {alpha:g})"),
    ]
