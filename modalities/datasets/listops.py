"""ListOps (Nangia & Bowman 2018) as generated for the Long Range Arena (Tay et al. 2020).

An example is a nested prefix expression over the digits 0-9 with the operators
``MAX``, ``MIN``, ``MED`` (median, truncated to an int) and ``SM`` (sum modulo 10);
the label is its value (10 classes). The procedure follows LRA's
``lra_benchmarks/data/listops.py``:

* a node at depth ``< max_depth`` is an operator with probability 0.25, else a digit;
  nodes at ``max_depth`` are digits (the root is at depth 1, so operators nest at most
  ``max_depth - 1`` deep); an operator takes 2..``max_args`` arguments;
* trees are drawn until their length -- operators, digits and closing ``]``, i.e. the
  tokens a model sees -- lies strictly between ``min_len`` and ``max_len``; examples
  are unique;
* the text is LRA's serialisation, which wraps every (function, argument) pair in
  parentheses: ``[MAX 2 3 ]`` is written ``( ( ( [MAX 2 ) 3 ) ] )``. LRA's input
  pipeline deletes the parentheses before tokenizing on whitespace (they add no
  information to a prefix expression with closing brackets); :func:`listops_tokens`
  does the same.

Tokens vs bytes: LRA's lengths (500-2,000) count whitespace tokens over the 15-symbol
vocabulary :data:`LISTOPS_VOCAB` (16 with padding). Fed to the text adapter with
``tokenizer="byte"``, the same example is about 6x longer (spaces, parentheses and the
multi-character operators all become bytes); use :func:`listops_token_ids` for
LRA-comparable sequence lengths.

Files use LRA's TSV layout (``Source<TAB>Target`` header, one example per row), so the
official ``basic_{train,val,test}.tsv`` files and the ones written here read the same.
"""
from __future__ import annotations

import csv
import io
import os
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from modalities.datasets.io import write_text

OPERATORS: tuple[str, ...] = ("[MIN", "[MAX", "[MED", "[SM")
"""Operator tokens in LRA's spelling (the opening bracket is part of the token)."""
CLOSE = "]"
DIGITS: tuple[str, ...] = tuple(str(d) for d in range(10))
LISTOPS_VOCAB: tuple[str, ...] = ("<pad>", *OPERATORS, CLOSE, *DIGITS)
"""Token vocabulary after LRA's preprocessing; index 0 is padding."""
LISTOPS_CLASSES: list[str] = list(DIGITS)
TSV_HEADER: tuple[str, str] = ("Source", "Target")

OPERATOR_PROBABILITY = 0.25  # LRA's VALUE_P: a non-leaf node is an operator with this probability
_TOKEN_ID = {token: i for i, token in enumerate(LISTOPS_VOCAB)}


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


class _ExpressionSampler:
    """Draws random LRA ListOps expressions, writing their tokens and value in one pass.

    A draw is abandoned as soon as its length reaches ``max_len``: that rejects exactly
    the trees LRA's generate-then-filter loop rejects, without building them in full.
    Random numbers come from ``rng`` in blocks (a scalar ``Generator`` call per node
    would dominate the cost).
    """

    _BLOCK = 8192

    def __init__(self, rng: np.random.Generator, max_depth: int, max_args: int, max_len: int) -> None:
        self.max_depth, self.max_len = max_depth, max_len
        self.length = 0
        self.tokens: list[str] = []
        self._refill = {  # stream name -> a block of fresh draws
            "is_operator": lambda: (rng.random(self._BLOCK) <= OPERATOR_PROBABILITY).tolist(),
            "n_args": lambda: rng.integers(2, max_args + 1, size=self._BLOCK).tolist(),
            "operator": lambda: rng.integers(len(OPERATORS), size=self._BLOCK).tolist(),
            "digit": lambda: rng.integers(10, size=self._BLOCK).tolist(),
        }
        self._streams: dict[str, list] = {name: [] for name in self._refill}

    def _next(self, stream: str):
        block = self._streams[stream]
        if not block:
            block = self._streams[stream] = self._refill[stream]()
        return block.pop()

    def draw(self) -> int | None:
        """Draw one expression into ``self.tokens``; its value, or None if it reached ``max_len``."""
        self.length = 0
        self.tokens = []
        try:
            return self._node(depth=1)
        except _TooLong:
            return None

    def _node(self, depth: int) -> int:
        self.length += 1
        if self.length >= self.max_len:
            raise _TooLong
        if depth < self.max_depth and self._next("is_operator"):
            self.length += 1  # the closing bracket
            n_args = self._next("n_args")
            operator = OPERATORS[self._next("operator")]
            # LRA's serialisation: ``[OP a b ]`` is written ``( ( ( [OP a ) b ) ] )``.
            self.tokens.extend(["("] * (n_args + 1))
            self.tokens.append(operator)
            args = []
            for _ in range(n_args):
                args.append(self._node(depth + 1))
                self.tokens.append(")")
            self.tokens.extend((CLOSE, ")"))
            return apply_operator(operator, args)
        digit = self._next("digit")
        self.tokens.append(DIGITS[digit])
        return digit


