"""Operand shuffling for the training loader: :func:`shuffle_operands`'s order, as token ids, in numpy.

``listops_shuffle`` (``maelre.engine.train_data``) reorders every training example's operands
each time it is read, and the word tokenizer then splits the text again and maps its words to
ids. In Python that cost ~0.8 ms an example (0.6 ms shuffling, 0.2 ms encoding), the bound of the
ListOps runs' loader. :func:`shuffle_operand_ids` returns the ids of the shuffled expression
directly, from the same single ``rng.random`` call as :func:`shuffle_operands`:

* :func:`parse_listops` reads the text with numpy (bytes, token boundaries, one lookup per
  token) into a :class:`ListOpsTree`: the bare prefix ids and, for every node (operator or
  digit), where its key is drawn, its subtree's size and its parent;
* :func:`shuffled_ids` sorts every operator's arguments by their keys (grouped by parent) and places each node after its parent and its earlier siblings (prefix sums).

:func:`shuffle_operands` stays the reference: for the same generator state,
``shuffle_operand_ids(expr, rng) == listops_token_ids(shuffle_operands(expr, rng))``. Whatever the
fast path does not read (a byte outside the ListOps alphabet, any malformed expression) and the
rare case of two sibling keys drawn equal (the reference then orders them by their text) go
through the reference with the same keys, so the result, and the error, is always its own.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from modalities.datasets.listops_expressions import (
    _TOKEN_ID,
    CLOSE,
    LISTOPS_VOCAB,
    OPERATORS,
    listops_token_ids,
    shuffle_by_keys,
    shuffle_operands,
    written_node,
)

if TYPE_CHECKING:
    from modalities.text import SplitText

_CLOSE_ID = _TOKEN_ID[CLOSE]
_LAST_OPERATOR_ID = max(_TOKEN_ID[op] for op in OPERATORS)  # operators are ids 1..4, then `]`, then the digits
_PAREN_ID = 0  # parse code of "(" and ")": LISTOPS_VOCAB's padding id, never a token
_SPACE, _OPEN, _SHUT = (ord(c) for c in " ()")
_WIDEST = max(len(token) for token in LISTOPS_VOCAB[1:])  # 4 bytes: "[MIN"
_LENGTH_MASK = np.array([(1 << (8 * n)) - 1 for n in range(_WIDEST + 1)], dtype=np.uint32)


def _packed(token: str) -> int:
    """A token's bytes as one little-endian integer (every ListOps token has at most 4)."""
    return int.from_bytes(token.encode("ascii"), "little")


def _token_table() -> tuple[int, np.ndarray, np.ndarray]:
    """``(modulus, packed token per slot, code per slot)``: ``packed % modulus`` is a different slot for every token."""
    codes = {_packed(token): i for token, i in _TOKEN_ID.items() if i} | {_packed("("): _PAREN_ID, _packed(")"): _PAREN_ID}
    modulus = next(m for m in range(len(codes), 10_000) if len({p % m for p in codes}) == len(codes))
    packed = np.full(modulus, 0xFFFFFFFF, dtype=np.uint32)  # empty slots: four 0xFF bytes, which UTF-8 never holds
    code = np.zeros(modulus, dtype=np.uint8)
    for p, c in codes.items():
        packed[p % modulus], code[p % modulus] = p, c
    return modulus, packed, code


_MODULUS, _SLOT_PACKED, _SLOT_CODE = _token_table()


@dataclass(frozen=True)
class ListOpsTree:
    """A well-formed expression's prefix structure, what :func:`shuffled_ids` needs of it.

    Attributes:
        n_tokens: whitespace tokens of the text, parentheses included (one key is drawn for each).
        ids: :data:`LISTOPS_VOCAB` ids of the bare prefix form (parentheses dropped), ``uint8 [L]``.
        nodes: positions in ``ids`` of the nodes, operators and digits, in prefix order ``[M]``.
        key_index: each node's key: the index of its operator or digit among the ``n_tokens`` ``[M]``.
        sizes: bare tokens of each node's subtree (1 for a digit; an operator's count includes its ``]``) ``[M]``.
        parents: position in ``ids`` of each node's operator, -1 for the root ``[M]``.
    """

    n_tokens: int
    ids: np.ndarray
    nodes: np.ndarray
    key_index: np.ndarray
    sizes: np.ndarray
    parents: np.ndarray


