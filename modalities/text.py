"""Text adapter: ``str`` -> byte-level (LRA style), byte-level BPE or whitespace-word ids -> embeddings.

Special ids are the same for every tokenizer: ``PAD=0, CLS=1, EOS=2, UNK=3``. Byte
``b`` of the UTF-8 encoding is id ``b + 4``; BPE ids come from a HuggingFace
``tokenizers`` ByteLevel BPE trained in ``fit`` (so it never needs UNK either); word ids
come from a whitespace vocabulary learned in ``fit`` (unseen words map to UNK) -- the
right choice for symbol sequences such as LRA ListOps, whose 16-symbol vocabulary would
be ~6x longer as bytes.

Inputs are ``str``, or a ``SplitText`` (words already split, e.g. ListOps' shuffled training
examples), which the word tokenizer maps without writing the text and everything else reads as
its text.

Length rule: ``max_len`` counts every emitted token, CLS/EOS included. With
``truncation=True`` the head of the text is kept; with False, longer text is an error.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from modalities.base import register_adapter
from modalities.common import (
    SequenceAdapter,
    SequenceAdapterConfig,
    check_choice,
    check_positive,
    kept_length,
    token_embedding,
)

SPECIAL_TOKENS = ("<pad>", "<cls>", "<eos>", "<unk>")
PAD_ID, CLS_ID, EOS_ID, UNK_ID = range(len(SPECIAL_TOKENS))
BYTE_OFFSET = len(SPECIAL_TOKENS)
BYTE_VOCAB_SIZE = 256 + BYTE_OFFSET
TOKENIZERS = ("byte", "bpe", "word")


@dataclass
class TextAdapterConfig(SequenceAdapterConfig):
    """Text adapter settings (plus ``dim, max_len, truncation, pad_to_multiple, pos_embed``).

    Attributes:
        tokenizer: ``"byte"`` (UTF-8 bytes, vocabulary 260), ``"bpe"`` (trained by ``fit``)
            or ``"word"`` (whitespace tokens, vocabulary learned by ``fit``).
        vocab_size: BPE/word vocabulary size including the 4 special tokens (BPE needs
            >= 260, so every byte has a token); also the embedding size in those modes.
        min_frequency: BPE merges need a pair seen at least this often; a word needs to
            be seen this often to get its own id.
        add_cls: prepend ``CLS`` (for backbones pooling on the first token).
        add_eos: append ``EOS``.
        ignore_words: words the ``"word"`` tokenizer drops (LRA ListOps drops the
            parentheses ``["(", ")"]``, which carry no information beyond the brackets).
    """

    tokenizer: str = "byte"
    vocab_size: int = 8192
    min_frequency: int = 2
    add_cls: bool = False
    add_eos: bool = False
    ignore_words: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("text", "tokenizer", self.tokenizer, TOKENIZERS)
        check_positive("text", vocab_size=self.vocab_size, min_frequency=self.min_frequency)
        if self.tokenizer == "bpe" and self.vocab_size < BYTE_VOCAB_SIZE:
            raise ValueError(f"text: vocab_size={self.vocab_size} is too small for byte-level BPE; use at least {BYTE_VOCAB_SIZE} (256 bytes + 4 specials)")
        if self.max_len <= self.add_cls + self.add_eos:
            raise ValueError(f"text: max_len={self.max_len} leaves no room for text after CLS/EOS; raise max_len")


def _new_bpe(vocab_size: int, min_frequency: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS[UNK_ID]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    return tokenizer, trainer


@dataclass(frozen=True, eq=False)
class SplitText:
    """A text handed over already split into words, so that the word tokenizer need not write and re-split it.

    Its words, once those in ``dropped`` are removed, are ``vocabulary[codes[i]]``; ``str()``
    writes the whole text (``write()``). An augmentation that builds its words itself returns one
    (ListOps' ``listops_shuffle``). The ``"word"`` tokenizer maps ``codes`` through a table when it
    ignores every ``dropped`` word (the ids are then those of ``str(x)``: the words the generic path
    keeps are the same); every other use (byte and BPE tokenizers, ``fit``) reads ``str(x)``.

    Contract: ``[w for w in str(x).split() if w not in x.dropped] == [x.vocabulary[c] for c in x.codes]``.
    """

    vocabulary: tuple[str, ...]
    codes: np.ndarray
    dropped: frozenset[str]
    write: Callable[[], str]

    def __str__(self) -> str:
        return self.write()


def _check_text(x: object) -> str:
    if isinstance(x, SplitText):
        return str(x)
    if not isinstance(x, str):
        raise ValueError(f"text: expected a str, got {type(x).__name__}; decode bytes first (x.decode('utf-8'))")
    return x


@register_adapter("text")
class TextAdapter(SequenceAdapter):
    """``str`` -> ids -> ``nn.Embedding(vocab, dim, padding_idx=PAD)`` (``token_embedding``) + positions.

    ``encode`` -> ``{"ids": LongTensor[L], "mask": BoolTensor[L]}``; ``collate`` pads ids
    with ``PAD``; ``forward`` -> ``tokens [B, L, dim]``, ``mask [B, L]``.
    """

    modality = "text"
    config_class = TextAdapterConfig
    pad_values = {"ids": PAD_ID}
    token_ids_key = "ids"  # masked-token pretraining predicts these

    def __init__(self, config: TextAdapterConfig) -> None:
        super().__init__(config)
        self.bpe = None  # tokenizers.Tokenizer once fitted / loaded
        self.words: dict[str, int] | None = None  # word -> id once fitted / loaded
        self._code_tables: dict[tuple[str, ...], np.ndarray] = {}  # SplitText vocabulary -> id per code (-1: ignored)
        vocab = BYTE_VOCAB_SIZE if config.tokenizer == "byte" else config.vocab_size
        self.embedding = token_embedding(vocab, config.dim, padding_idx=PAD_ID)
        self.build_positions()

    @property
    def vocab_size(self) -> int:
        return self.embedding.num_embeddings

    @property
    def num_token_ids(self) -> int:
        """Size of the token vocabulary (ids run 0..num_token_ids-1)."""
        return self.vocab_size

    def fit(self, inputs: Sequence[str]) -> "TextAdapter":
        """Learn the BPE or word vocabulary from ``inputs`` (training texts); nothing to learn for bytes."""
        texts = [_check_text(t) for t in inputs]
        if self.config.tokenizer == "word":
            if not texts:
                raise ValueError("text: fit() needs at least one training text to learn a word vocabulary")
            counts = Counter(word for t in texts for word in self._words_of(t))
            frequent = sorted((w for w, c in counts.items() if c >= self.config.min_frequency), key=lambda w: (-counts[w], w))
            self._set_words(frequent[: self.vocab_size - BYTE_OFFSET])
        if self.config.tokenizer == "bpe":
            if not texts:
                raise ValueError("text: fit() needs at least one training text to learn a BPE vocabulary")
            tokenizer, trainer = _new_bpe(self.config.vocab_size, self.config.min_frequency)
            tokenizer.train_from_iterator(texts, trainer, length=len(texts))
            self._set_bpe(tokenizer)
        return self

    def _set_bpe(self, tokenizer) -> None:
        for i, token in enumerate(SPECIAL_TOKENS):
            if tokenizer.token_to_id(token) != i:
                raise ValueError(f"text: BPE tokenizer maps {token!r} to {tokenizer.token_to_id(token)}, expected id {i}")
        if tokenizer.get_vocab_size() > self.vocab_size:
            raise ValueError(f"text: BPE vocabulary has {tokenizer.get_vocab_size()} tokens but the embedding holds {self.vocab_size}; set vocab_size accordingly")
        self.bpe = tokenizer

    def _set_words(self, words: Sequence[str]) -> None:
        if len(words) > self.vocab_size - BYTE_OFFSET:
            raise ValueError(f"text: word vocabulary has {len(words)} words but the embedding holds {self.vocab_size - BYTE_OFFSET}; raise vocab_size")
        self.words = {w: i + BYTE_OFFSET for i, w in enumerate(words)}
        self._code_tables = {}

    def _words_of(self, text: str) -> list[str]:
        ignore = set(self.config.ignore_words)
        return [w for w in text.split() if w not in ignore]

    def _untrained(self) -> ValueError:
        return ValueError(f"text: the {self.config.tokenizer} tokenizer is not trained; call fit(train_texts) or load_preprocessing_state(state) first")

    def _split_ids(self, text: SplitText) -> np.ndarray | None:
        """Word ids of ``text`` from its codes, or ``None`` where only its written text gives them.

        The same as the generic path's: the words it drops all lie in ``ignore_words``, and a code's
        id is the one its word maps to (-1 for an ignored word, removed).
        """
        ignore = set(self.config.ignore_words)
        if self.config.tokenizer != "word" or self.words is None or not text.dropped <= ignore:
            return None
        table = self._code_tables.get(text.vocabulary)
        if table is None:
            table = np.array([-1 if w in ignore else self.words.get(w, UNK_ID) for w in text.vocabulary], dtype=np.int64)
            self._code_tables[text.vocabulary] = table
        ids = table[text.codes]
        return ids if (table >= 0).all() else ids[ids >= 0]

    def tokenize(self, text: str | SplitText) -> np.ndarray:
        """Ids of ``text`` without specials or truncation (int64 array)."""
        if isinstance(text, SplitText) and (ids := self._split_ids(text)) is not None:
            return ids
        text = _check_text(text)
        if self.config.tokenizer == "byte":
            return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64) + BYTE_OFFSET
        if self.config.tokenizer == "word":
            if self.words is None:
                raise self._untrained()
            return np.asarray([self.words.get(w, UNK_ID) for w in self._words_of(text)], dtype=np.int64)
        if self.bpe is None:
            raise self._untrained()
        return np.asarray(self.bpe.encode(text, add_special_tokens=False).ids, dtype=np.int64)

    def _body_length(self, text: str | SplitText) -> int:
        """``len(self.tokenize(text))`` without building the ids (bucketing measures every training text)."""
        if isinstance(text, SplitText) and (ids := self._split_ids(text)) is not None:
            return len(ids)
        text = _check_text(text)
        if self.config.tokenizer == "byte":
            return len(text.encode("utf-8"))
        if self.config.tokenizer == "word":
            if self.words is None:
                raise self._untrained()
            words = text.split()  # unknown words become UNK: one token each, like known ones
            return len(words) - sum(words.count(w) for w in set(self.config.ignore_words))
        return len(self.tokenize(text))

    def decode(self, ids: Sequence[int] | Tensor) -> str:
        """Text of ``ids`` with special tokens dropped (inverse of ``encode`` up to truncation)."""
        ids = [int(i) for i in ids if int(i) >= BYTE_OFFSET]
        if self.config.tokenizer == "byte":
            return bytes(i - BYTE_OFFSET for i in ids).decode("utf-8", errors="replace")
        if self.config.tokenizer == "word":
            if self.words is None:
                raise self._untrained()
            inverse = {i: w for w, i in self.words.items()}
            return " ".join(inverse[i] for i in ids if i in inverse)
        if self.bpe is None:
            raise self._untrained()
        return self.bpe.decode(ids)

    def encode(self, x: str | SplitText) -> dict[str, Tensor]:
        body = self.tokenize(x)
        n_special = int(self.config.add_cls) + int(self.config.add_eos)
        keep = kept_length(len(body) + n_special, self.config.max_len, self.config.truncation, owner="text")
        parts = [[CLS_ID]] if self.config.add_cls else []
        parts.append(body[: keep - n_special])
        if self.config.add_eos:
            parts.append([EOS_ID])
        ids = torch.from_numpy(np.concatenate(parts).astype(np.int64))
        if ids.numel() == 0:
            raise ValueError("text: empty text gives no tokens; drop empty documents or set add_cls=True")
        return {"ids": ids, "mask": torch.ones(ids.numel(), dtype=torch.bool)}

    def embed(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        return self.embedding(batch["ids"]), batch["mask"]

    def preprocessing_state(self) -> dict:
        state: dict = {"tokenizer": self.config.tokenizer}
        if self.config.tokenizer == "bpe":
            if self.bpe is None:
                raise ValueError("text: nothing to save, the BPE tokenizer is not trained; call fit(train_texts) first")
            state["bpe"] = self.bpe.to_str()
        if self.config.tokenizer == "word":
            if self.words is None:
                raise ValueError("text: nothing to save, the word vocabulary is not learned; call fit(train_texts) first")
            state["words"] = sorted(self.words, key=self.words.__getitem__)
        return state

    def load_preprocessing_state(self, state: dict) -> None:
        if state.get("tokenizer") != self.config.tokenizer:
            raise ValueError(f"text: state is for tokenizer={state.get('tokenizer')!r} but this adapter uses {self.config.tokenizer!r}")
        if self.config.tokenizer == "word":
            if "words" not in state:
                raise ValueError("text: word state has no 'words' entry; save it with preprocessing_state()")
            self._set_words(state["words"])
        if self.config.tokenizer == "bpe":
            from tokenizers import Tokenizer

            if "bpe" not in state:
                raise ValueError("text: BPE state has no 'bpe' entry (the tokenizer JSON); save it with preprocessing_state()")
            self._set_bpe(Tokenizer.from_str(state["bpe"]))

    def num_tokens(self, x: str | SplitText) -> int:
        n = self._body_length(x) + int(self.config.add_cls) + int(self.config.add_eos)
        return kept_length(n, self.config.max_len, self.config.truncation, owner="text")
