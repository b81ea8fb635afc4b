"""ListOps: LRA's generator procedure, an independent evaluator, the TSV format and the loader."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modalities.datasets import load_dataset
from modalities.datasets.listops import (
    LISTOPS_VOCAB,
    OPERATORS,
    describe_listops,
    evaluate_listops,
    generate_listops,
    listops_token_ids,
    listops_tokens,
    max_arguments,
    operator_nesting,
    outermost_operator_baseline,
    read_listops_tsv,
    write_listops_tsv,
)

SHORT = dict(min_len=20, max_len=120)  # fast settings for checks that do not need LRA lengths


@pytest.fixture(scope="module")
def short_samples() -> list[tuple[str, int]]:
    return generate_listops(300, seed=1, **SHORT)


# ----------------------------------------------------------------------------- plain references


def reference_value(expr: str) -> int:
    """Evaluate by rewriting the prefix tokens as Python calls, with LRA's own numpy operators."""
    ops = {
        "MIN": lambda *a: min(a),
        "MAX": lambda *a: max(a),
        "MED": lambda *a: int(np.median(a)),
        "SM": lambda *a: int(np.sum(a) % 10),
    }
    code = "".join(f"{t[1:]}(" if t in OPERATORS else ")," if t == "]" else f"{t}," for t in listops_tokens(expr))
    return eval(code.rstrip(","), {"__builtins__": {}}, ops)  # noqa: S307 - test input is our own generator's


def parse_prefix(tokens: list[str]):
    """Bare prefix tokens -> nested ``(op, [args])`` / int, for re-serialising."""
    pos = 0

    def node():
        nonlocal pos
        token = tokens[pos]
        pos += 1
        if token not in OPERATORS:
            return int(token)
        args = []
        while tokens[pos] != "]":
            args.append(node())
        pos += 1
        return token, args

    return node()


def lra_pairs(tree):
    """LRA's tree form, restated: ``[OP a b ]`` is the left-nested pairs ``(((OP, a), b), "]")``."""
    if isinstance(tree, int):
        return tree
    op, args = tree
    t = (op, lra_pairs(args[0]))
    for arg in args[1:]:
        t = (t, lra_pairs(arg))
    return (t, "]")


def lra_to_string(t) -> str:
    """LRA's ``to_string``: every pair in parentheses."""
    if isinstance(t, (str, int)):
        return str(t)
    return f"( {lra_to_string(t[0])} {lra_to_string(t[1])} )"


# ----------------------------------------------------------------------------- evaluator


@pytest.mark.parametrize(
    "expr, value",
    [
        ("( ( ( [MAX 2 ) 3 ) ] )", 3),
        ("[MIN 4 7 1 ]", 1),
        ("[MED 2 3 ]", 2),  # mean 2.5 truncated, as int(np.median(...))
        ("[MED 1 2 4 8 ]", 3),
        ("[MED 5 1 9 ]", 5),
        ("[SM 9 9 3 ]", 1),
        ("[MAX 1 [MIN 8 6 ] [SM 5 5 ] ]", 6),
        ("7", 7),
    ],
)
def test_evaluator_on_hand_examples(expr: str, value: int) -> None:
    assert evaluate_listops(expr) == value
    assert reference_value(expr) == value


