"""Text adapter (byte + BPE) and the shared adapter helpers in ``modalities/common.py``."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from maelre.registry import create_backbone
from modalities import create_adapter
from modalities.common import EMBED_INIT_STD, PositionEmbedding, kept_length, pad_batch, sinusoidal_positions
from modalities.text import BYTE_OFFSET, BYTE_VOCAB_SIZE, CLS_ID, EOS_ID, PAD_ID, SPECIAL_TOKENS, UNK_ID

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "A long sequence classifier must handle documents of thousands of bytes.",
    "Token merging averages similar tokens so that later layers see fewer of them.",
    "Linear attention replaces the softmax kernel with a feature map.",
    "The model reads the review and decides whether it is positive or negative.",
    "This movie was wonderful, the acting was superb and the story moving.",
    "This movie was terrible, the plot made no sense and the acting was wooden.",
    "I would watch it again with my friends on a rainy afternoon.",
    "The soundtrack was forgettable but the photography was beautiful.",
    "Nested lists of operators such as MAX, MIN and MEDIAN form the ListOps task.",
    "Retrieval asks whether two papers are linked by a citation.",
    "Pathfinder shows two dots and asks whether a dashed path connects them.",
    "Images are flattened into sequences of pixels, one token per pixel.",
    "Speech commands are short clips of single spoken words.",
    "Time series come from sensors, each channel sampled at regular steps.",
    "Normalization statistics are estimated on the training split only.",
    "The tokenizer is trained once and saved next to the weights.",
    "Padding tokens never influence the pooled representation.",
    "Learning rate warmup helps the first few hundred steps.",
    "Gradient clipping keeps rare large updates from diverging.",
    "The validation accuracy stopped improving after ten epochs.",
    "Byte level models need no vocabulary but see longer sequences.",
    "Subword units shorten the sequence at the cost of a learned vocabulary.",
    "Café, naïve and façade keep their accents in UTF-8.",
    "Zürich, København and Łódź are cities with non-ASCII names.",
    "東京は日本の首都です。",
    "Emoji such as 🙂 take four bytes in UTF-8.",
    "The reviewer asked for more ablations and clearer figures.",
    "We release code, configuration files and trained checkpoints.",
    "Every experiment is repeated with three random seeds.",
    "the the the the the the the the the the the the",
    "merge merge merging merged merges merger mergers",
] * 2


def byte_adapter(**kw):
    return create_adapter("text", **{"dim": 16, "max_len": 64, **kw})


def bpe_adapter(**kw):
    return create_adapter("text", **{"dim": 16, "max_len": 64, "tokenizer": "bpe", "vocab_size": 400, "min_frequency": 2, **kw})


# -- byte tokenizer -----------------------------------------------------------------------
def test_special_ids_are_explicit():
    assert (PAD_ID, CLS_ID, EOS_ID, UNK_ID) == (0, 1, 2, 3)
    assert SPECIAL_TOKENS == ("<pad>", "<cls>", "<eos>", "<unk>")
    assert BYTE_VOCAB_SIZE == 260 and BYTE_OFFSET == 4


@pytest.mark.parametrize("text", ["hello world", "Café naïve", "東京", "🙂 ok"])
def test_byte_encoding_is_utf8_bytes_plus_offset(text):
    a = byte_adapter(add_cls=True, add_eos=True)
    out = a.encode(text)
    expected = [CLS_ID] + [b + BYTE_OFFSET for b in text.encode("utf-8")] + [EOS_ID]
    assert out["ids"].dtype == torch.long and out["ids"].tolist() == expected
    assert out["mask"].dtype == torch.bool and bool(out["mask"].all()) and out["mask"].shape == out["ids"].shape
    assert a.decode(out["ids"]) == text
    assert a.num_tokens(text) == len(expected)


def test_truncation_keeps_head_and_counts_specials():
    text = "abcdefghijklmnopqrstuvwxyz"
    a = byte_adapter(max_len=10, add_cls=True)
    ids = a.encode(text)["ids"].tolist()
    assert len(ids) == 10 and ids[0] == CLS_ID
    assert a.decode(ids) == text[:9]
    # exactly max_len fits without truncation
    strict = byte_adapter(max_len=10, add_cls=True, truncation=False)
    assert len(strict.encode(text[:9])["ids"]) == 10


def test_no_truncation_raises_with_length_and_fix():
    a = byte_adapter(max_len=10, truncation=False)
    with pytest.raises(ValueError, match=r"26 tokens long.*max_len=10.*truncation=True"):
        a.encode("abcdefghijklmnopqrstuvwxyz")
    with pytest.raises(ValueError, match="max_len=10"):
        a.num_tokens("abcdefghijklmnopqrstuvwxyz")


def test_bad_text_inputs():
    a = byte_adapter()
    with pytest.raises(ValueError, match="expected a str"):
        a.encode(b"bytes")
    with pytest.raises(ValueError, match="empty text"):
        a.encode("")
    assert byte_adapter(add_cls=True).encode("")["ids"].tolist() == [CLS_ID]


def test_config_errors():
    with pytest.raises(ValueError, match="tokenizer must be one of"):
        create_adapter("text", tokenizer="wordpiece")
    with pytest.raises(ValueError, match="at least 260"):
        create_adapter("text", tokenizer="bpe", vocab_size=100)
    with pytest.raises(ValueError, match="no setting 'vocab'.*vocab_size"):
        create_adapter("text", vocab=100)
    with pytest.raises(ValueError, match="pos_embed must be one of"):
        create_adapter("text", pos_embed="rope")
    with pytest.raises(ValueError, match="no room"):
        create_adapter("text", max_len=1, add_cls=True, add_eos=True)


# -- BPE ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fitted_bpe():
    return bpe_adapter(add_cls=True).fit(CORPUS)


def test_bpe_before_fit_is_a_clear_error():
    a = bpe_adapter()
    with pytest.raises(ValueError, match="not trained.*fit"):
        a.encode("hello")
    with pytest.raises(ValueError, match="not trained"):
        a.preprocessing_state()


def test_bpe_learns_merges_and_round_trips(fitted_bpe):
    a = fitted_bpe
    assert 260 < a.bpe.get_vocab_size() <= 400
    for i, token in enumerate(SPECIAL_TOKENS):
        assert a.bpe.token_to_id(token) == i
    n_bpe = n_bytes = 0
    for text in CORPUS[:32] + ["an unseen sentence with rare wörds ✓"]:
        ids = a.encode(text)["ids"]
        assert ids[0] == CLS_ID and int(ids.max()) < a.vocab_size and int(ids[1:].min()) >= BYTE_OFFSET
        assert a.decode(ids) == text
        n_bpe += len(ids) - 1
        n_bytes += len(text.encode("utf-8"))
    assert n_bpe < 0.7 * n_bytes  # merges compress the training-like text


def test_bpe_state_json_round_trip_gives_identical_encodings(fitted_bpe):
    state = json.loads(json.dumps(fitted_bpe.preprocessing_state()))
    assert state["tokenizer"] == "bpe" and isinstance(state["bpe"], str)
    fresh = bpe_adapter(add_cls=True)
    fresh.load_preprocessing_state(state)
    for text in CORPUS[:32] + ["an unseen sentence with rare wörds ✓"]:
        assert torch.equal(fresh.encode(text)["ids"], fitted_bpe.encode(text)["ids"])
    with pytest.raises(ValueError, match="tokenizer='bpe'.*'byte'"):
        byte_adapter().load_preprocessing_state(state)
    with pytest.raises(ValueError, match="no 'bpe' entry"):
        bpe_adapter().load_preprocessing_state({"tokenizer": "bpe"})
    assert json.loads(json.dumps(byte_adapter().preprocessing_state())) == {"tokenizer": "byte"}


def test_bpe_state_rejects_a_vocabulary_larger_than_the_embedding(fitted_bpe):
    small = create_adapter("text", dim=16, tokenizer="bpe", vocab_size=270)
    with pytest.raises(ValueError, match="embedding holds 270"):
        small.load_preprocessing_state(fitted_bpe.preprocessing_state())


# -- collate / forward --------------------------------------------------------------------
def test_collate_pads_to_multiple_and_forward_matches_reference():
    a = byte_adapter(pad_to_multiple=8, add_cls=True)
    texts = ["hello world", "hi", "a somewhat longer sentence"]
    items = [a.encode(t) for t in texts]
    batch = a.collate(items)
    lengths = [len(t.encode()) + 1 for t in texts]
    assert batch["ids"].shape == (3, 32) and batch["mask"].shape == (3, 32)
    assert batch["mask"].sum(1).tolist() == lengths
    for row, n in enumerate(lengths):
        assert (batch["ids"][row, n:] == PAD_ID).all() and not batch["mask"][row, n:].any()
    tokens, mask = a(batch)
    assert tokens.shape == (3, 32, 16) and tokens.dtype == torch.float32 and torch.equal(mask, batch["mask"])
    reference = a.embedding.weight[batch["ids"]] + a.pos_embed.table[:32]
    reference = reference * batch["mask"][..., None]
    torch.testing.assert_close(tokens, reference)
    assert (tokens[~mask] == 0).all()


def test_gradients_reach_embedding_and_positions(fitted_bpe):
    for a in (byte_adapter(), fitted_bpe):
        a.zero_grad()
        tokens, mask = a(a.collate([a.encode(t) for t in CORPUS[:4]]))
        (tokens**2).sum().backward()
        grad = a.embedding.weight.grad
        assert grad is not None and grad.abs().sum() > 0
        assert grad[PAD_ID].abs().sum() == 0  # padding_idx gets no gradient
        assert a.pos_embed.table.grad.abs().sum() > 0


def test_pos_embed_kinds():
    none = byte_adapter(pos_embed="none")
    batch = none.collate([none.encode("abc")])
    torch.testing.assert_close(none(batch)[0], none.embedding(batch["ids"]))
    sin = byte_adapter(pos_embed="sinusoidal")
    assert not any("pos" in name for name, _ in sin.named_parameters())
    out = sin(batch)[0] - sin.embedding(batch["ids"])
    torch.testing.assert_close(out[0], sinusoidal_positions(3, 16) * EMBED_INIT_STD * math.sqrt(2))


@pytest.mark.parametrize("pos_embed", ["learned", "sinusoidal"])
def test_tokens_and_positions_start_at_one_scale(pos_embed):
    """Regression: nn.Embedding's N(0, 1) beside positions of std 0.02 made positions 2% of a token."""
    torch.manual_seed(0)
    adapters = [create_adapter("text", tokenizer="byte", dim=64, max_len=512, pos_embed=pos_embed),
                create_adapter("pixels", dim=64, max_len=512, pos_embed=pos_embed)]
    for adapter in adapters:
        content = adapter.embedding.weight
        positions = adapter.pos_embed.positions(512)
        rms = lambda t: t.pow(2).mean().sqrt().item()  # noqa: E731
        assert 0.7 < rms(content) / rms(positions) < 1.4, type(adapter).__name__
        assert abs(rms(positions) - EMBED_INIT_STD) < 0.004
    assert adapters[0].embedding.weight[PAD_ID].abs().sum() == 0