class _TooLong(Exception):
    pass


def generate_listops(
    n: int,
    seed: int = 0,
    min_len: int = 500,
    max_len: int = 2000,
    max_depth: int = 10,
    max_args: int = 10,
    max_draws: int | None = None,
) -> list[tuple[str, int]]:
    """Generate ``n`` unique ListOps examples by LRA's procedure.

    Args:
        n: number of examples.
        seed: seed of the ``np.random.Generator``; the output is a function of all arguments.
        min_len, max_len: keep trees whose token length ``L`` (see :func:`listops_tokens`)
            satisfies ``min_len < L < max_len``, as LRA does (LRA: 500, 2000).
        max_depth: nodes at this depth are digits (LRA: 10).
        max_args: operators take 2..``max_args`` arguments. LRA's data uses 10 (its
            generator's default); with 5 the trees are so small that lengths over 500
            essentially never occur (0 of 1.5M draws), so lower ``min_len`` with it.
        max_draws: give up after this many trees (default ``2000 * n + 100_000``).

    Returns:
        ``[(text, label), ...]`` with ``text`` in LRA's serialisation and ``label`` in 0..9.

    Raises:
        ValueError: bad arguments, or too few trees of the requested length after
            ``max_draws`` draws (the settings make such lengths too rare).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if max_depth < 2:
        raise ValueError(f"max_depth must be >= 2 (depth 1 is the root operator), got {max_depth}")
    if max_args < 2:
        raise ValueError(f"max_args must be >= 2, got {max_args}")
    if not 0 <= min_len < max_len - 1:
        raise ValueError(f"need 0 <= min_len < max_len - 1 (lengths are kept strictly between them), "
                         f"got {min_len}, {max_len}")
    max_draws = 2000 * n + 100_000 if max_draws is None else max_draws
    sampler = _ExpressionSampler(np.random.default_rng(seed), max_depth, max_args, max_len)
    seen: set[str] = set()
    samples: list[tuple[str, int]] = []
    for _ in range(max_draws):
        if len(samples) == n:
            break
        value = sampler.draw()
        if value is None or sampler.length <= min_len:
            continue
        text = " ".join(sampler.tokens)
        if text not in seen:
            seen.add(text)
            samples.append((text, value))
    if len(samples) < n:
        raise ValueError(
            f"found only {len(samples)} of {n} ListOps trees with {min_len} < length < {max_len} in {max_draws} draws "
            f"(max_depth={max_depth}, max_args={max_args}); raise max_args/max_depth, widen the length range "
            "or raise max_draws"
        )
    return samples


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


def shuffle_operands(expr: str, rng: np.random.Generator) -> str:
    """``expr`` with the arguments of every operator put in a random order, in LRA's serialisation.

    All four operators (``MIN``, ``MAX``, ``MED``, ``SM``) ignore argument order, so the
    value (the label) is unchanged: a label-preserving augmentation. Accepts the
    parenthesised and the bare form; always writes the parenthesised form the generator
    writes, so the text adapter sees the same token stream either way.

    Raises:
        ValueError: a malformed expression (as :func:`evaluate_listops`).
    """
    evaluate_listops(expr)  # the clear error for malformed input
    # A node is a digit string or [operator, [child, ...]]; built with an explicit stack.
    root: list = [None, []]
    stack: list[list] = [root]
    for token in listops_tokens(expr):
        if token in OPERATORS:
            node: list = [token, []]
            stack[-1][1].append(node)
            stack.append(node)
        elif token == CLOSE:
            args = stack.pop()[1]
            args[:] = [args[i] for i in rng.permutation(len(args))]
        else:
            stack[-1][1].append(token)
    out: list[str] = []
    pending: list = [root[1][0]]
    while pending:  # iterative pre-order writer of ``( ( ( [OP a ) b ) ] )``
        item = pending.pop()
        if isinstance(item, str):
            out.append(item)
            continue
        operator, args = item
        out.extend(["("] * (len(args) + 1))
        out.append(operator)
        pending.extend(reversed([part for arg in args for part in (arg, ")")] + [f"{CLOSE} )"]))
    return " ".join(out)


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


def outermost_operator_baseline(train: Iterable[tuple[str, int]], test: Iterable[tuple[str, int]]) -> float:
    """Test accuracy of a shortcut that reads only the outermost operator.

    It predicts, for each outermost operator, its most frequent label in ``train`` (MAX
    leans to 9, MIN to 0). A model at this accuracy has learned no nesting; the level of
    LRA's Transformer (36.37%) is this shortcut's.
    """
    by_operator: dict[str, Counter] = {}
    for expr, label in train:
        by_operator.setdefault(listops_tokens(expr)[0], Counter())[label] += 1
    if not by_operator:
        raise ValueError("outermost_operator_baseline needs training examples")
    fallback = sum(by_operator.values(), Counter()).most_common(1)[0][0]
    rule = {operator: counts.most_common(1)[0][0] for operator, counts in by_operator.items()}
    hits = [rule.get(listops_tokens(expr)[0], fallback) == label for expr, label in test]
    if not hits:
        raise ValueError("outermost_operator_baseline needs test examples")
    return float(np.mean(hits))


def write_listops_tsv(path: str | os.PathLike, samples: Iterable[tuple[str, int]]) -> Path:
    """Write ``samples`` in LRA's TSV layout (``Source<TAB>Target`` header), atomically."""
    rows = [(text, int(label)) for text, label in samples]
    for i, (text, label) in enumerate(rows):
        if "\t" in text or "\n" in text or not text.strip():
            raise ValueError(f"example {i}: a ListOps source must be non-empty and have no tabs or newlines")
        if not 0 <= label <= 9:
            raise ValueError(f"example {i}: label {label} is outside 0..9")
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, delimiter="\t")  # LRA's writer, its "\r\n" line ends included
    writer.writerow(TSV_HEADER)
    writer.writerows(rows)
    write_text(path, buffer.getvalue())
    return Path(path)