@pytest.mark.parametrize(
    "expr, message",
    [
        ("", "exactly one top-level value"),
        ("[MAX 1 2", "never closed"),
        ("[MAX 1 2 ] ]", "without an open operator"),
        ("[MAX ]", "no arguments"),
        ("[FOO 1 2 ]", "unknown token"),
        ("( [MAX 1 2 ]", r"'\(' never closed"),
        ("[MAX 1 2 ] )", r"unbalanced '\)'"),
        ("1 2", "exactly one top-level value"),
    ],
)
def test_evaluator_rejects_malformed(expr: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        evaluate_listops(expr)


# ----------------------------------------------------------------------------- generator


def test_generated_labels_match_independent_evaluators(short_samples) -> None:
    for text, label in short_samples:
        assert evaluate_listops(text) == label
        assert reference_value(text) == label


def test_generated_text_is_lra_serialisation(short_samples) -> None:
    for text, _ in short_samples[:50]:
        assert text == lra_to_string(lra_pairs(parse_prefix(listops_tokens(text))))


def test_lengths_operators_depth_and_arity_within_limits(short_samples) -> None:
    lengths = [len(listops_tokens(t)) for t, _ in short_samples]
    assert min(lengths) > SHORT["min_len"] and max(lengths) < SHORT["max_len"]
    assert len({t for t, _ in short_samples}) == len(short_samples)  # unique, as LRA's set
    for text, _ in short_samples:
        assert set(listops_tokens(text)) <= set(LISTOPS_VOCAB[1:])
        assert operator_nesting(text) <= 9  # max_depth 10: root at depth 1, leaves at 10
        assert 2 <= max_arguments(text) <= 10

    tight = generate_listops(60, seed=2, min_len=5, max_len=60, max_depth=3, max_args=3)
    assert max(operator_nesting(t) for t, _ in tight) == 2
    assert max(max_arguments(t) for t, _ in tight) == 3
    assert all(evaluate_listops(t) == y for t, y in tight)


def test_full_lra_lengths() -> None:
    samples = generate_listops(4, seed=0)  # LRA settings: 500 < length < 2000, depth 10, 10 args
    for text, label in samples:
        assert 500 < len(listops_token_ids(text)) < 2000
        assert evaluate_listops(text) == label
        assert operator_nesting(text) <= 9


def test_generator_is_deterministic_per_seed() -> None:
    assert generate_listops(20, seed=5, **SHORT) == generate_listops(20, seed=5, **SHORT)
    assert generate_listops(20, seed=5, **SHORT) != generate_listops(20, seed=6, **SHORT)


def test_generator_argument_errors() -> None:
    with pytest.raises(ValueError, match="found only 0 of 2"):
        generate_listops(2, seed=0, min_len=500, max_len=2000, max_args=2, max_draws=500)
    with pytest.raises(ValueError, match="min_len"):
        generate_listops(2, min_len=100, max_len=50)
    with pytest.raises(ValueError, match="max_args"):
        generate_listops(2, max_args=1)


def test_token_ids_and_vocabulary() -> None:
    assert len(LISTOPS_VOCAB) == 16 and LISTOPS_VOCAB[0] == "<pad>"
    ids = listops_token_ids("( ( ( [MAX 2 ) 9 ) ] )")
    assert [LISTOPS_VOCAB[i] for i in ids] == ["[MAX", "2", "9", "]"]
    with pytest.raises(ValueError, match="not in the ListOps vocabulary"):
        listops_token_ids("[MAX 2 X ]")


def test_describe_reports_label_and_length_distribution(short_samples) -> None:
    stats = describe_listops(short_samples)
    lengths = [len(listops_tokens(t)) for t, _ in short_samples]
    labels = [y for _, y in short_samples]
    assert stats["n"] == 300
    assert stats["label_counts"] == [labels.count(k) for k in range(10)]
    assert sum(stats["label_counts"]) == 300 and len(stats["label_fractions"]) == 10
    assert stats["length"]["min"] == min(lengths) and stats["length"]["max"] == max(lengths)
    assert stats["length"]["mean"] == pytest.approx(np.mean(lengths))
    assert stats["max_operator_nesting"] <= 9 and stats["max_arguments"] <= 10
    with pytest.raises(ValueError, match="at least one"):
        describe_listops([])


# ----------------------------------------------------------------------------- TSV


def test_tsv_round_trip_in_lra_layout(tmp_path, short_samples) -> None:
    path = write_listops_tsv(tmp_path / "basic_train.tsv", short_samples[:25])
    raw = path.read_bytes()
    assert raw.startswith(b"Source\tTarget\r\n")  # LRA's csv.writer output
    assert read_listops_tsv(path) == short_samples[:25]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left


def test_tsv_reader_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="no ListOps TSV"):
        read_listops_tsv(tmp_path / "missing.tsv")
    cases = {
        "empty.tsv": ("", "is empty"),
        "header.tsv": ("Input\tLabel\n[MAX 1 2 ]\t2\n", "header"),
        "label.tsv": ("Source\tTarget\n[MAX 1 2 ]\ttwo\n", "not an integer"),
        "range.tsv": ("Source\tTarget\n[MAX 1 2 ]\t12\n", "outside 0..9"),
        "fields.tsv": ("Source\tTarget\n[MAX 1 2 ]\t2\textra\n", "expected 2 tab-separated"),
        "nodata.tsv": ("Source\tTarget\n", "no examples"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_text(content)
        with pytest.raises(ValueError, match=message):
            read_listops_tsv(tmp_path / name)
    with pytest.raises(ValueError, match="outside 0..9"):
        write_listops_tsv(tmp_path / "bad.tsv", [("[MAX 1 2 ]", 11)])


# ----------------------------------------------------------------------------- loader


def test_loader_generates_unique_splits() -> None:
    data = load_dataset("listops", n_train=40, n_val=10, n_test=10, seed=3, **SHORT)
    assert (len(data.train), len(data.val), len(data.test)) == (40, 10, 10)
    assert data.classes == [str(d) for d in range(10)] and data.modality == "text"
    texts = [t for split in (data.train, data.val, data.test) for t, _ in split]
    assert len(set(texts)) == 60
    assert all(evaluate_listops(t) == y for split in (data.train, data.test) for t, y in split)
    assert data.meta["source"] == "generated" and data.meta["seed"] == 3


def test_loader_reads_lra_folder(tmp_path, short_samples) -> None:
    for name, part in (("train", short_samples[:10]), ("val", short_samples[10:15]), ("test", short_samples[15:20])):
        write_listops_tsv(tmp_path / f"basic_{name}.tsv", part)
    data = load_dataset("listops", root=tmp_path)
    assert list(data.train) == short_samples[:10] and list(data.test) == short_samples[15:20]
    assert data.meta["source"] == "lra_release"
    (tmp_path / "basic_val.tsv").unlink()
    with pytest.raises(FileNotFoundError, match="basic_val.tsv"):
        load_dataset("listops", root=tmp_path)
    with pytest.raises(FileNotFoundError, match="ListOps"):
        load_dataset("listops", root=tmp_path / "nowhere")


def test_outermost_operator_baseline_reads_only_the_outer_operator():
    train = [("[MAX 1 9 ]", 9), ("( [MAX 2 [MIN 4 9 ] ) ]", 9), ("[MAX 3 4 ]", 4), ("[MIN 0 5 ]", 0)]
    # MAX -> 9, MIN -> 0; SM is unseen and falls back to the most frequent label overall (9)
    test = [("[MAX 3 4 ]", 4), ("[MIN [MAX 7 8 ] 9 ]", 0), ("[SM 9 ]", 9), ("[MIN 5 6 ]", 5)]
    assert outermost_operator_baseline(train, test) == 0.5
    with pytest.raises(ValueError, match="training examples"):
        outermost_operator_baseline([], test)
    with pytest.raises(ValueError, match="test examples"):
        outermost_operator_baseline(train, [])



def test_the_shortcut_writes_predictions_maelre_compare_pairs_with_a_run(tmp_path):
    import importlib.util

    from maelre.compare import load_predictions
    from modalities.datasets.listops import outermost_operator_predictions, write_listops_tsv

    train = [("[MAX 1 9 ]", 9), ("[MAX 3 4 ]", 9), ("[MIN 0 5 ]", 0)]
    test = [("[MAX 3 4 ]", 4), ("[MIN [MAX 7 8 ] 9 ]", 0), ("[SM 9 ]", 9)]
    assert outermost_operator_predictions(train, test) == [9, 0, 9]  # SM unseen: the most frequent label overall
    write_listops_tsv(tmp_path / "basic_train.tsv", train)
    write_listops_tsv(tmp_path / "basic_test.tsv", test)
    spec = importlib.util.spec_from_file_location("listops_shortcut", Path(__file__).resolve().parents[1] / "benchmarks" / "listops_shortcut.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.main([str(tmp_path), str(tmp_path / "shortcut.json")]) == 0
    written = load_predictions(tmp_path / "shortcut.json")
    assert written["labels"] == [4, 0, 9] and written["predictions"] == [9, 0, 9]
    with pytest.raises(SystemExit):
        tool.main([str(tmp_path / "nowhere"), str(tmp_path / "x.json")])