def _raw_token_codes(expr: str) -> tuple[np.ndarray, np.ndarray] | None:
    """``(codes, paren_steps)`` of ``expr.split()``: an id (0 for a parenthesis) and +1/-1/0 per token.

    ``None`` for anything but ListOps tokens and spaces (other whitespace or characters: the
    reference splits and rejects those itself).
    """
    data = np.frombuffer(b" " + expr.encode("utf-8", "surrogatepass") + b" " * _WIDEST, dtype=np.uint8)
    if not data.all():  # a NUL byte would vanish from its token's packed value ("1\x00" read as "1")
        return None
    word = data != _SPACE
    edges = np.flatnonzero(word[1:] != word[:-1]) + 1  # the padding makes them start, end, start, end, ...
    starts, lengths = edges[::2], edges[1::2] - edges[::2]
    if not len(starts) or lengths.max() > _WIDEST:
        return None
    # the 4 bytes from every position as one little-endian integer (a strided view, no copy), cut to each token's length
    windows = np.ndarray(len(data) - _WIDEST + 1, dtype="<u4", buffer=data, strides=(1,))
    packed = windows[starts] & _LENGTH_MASK[lengths]
    slots = packed % _MODULUS
    if (_SLOT_PACKED[slots] != packed).any():
        return None
    return _SLOT_CODE[slots], (packed == _OPEN).astype(np.int16) - (packed == _SHUT)


def parse_listops(expr: str) -> ListOpsTree | None:
    """The :class:`ListOpsTree` of ``expr``, or ``None`` where :func:`shuffle_operands` must decide (malformed or unusual text).

    Accepts what :func:`shuffle_operands` accepts: ListOps tokens separated by spaces, parentheses
    anywhere as long as they balance (LRA's form or the bare one), every operator with at least one
    argument, and one top-level node.
    """
    parsed = _raw_token_codes(expr)
    if parsed is None:
        return None
    codes, paren_steps = parsed
    parens = np.cumsum(paren_steps)
    if not len(codes) or parens.min() < 0 or parens[-1]:
        return None
    key_of_bare = np.flatnonzero(codes != _PAREN_ID)
    ids = codes[key_of_bare]
    is_operator, is_close = ids <= _LAST_OPERATOR_ID, ids == _CLOSE_ID
    steps = is_operator.astype(np.int64) - is_close
    after = np.cumsum(steps)  # open operators after each token
    before = after - steps
    if (not len(ids) or after.min() < 0 or after[-1] or (is_operator[:-1] & is_close[1:]).any()
            or np.count_nonzero(~is_close & (before == 0)) != 1):
        return None  # a ']' without an operator or arguments, an operator never closed, or not one top-level node
    operators, closes = np.flatnonzero(is_operator), np.flatnonzero(is_close)
    by_level = np.argsort(before[operators], kind="stable")  # per nesting level, operators and their ]s alternate
    operators = operators[by_level]
    sizes = np.ones(len(ids), dtype=np.int64)
    sizes[operators] = closes[np.argsort(after[closes], kind="stable")] - operators + 1
    nodes = np.flatnonzero(~is_close)
    level_span = len(ids) + 1  # operators sorted by level * span + position: the parent is the last one before a node, one level up
    operator_order = before[operators] * level_span + operators
    depth = before[nodes]
    inner = depth > 0
    parents = np.full(len(nodes), -1, dtype=np.int64)
    parents[inner] = operators[np.searchsorted(operator_order, (depth[inner] - 1) * level_span + nodes[inner]) - 1]
    index = np.int16 if len(codes) < 2**15 else np.int32
    return ListOpsTree(len(codes), ids, nodes.astype(index), key_of_bare[nodes].astype(index), sizes[nodes].astype(index),
                       parents.astype(index))