def test_tokens_feed_a_backbone():
    a = byte_adapter(pad_to_multiple=4)
    backbone = create_backbone("transformer", dim=16, depth=1, heads=2)
    tokens, mask = a(a.collate([a.encode(t) for t in CORPUS[:3]]))
    pooled = backbone(tokens, mask)
    assert pooled.shape == (3, 16) and torch.isfinite(pooled).all()


# -- shared helpers -----------------------------------------------------------------------
def test_sinusoidal_positions_match_the_formula():
    table = sinusoidal_positions(50, 10)
    for pos in (0, 1, 7, 49):
        for i in range(5):
            angle = pos / 10000 ** (2 * i / 10)
            assert math.isclose(table[pos, 2 * i].item(), math.sin(angle), abs_tol=1e-6)
            assert math.isclose(table[pos, 2 * i + 1].item(), math.cos(angle), abs_tol=1e-6)
    assert sinusoidal_positions(4, 7).shape == (4, 7)


def test_position_embedding_rejects_too_many_tokens():
    pe = PositionEmbedding("learned", 8, 4)
    assert pe.positions(8).shape == (8, 4) and PositionEmbedding("none", 8, 4).positions(3) is None
    with pytest.raises(ValueError, match="9 tokens exceed the 8"):
        pe.positions(9)
    with pytest.raises(ValueError, match="kind must be one of"):
        PositionEmbedding("rope", 8, 4)


