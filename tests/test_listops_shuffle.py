"""The training loader's operand shuffling (``modalities.datasets.listops_shuffle``) gives what the Python reference gave.

``listops_shuffle`` used to write ``shuffle_operands``'s text and let the word tokenizer split it
again; it now hands the shuffled token ids on as a ``SplitText``. Token ids, masks and labels of
every sample and batch must stay those of the old path for the same random state (resumed runs
and reproducibility rely on it): checked against a verbatim copy of the old ``shuffle_operands``
(``reference_shuffle``) and against a digest of encodings computed with the code before the change.
"""
from __future__ import annotations

import hashlib
import re

import numpy as np
import pytest
import torch

from maelre.engine.data import make_dataloader
from maelre.engine.train_data import AugmentedSamples, _generator
from modalities import create_adapter
from modalities.datasets.listops import (
    CLOSE,
    OPERATORS,
    evaluate_listops,
    generate_listops,
    listops_token_ids,
    listops_tokens,
    shuffle_operands,
)
from modalities.datasets.listops_shuffle import listops_text, parse_listops, shuffle_operand_ids, shuffle_operand_words
from modalities.text import SplitText

pytestmark = pytest.mark.usefixtures("torch_single_thread")


def reference_shuffle(expr: str, rng) -> str:
    """``shuffle_operands`` as it was before the fast path (commit bd8bfde), kept verbatim as the reference."""
    tokens = expr.split()
    keys = rng.random(len(tokens)).tolist()
    frames: list = []
    done: list = []
    parens = 0
    for key, token in zip(keys, tokens):
        if token == "(":
            parens += 1
        elif token == ")":
            parens -= 1
            if parens < 0:
                break
        elif token in OPERATORS:
            frames.append((key, token, []))
        elif token in [str(d) for d in range(10)]:
            (frames[-1][2] if frames else done).append((key, token))
        elif token == CLOSE and frames and frames[-1][2]:
            node_key, operator, args = frames.pop()
            args.sort()
            text = " ".join(["( " * len(args) + "(", operator, *(f"{arg} )" for _, arg in args), "] )"])
            (frames[-1][2] if frames else done).append((node_key, text))
        else:
            break
    else:
        if not frames and not parens and len(done) == 1:
            return done[0][1]
    evaluate_listops(expr)
    raise ValueError(f"malformed ListOps expression {expr[:80]!r}")


