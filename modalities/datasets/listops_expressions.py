"""The ListOps language: its vocabulary and operators, tokenizing, evaluating and reshuffling an expression, and data statistics.

Expressions use LRA's serialisation (every (function, argument) pair in parentheses);
:func:`listops_tokens` drops the parentheses as LRA's input pipeline does.
"""
from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

OPERATORS: tuple[str, ...] = ("[MIN", "[MAX", "[MED", "[SM")
"""Operator tokens in LRA's spelling (the opening bracket is part of the token)."""
CLOSE = "]"
DIGITS: tuple[str, ...] = tuple(str(d) for d in range(10))
LISTOPS_VOCAB: tuple[str, ...] = ("<pad>", *OPERATORS, CLOSE, *DIGITS)
"""Token vocabulary after LRA's preprocessing; index 0 is padding."""
LISTOPS_CLASSES: list[str] = list(DIGITS)

_TOKEN_ID = {token: i for i, token in enumerate(LISTOPS_VOCAB)}
_OPERATOR_SET = frozenset(OPERATORS)
_DIGIT_SET = frozenset(DIGITS)


def apply_operator(operator: str, args: Sequence[int]) -> int:
    """Value of ``operator`` (an entry of :data:`OPERATORS`) applied to digits ``args``.

    ``MED`` of an even count is the mean of the two middle values truncated to an int,
    as LRA computes it (``int(np.median(args))``).
    """
    if not args:
        raise ValueError(f"operator {operator!r} has no arguments; every operator needs at least one")
    if operator == "[MIN":
        return min(args)
    if operator == "[MAX":
        return max(args)
    if operator == "[SM":
        return sum(args) % 10
    if operator == "[MED":
        ordered = sorted(args)
        mid = len(ordered) // 2
        return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) // 2
    raise ValueError(f"unknown ListOps operator {operator!r}; expected one of {', '.join(OPERATORS)}")


def listops_tokens(expr: str) -> list[str]:
    """Whitespace tokens of ``expr`` with the parentheses removed, as LRA's input pipeline feeds them."""
    return [token for token in expr.split() if token not in ("(", ")")]


def listops_token_ids(expr: str) -> list[int]:
    """Indices into :data:`LISTOPS_VOCAB` of :func:`listops_tokens` (padding is 0, never emitted)."""
    try:
        return [_TOKEN_ID[token] for token in listops_tokens(expr)]
    except KeyError as err:
        raise ValueError(f"token {err.args[0]!r} is not in the ListOps vocabulary {LISTOPS_VOCAB[1:]}") from None


def evaluate_listops(expr: str) -> int:
    """Value of a serialised ListOps expression, parsed with an explicit stack.

    Independent of the generator: it reads only the text. Accepts LRA's parenthesised
    form and the bare prefix form (``[MAX 2 [MIN 4 7 ] ]``); parentheses must balance.

    Raises:
        ValueError: empty or malformed expression (unknown token, unbalanced brackets or
            parentheses, an operator without arguments, or more than one top-level value).
    """
    frames: list[tuple[str, list[int]]] = []  # open operators and the argument values read so far
    results: list[int] = []  # finished top-level values
    paren_depth = 0
    for position, token in enumerate(expr.split()):
        if token == "(":
            paren_depth += 1
            continue
        if token == ")":
            paren_depth -= 1
            if paren_depth < 0:
                raise ValueError(f"unbalanced ')' at token {position} of ListOps expression {expr[:80]!r}")
            continue
        if token in OPERATORS:
            frames.append((token, []))
            continue
        if token == CLOSE:
            if not frames:
                raise ValueError(f"']' without an open operator at token {position} of {expr[:80]!r}")
            operator, args = frames.pop()
            value = apply_operator(operator, args)
        elif token in DIGITS:
            value = int(token)
        else:
            raise ValueError(f"unknown token {token!r} at position {position}; "
                             f"ListOps uses {', '.join(LISTOPS_VOCAB[1:])}, '(' and ')'")
        (frames[-1][1] if frames else results).append(value)
    if frames:
        raise ValueError(f"{len(frames)} operator(s) never closed with ']' in {expr[:80]!r}")
    if paren_depth:
        raise ValueError(f"{paren_depth} '(' never closed in {expr[:80]!r}")
    if len(results) != 1:
        raise ValueError(f"a ListOps expression has exactly one top-level value, found {len(results)} in {expr[:80]!r}")
    return results[0]


def written_node(operator: str, args: Sequence[str]) -> str:
    """LRA's serialisation of ``operator`` applied to already written ``args``: ``[OP a b ]`` is ``( ( ( [OP a ) b ) ] )``."""
    return " ".join(["( " * len(args) + "(", operator, *(f"{arg} )" for arg in args), "] )"])


def shuffle_operands(expr: str, rng: np.random.Generator) -> str:
    """``expr`` with the arguments of every operator put in a random order, in LRA's serialisation.

    All four operators (``MIN``, ``MAX``, ``MED``, ``SM``) ignore argument order, so the
    value (the label) is unchanged: a label-preserving augmentation. Accepts the
    parenthesised and the bare form; always writes the parenthesised form the generator
    writes, so the text adapter sees the same token stream either way.

    It makes one pass and one ``rng.random`` call: every argument sorts by the key drawn for
    its first token (a ``rng.permutation`` per operator and a separate validating parse made it
    the ListOps training loop's bottleneck, ~1.2 ms an example). The training loader uses
    :func:`~modalities.datasets.listops_shuffle.shuffle_operand_ids`, the same order from the
    same draws as token ids, without writing the text; this function is its reference.

    Raises:
        ValueError: a malformed expression (as :func:`evaluate_listops`).
    """
    tokens = expr.split()
    return shuffle_by_keys(expr, tokens, rng.random(len(tokens)).tolist())


