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

import numpy as np

from modalities.datasets.listops_expressions import (  # noqa: F401  (re-exported)
    _TOKEN_ID,
    CLOSE,
    DIGITS,
    LISTOPS_CLASSES,
    LISTOPS_VOCAB,
    OPERATORS,
    apply_operator,
    describe_listops,
    evaluate_listops,
    listops_token_ids,
    listops_tokens,
    max_arguments,
    operator_nesting,
    outermost_operator_baseline,
    outermost_operator_predictions,
    shuffle_operands,
)
from modalities.datasets.listops_files import TSV_HEADER, read_listops_tsv, write_listops_tsv  # noqa: F401  (re-exported)

OPERATOR_PROBABILITY = 0.25  # LRA's VALUE_P: a non-leaf node is an operator with this probability


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