class _Coarse:
    """Keys from {0, 1/3, 2/3}: siblings tie all the time, and the reference orders them by their text."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def random(self, n: int) -> np.ndarray:
        return np.floor(self.rng.random(n) * 3) / 3


@pytest.fixture(scope="module")
def expressions() -> list[tuple[str, int]]:
    """300 generated expressions of LRA's arity (up to 10 arguments), 20 to 600 tokens, and a few of LRA's length."""
    return generate_listops(300, seed=11, min_len=20, max_len=600) + generate_listops(5, seed=2)


def _word_adapter(samples, **kw):
    adapter = create_adapter("text", dim=8, tokenizer="word", vocab_size=32, min_frequency=1, max_len=2048, **kw)
    return adapter.fit([x for x, _ in samples])


def test_shuffled_ids_and_text_match_the_reference(expressions):
    for i, (text, label) in enumerate(expressions):
        expected = reference_shuffle(text, np.random.default_rng(i))
        ids = shuffle_operand_ids(text, np.random.default_rng(i))
        assert ids.tolist() == listops_token_ids(expected)
        words = shuffle_operand_words(text, np.random.default_rng(i))
        assert str(words) == expected and shuffle_operands(text, np.random.default_rng(i)) == expected
        assert evaluate_listops(str(words)) == label
        bare = " ".join(listops_tokens(text))  # the bare form shuffles alike (the reference writes LRA's form)
        assert shuffle_operand_ids(bare, np.random.default_rng(i)).tolist() == listops_token_ids(reference_shuffle(bare, np.random.default_rng(i)))
        assert listops_text(listops_token_ids(text)) == text


def test_equal_sibling_keys_are_ordered_by_text_as_in_the_reference(expressions):
    for i, (text, _) in enumerate(expressions[:100]):
        assert shuffle_operand_ids(text, _Coarse(i)).tolist() == listops_token_ids(reference_shuffle(text, _Coarse(i)))


@pytest.mark.parametrize("text", [
    "[MAX 1 2", ") [MAX 1 2 ] (", "[MAX ]", "[MAX 1 ] 2", "[MAX 1 x ]", "1 ]", "", "( )", "7", "( 7 )", "[MAX ( 1 2 ) ]",
    "[MAX  1\t2 ]", "[MAX 1 [MIN 2 ] ]", "[MAXX 1 ]", "[MAX 1 ]]", "[SM 1 ( ] )", "[MED 1 2 ] ]", "( ( [MIN 1 ) 2 ] ) )",
    "[MIN 1 2 ] \u00a0", "[MAX 1 2 ]\n", "[MAX 1 \ud800 ]", "[MAX 1\x00 2 ]", "(\x00 [MIN 1 ] )",
])
def test_unusual_and_malformed_expressions_behave_as_in_the_reference(text):
    try:
        expected = listops_token_ids(reference_shuffle(text, np.random.default_rng(0)))
    except ValueError as err:
        with pytest.raises(ValueError, match=re.escape(str(err))):
            shuffle_operand_ids(text, np.random.default_rng(0))
        assert parse_listops(text) is None
    else:
        assert shuffle_operand_ids(text, np.random.default_rng(0)).tolist() == expected


def test_word_tokenizer_reads_split_text_as_its_text(expressions):
    """The table path of a SplitText gives the ids of its written text; other tokenizers read the text."""
    samples = expressions[:40]
    adapters = [_word_adapter(samples, ignore_words=["(", ")"]), _word_adapter(samples, ignore_words=["(", ")", "]"]),
                _word_adapter(samples),  # keeps the parentheses: only the written text has them
                _word_adapter(samples[:3], ignore_words=["(", ")"]),  # a vocabulary that may miss a word: UNK alike
                create_adapter("text", dim=8, tokenizer="byte", max_len=20_000)]
    for i, (text, _) in enumerate(samples):
        words = shuffle_operand_words(text, np.random.default_rng(i))
        assert isinstance(words, SplitText)
        for adapter in adapters:
            fast, generic = adapter.encode(words), adapter.encode(str(words))
            assert torch.equal(fast["ids"], generic["ids"]) and torch.equal(fast["mask"], generic["mask"])
            assert adapter.num_tokens(words) == adapter.num_tokens(str(words)) == len(generic["ids"])


def test_training_samples_and_batches_are_those_of_the_old_path(expressions):
    samples = expressions[:300]
    adapter = _word_adapter(samples, ignore_words=["(", ")"])

    def old_listops_shuffle(x):
        return reference_shuffle(x, _generator())

    # the encodings the code before the change gave (/tmp/freeze.py of that session: torch seed 123, every sample once)
    torch.manual_seed(123)
    augmented = AugmentedSamples(samples, ["listops_shuffle"])
    digest = hashlib.sha256()
    for i in range(len(augmented)):
        digest.update(adapter.encode(augmented[i][0])["ids"].numpy().tobytes())
    assert digest.hexdigest() == "528ae395aa523676eb5983a165fe30758b75bb4b497712998bd82c37e7e235e6"

    def batches(transform) -> list:
        torch.manual_seed(7)
        augmented = AugmentedSamples(samples, ["listops_shuffle"])
        augmented.transforms = [transform]
        loader = make_dataloader(augmented, adapter, 16, shuffle=True, seed=3, bucket_by_length=True)
        return [batch for _ in range(2) for batch in loader]

    new, old = batches(AugmentedSamples(samples, ["listops_shuffle"]).transforms[0]), batches(old_listops_shuffle)
    assert len(new) == len(old) == 2 * -(-len(samples) // 16)
    for (batch, labels), (old_batch, old_labels) in zip(new, old):
        assert torch.equal(labels, old_labels) and batch.keys() == old_batch.keys()
        assert all(torch.equal(batch[key], old_batch[key]) for key in batch)