def test_kept_length():
    assert kept_length(5, 10, False, owner="x") == 5
    assert kept_length(15, 10, True, owner="x") == 10
    with pytest.raises(ValueError, match="x: input is 15 tokens long"):
        kept_length(15, 10, False, owner="x")


def test_pad_batch_generic_and_errors():
    items = [
        {"v": torch.arange(3.0)[:, None].repeat(1, 2), "mask": torch.ones(3, dtype=torch.bool)},
        {"v": torch.ones(5, 2), "mask": torch.tensor([True, False, True, True, True])},
    ]
    batch = pad_batch(items, pad_to_multiple=4, pad_values={"v": -1.0})
    assert batch["v"].shape == (2, 8, 2) and batch["mask"].shape == (2, 8)
    np.testing.assert_array_equal(batch["v"][0, :, 0].numpy(), [0, 1, 2, -1, -1, -1, -1, -1])
    assert batch["mask"].tolist()[1] == [True, False, True, True, True, False, False, False]
    with pytest.raises(ValueError, match="empty list"):
        pad_batch([])
    with pytest.raises(ValueError, match="keys"):
        pad_batch([items[0], {"w": items[1]["v"], "mask": items[1]["mask"]}])
    with pytest.raises(ValueError, match="different lengths"):
        pad_batch([{"v": torch.ones(2), "mask": torch.ones(3, dtype=torch.bool)}])
    with pytest.raises(ValueError, match="'mask' entry"):
        pad_batch([{"v": torch.ones(2)}])