def shuffled_ids(tree: ListOpsTree, keys: np.ndarray) -> np.ndarray | None:
    """``tree.ids`` with every operator's arguments sorted by their keys (``keys[tree.key_index]``).

    ``None`` when two arguments of one operator have equal keys: :func:`shuffle_operands` then
    orders them by their written text, which this does not see.
    """
    node_keys = keys[tree.key_index]
    by_key = np.argsort(node_keys)
    order = by_key[np.argsort(tree.parents[by_key], kind="stable")]  # siblings together, by key (np.lexsort, but faster)
    parents, sorted_keys = tree.parents[order], node_keys[order]
    same_parent = parents[1:] == parents[:-1]
    if (same_parent & (sorted_keys[1:] == sorted_keys[:-1])).any():
        return None
    sizes = tree.sizes[order].astype(np.int64)
    before = np.cumsum(sizes) - sizes  # tokens of all nodes earlier in this order
    group_start = np.concatenate(([True], ~same_parent))
    steps = np.empty_like(sizes)  # a node's place after its parent's: 1 + the tokens of its earlier siblings
    steps[order] = before - np.maximum.accumulate(np.where(group_start, before, 0)) + 1
    # A node's place is the sum of the steps of its ancestors and itself, less the root's 1: a prefix sum
    # over the input order, where every subtree is the contiguous span nodes .. nodes + sizes.
    nodes = tree.nodes.astype(np.int64)
    span = np.zeros(len(tree.ids) + 1, dtype=np.int64)
    span[nodes] = steps
    ends = np.zeros_like(span)
    ends[nodes + tree.sizes] = steps  # no two subtrees end at the same token
    place = np.cumsum(span - ends)[nodes] - 1
    out = np.empty_like(tree.ids)
    out[place] = tree.ids[nodes]
    operators = tree.sizes > 1
    out[place[operators] + tree.sizes[operators] - 1] = _CLOSE_ID
    return out


def shuffle_operand_ids(expr: str, rng: np.random.Generator) -> np.ndarray:
    """``listops_token_ids(shuffle_operands(expr, rng))`` (as ``uint8``), from the same ``rng`` draws, without writing the text.

    Raises:
        ValueError: a malformed expression (:func:`shuffle_operands`'s error).
    """
    tree = parse_listops(expr)
    if tree is None:
        return np.array(listops_token_ids(shuffle_operands(expr, rng)), dtype=np.uint8)
    keys = rng.random(tree.n_tokens)
    ids = shuffled_ids(tree, keys)
    if ids is None:  # equal sibling keys: the reference breaks the tie
        ids = np.array(listops_token_ids(shuffle_by_keys(expr, expr.split(), keys.tolist())), dtype=np.uint8)
    return ids


def listops_text(ids: np.ndarray) -> str:
    """LRA's serialisation (the generator's and :func:`shuffle_operands`'s) of a bare prefix expression's token ids."""
    frames: list[tuple[str, list[str]]] = []
    done: list[str] = []
    for i in np.asarray(ids).tolist():
        token = LISTOPS_VOCAB[i]
        if token in OPERATORS:
            frames.append((token, []))
            continue
        text = written_node(*frames.pop()) if token == CLOSE else token
        (frames[-1][1] if frames else done).append(text)
    if frames or len(done) != 1:
        raise ValueError(f"token ids {np.asarray(ids)[:20].tolist()}... are not one ListOps expression")
    return done[0]


def shuffle_operand_words(expr: str, rng: np.random.Generator) -> SplitText:
    """The shuffled expression for the text adapter: a :class:`~modalities.text.SplitText` of its bare tokens.

    Its words are ``LISTOPS_VOCAB[ids]`` (parentheses dropped) and its text, written only when asked
    for, is :func:`shuffle_operands`'s for the same draws of ``rng``.
    """
    from modalities.text import SplitText  # noqa: F811 (here: importing modalities loads every adapter, torch and timm included)

    ids = shuffle_operand_ids(expr, rng)
    return SplitText(LISTOPS_VOCAB, ids, frozenset("()"), functools.partial(listops_text, ids))


__all__ = ["ListOpsTree", "listops_text", "parse_listops", "shuffle_operand_ids", "shuffle_operand_words", "shuffled_ids"]