def read_listops_tsv(path: str | os.PathLike) -> list[tuple[str, int]]:
    """Read a ListOps TSV (LRA's ``basic_*.tsv`` or :func:`write_listops_tsv` output).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: empty file, a header other than ``Source<TAB>Target``, a row without
            two fields, an empty source or a label that is not an integer in 0..9.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no ListOps TSV at {path}; expected LRA's layout (header 'Source<TAB>Target')")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter="\t")
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path} is empty; expected a 'Source<TAB>Target' header and one example per row")
        if tuple(h.strip() for h in header) != TSV_HEADER:
            raise ValueError(f"{path}: header is {header!r}, expected {list(TSV_HEADER)} (LRA's ListOps TSV layout)")
        samples: list[tuple[str, int]] = []
        for row in reader:
            line = reader.line_num
            if not row:
                continue
            if len(row) != 2:
                raise ValueError(f"{path}:{line}: expected 2 tab-separated fields (Source, Target), got {len(row)}")
            text, target = row
            if not text.strip():
                raise ValueError(f"{path}:{line}: empty Source")
            try:
                label = int(target)
            except ValueError:
                raise ValueError(f"{path}:{line}: Target {target!r} is not an integer") from None
            if not 0 <= label <= 9:
                raise ValueError(f"{path}:{line}: Target {label} is outside 0..9")
            samples.append((text, label))
    if not samples:
        raise ValueError(f"{path} has a header but no examples")
    return samples