def test_word_tokenizer_learns_listops_vocabulary_and_round_trips():
    import json

    from modalities.datasets.listops import generate_listops, listops_tokens
    from modalities.text import UNK_ID

    samples = generate_listops(8, seed=3, min_len=20, max_len=120, max_depth=4, max_args=4)
    adapter = create_adapter("text", dim=16, tokenizer="word", vocab_size=32, min_frequency=1, max_len=256, ignore_words=["(", ")"])
    adapter.fit([x for x, _ in samples])
    expr = samples[0][0]
    ids = adapter.encode(expr)["ids"]
    assert len(ids) == len(listops_tokens(expr)) < len(expr.split())
    assert adapter.decode(ids) == " ".join(listops_tokens(expr))
    assert int(adapter.encode("[MAX 1 never_seen ]")["ids"][2]) == UNK_ID
    restored = create_adapter("text", dim=16, tokenizer="word", vocab_size=32, min_frequency=1, max_len=256, ignore_words=["(", ")"])
    restored.load_preprocessing_state(json.loads(json.dumps(adapter.preprocessing_state())))
    assert torch.equal(restored.encode(expr)["ids"], ids)
    with pytest.raises(ValueError, match="not trained"):
        create_adapter("text", dim=16, tokenizer="word").encode("a b")
    with pytest.raises(ValueError, match="raise vocab_size"):
        restored.load_preprocessing_state({"tokenizer": "word", "words": [str(i) for i in range(40)]})


@pytest.mark.parametrize("tokenizer", ["byte", "word"])
@pytest.mark.parametrize("add_cls", [False, True])
def test_num_tokens_counts_what_encode_emits(tokenizer, add_cls):
    """``num_tokens`` counts without building ids (bucketing measures every training text); it must agree."""
    adapter = create_adapter("text", dim=16, tokenizer=tokenizer, vocab_size=32, min_frequency=1, max_len=40,
                             ignore_words=["(", ")"], add_cls=add_cls, add_eos=True)
    adapter.fit(["( ( [MAX 2 ) 3 ) ] )", "( [MIN 1 ) ]"])
    texts = ["( ( [MAX 2 ) 3 ) ] )", "[SM 7 unseen  ( ( 4 ]", "( ( ( x", "é ( )", " ".join(["9"] * 60)]  # the last is truncated
    for text in texts:
        assert adapter.num_tokens(text) == len(adapter.encode(text)["ids"]), text
    with pytest.raises(ValueError, match="not trained"):
        create_adapter("text", dim=16, tokenizer="word").num_tokens("a b")