def shuffle_by_keys(expr: str, tokens: Sequence[str], keys: Sequence[float]) -> str:
    """:func:`shuffle_operands` of ``expr`` (whose ``split()`` is ``tokens``) with ``keys[i]`` drawn for ``tokens[i]``.

    Every operator's arguments are sorted by ``(key of their first token, written text)``.
    """
    frames: list[tuple[float, str, list[tuple[float, str]]]] = []  # open operators: key, token, written arguments
    done: list[tuple[float, str]] = []  # finished top-level nodes
    parens = 0
    for key, token in zip(keys, tokens):
        if token == "(":
            parens += 1
        elif token == ")":
            parens -= 1
            if parens < 0:
                break
        elif token in _OPERATOR_SET:
            frames.append((key, token, []))
        elif token in _DIGIT_SET:
            (frames[-1][2] if frames else done).append((key, token))
        elif token == CLOSE and frames and frames[-1][2]:
            node_key, operator, args = frames.pop()
            args.sort()
            text = written_node(operator, [arg for _, arg in args])
            (frames[-1][2] if frames else done).append((node_key, text))
        else:
            break  # malformed: evaluate_listops below says how
    else:
        if not frames and not parens and len(done) == 1:
            return done[0][1]
    evaluate_listops(expr)  # raises its clear error for every malformed input
    raise ValueError(f"malformed ListOps expression {expr[:80]!r}")


def operator_nesting(expr: str) -> int:
    """Deepest nesting of operators in ``expr`` (``[MAX 1 2 ]`` is 1; LRA's tree depth minus one)."""
    depth = deepest = 0
    for token in expr.split():
        if token in OPERATORS:
            depth += 1
            deepest = max(deepest, depth)
        elif token == CLOSE:
            depth -= 1
    return deepest


def max_arguments(expr: str) -> int:
    """Largest number of arguments any operator in ``expr`` takes."""
    counts: list[int] = []
    widest = 0
    for token in listops_tokens(expr):
        if token in OPERATORS:
            counts.append(0)
            continue
        if token == CLOSE:
            widest = max(widest, counts.pop())
        if counts:  # a digit, or a closed sub-expression, is one argument of the enclosing operator
            counts[-1] += 1
    return widest


def describe_listops(samples: Iterable[tuple[str, int]]) -> dict:
    """Label and length statistics of ListOps examples (lengths in LRA tokens).

    Returns:
        ``{"n", "label_counts" (10 ints), "label_fractions", "length": {"min", "max",
        "mean", "median", "p10", "p90"}, "max_operator_nesting", "max_arguments"}``.
    """
    samples = list(samples)
    if not samples:
        raise ValueError("describe_listops needs at least one example")
    labels = np.array([label for _, label in samples])
    if labels.min() < 0 or labels.max() > 9:
        raise ValueError(f"ListOps labels are 0..9, got values from {labels.min()} to {labels.max()}")
    lengths = np.array([len(listops_tokens(text)) for text, _ in samples])
    counts = np.bincount(labels, minlength=10)
    return {
        "n": len(samples),
        "label_counts": counts.tolist(),
        "label_fractions": (counts / len(samples)).round(4).tolist(),
        "length": {
            "min": int(lengths.min()),
            "max": int(lengths.max()),
            "mean": float(lengths.mean()),
            "median": float(statistics.median(lengths.tolist())),
            "p10": float(np.percentile(lengths, 10)),
            "p90": float(np.percentile(lengths, 90)),
        },
        "max_operator_nesting": max(operator_nesting(text) for text, _ in samples),
        "max_arguments": max(max_arguments(text) for text, _ in samples),
    }


def outermost_operator_predictions(train: Iterable[tuple[str, int]], test: Iterable[tuple[str, int]]) -> list[int]:
    """The outermost-operator shortcut's answer for each ``test`` expression (``outermost_operator_baseline``'s rule)."""
    by_operator: dict[str, Counter] = {}
    for expr, label in train:
        by_operator.setdefault(listops_tokens(expr)[0], Counter())[label] += 1
    if not by_operator:
        raise ValueError("outermost_operator_baseline needs training examples")
    fallback = sum(by_operator.values(), Counter()).most_common(1)[0][0]
    rule = {operator: counts.most_common(1)[0][0] for operator, counts in by_operator.items()}
    return [rule.get(listops_tokens(expr)[0], fallback) for expr, _ in test]


def outermost_operator_baseline(train: Iterable[tuple[str, int]], test: Iterable[tuple[str, int]]) -> float:
    """Test accuracy of a shortcut that reads only the outermost operator.

    It predicts, for each outermost operator, its most frequent label in ``train`` (MAX
    leans to 9, MIN to 0). A model at this accuracy has learned no nesting; the level of
    LRA's Transformer (36.37%) is this shortcut's. ``maelre compare`` pairs a run with it item
    by item (``benchmarks/listops_shortcut.py`` writes its predictions).
    """
    test = list(test)
    hits = [p == label for p, (_, label) in zip(outermost_operator_predictions(train, test), test)]
    if not hits:
        raise ValueError("outermost_operator_baseline needs test examples")
    return float(np.mean(hits))

