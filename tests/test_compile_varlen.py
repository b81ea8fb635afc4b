"""``trainer.compile`` on variable-length inputs: batches padded to a few length buckets.

A compiled fit pads every batch's sequence length up to one of ``compile_length_buckets``
lengths (``adapter.bucket_lengths``), so it compiles at most ``2 * k`` static graphs, and
raises dynamo's recompile limit to that count for the fit only. Graphs are counted as in
``test_compile_fit.py`` (dynamo with the ``aot_eager`` backend).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch._dynamo
import torch._dynamo.config as dynamo_config
from torch._dynamo.utils import counters

from maelre.engine import OptimConfig, TrainerConfig, build_model, fit_classifier, prepare_adapter
from maelre.engine.data import BatchCollator, make_dataloader
from modalities.common import length_buckets, pad_batch
from test_compile_fit import compile_counter  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("torch_single_thread")

MAX_LEN = 64


def text_samples(n: int, seed: int = 0) -> list[tuple[str, int]]:
    """Texts of 3-64 bytes; the class is the letter they are mostly made of (learnable in a few steps)."""
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n):
        label = i % 3
        length = int(rng.integers(3, MAX_LEN + 1))
        letters = rng.choice(list("abc"), size=length, p=np.roll([0.8, 0.1, 0.1], label))
        samples.append(("".join(letters), label))
    return samples


def _model(train, backbone: str = "transformer", pad_to_multiple: int = 1):
    adapter = prepare_adapter("text", {"dim": 16, "tokenizer": "byte", "max_len": MAX_LEN, "pos_embed": "sinusoidal", "pad_to_multiple": pad_to_multiple}, train)
    extra = {"maelre": {"depth": 2, "rope": True}, "ecp": {"segment_size": 16}}.get(backbone, {})
    config = {"depth": 1, "heads": 2, **extra}
    return build_model(adapter, backbone, config, num_classes=3)


def _fit(train, val, compile: bool, buckets: int = 4, backbone: str = "transformer"):
    torch.manual_seed(0)
    model = _model(train, backbone)
    cfg = TrainerConfig(max_epochs=2, enable_progress_bar=False, accelerator="cpu", compile=compile, compile_length_buckets=buckets)
    return fit_classifier(model, train, val, cfg, OptimConfig(lr=3e-3), batch_size=8, eval_batch_size=6, bucket_by_length=True)


def test_length_buckets_are_at_most_count_even_steps_kept_to_the_multiple():
    assert length_buckets(4000, 1, 8) == (500, 1000, 1500, 2000, 2500, 3000, 3500, 4000)
    assert length_buckets(4000, 128, 8) == (512, 1024, 1536, 2048, 2560, 3072, 3584, 4096)  # ECP, segment_size 256
    assert length_buckets(2048, 1, 8) == tuple(range(256, 2049, 256))  # ListOps
    assert length_buckets(10, 4, 8) == (4, 8, 12)  # fewer lengths than asked when the multiple is coarse
    assert length_buckets(64, 1, 1) == (64,)
    for top, multiple, count in [(4000, 1, 8), (1000, 7, 5), (33, 2, 3), (100, 1, 100)]:
        got = length_buckets(top, multiple, count)
        assert len(got) <= count and all(b % multiple == 0 for b in got) and got[-1] == -(-top // multiple) * multiple


def test_bucketed_padding_masks_every_padded_position():
    adapter = _model(text_samples(4)).adapter
    buckets = adapter.bucket_lengths(4)
    assert buckets == (16, 32, 48, 64)
    for n_items, seed in [(1, 0), (5, 1), (8, 2)]:
        texts = [t for t, _ in text_samples(n_items, seed)]
        items = [adapter.encode(t) for t in texts]
        batch, _ = BatchCollator(adapter, buckets=buckets)([(item, 0) for item in items])
        plain = pad_batch(items, pad_values=adapter.pad_values)
        length = batch["mask"].shape[1]
        assert length in buckets and length >= plain["mask"].shape[1] > length - 16
        assert batch["mask"].sum(1).tolist() == [len(t) for t in texts]  # exactly the real tokens
        assert (batch["ids"][~batch["mask"]] == 0).all()  # padding is PAD
        torch.testing.assert_close(batch["ids"][:, : plain["ids"].shape[1]], plain["ids"])


@pytest.mark.parametrize("backbone", ["transformer", "maelre", "ecp", "perceiver_ar"])
def test_backbones_give_the_same_logits_for_bucket_padded_batches(backbone):
    """Mask-respecting backbones: extra (masked) padding up to a bucket leaves the logits alone."""
    train = text_samples(6)
    torch.manual_seed(0)
    model = _model(train, backbone, pad_to_multiple=8).eval()
    adapter = model.adapter
    buckets = adapter.bucket_lengths(3)
    assert all(b % adapter.config.pad_to_multiple == 0 for b in buckets)
    items = [(adapter.encode(t), y) for t, y in train]
    plain, _ = BatchCollator(adapter)(items)
    padded, _ = BatchCollator(adapter, buckets=buckets)(items)
    assert padded["mask"].shape[1] in buckets
    with torch.no_grad():
        torch.testing.assert_close(model(padded), model(plain), atol=1e-5, rtol=1e-5)


def _is_dynamic(graph: torch.fx.GraphModule) -> bool:
    """Whether a graph has an input with a symbolic size (a dynamic-shape graph)."""
    from torch.fx.experimental.symbolic_shapes import free_symbols

    values = [node.meta.get("example_value") for node in graph.graph.nodes if node.op == "placeholder"]
    return any(isinstance(v, torch.Tensor) and free_symbols(v) for v in values)


@pytest.mark.parametrize(("backbone", "backend"), [("transformer", "aot_eager"), ("maelre", "eager")])
def test_compiled_variable_length_fit_compiles_at_most_two_graphs_per_bucket(compile_counter, backbone, backend):
    """Before, the second padded length made dynamo compile a dynamic-length graph (this fit:
    1 static + 2 dynamic graphs); now each (mode, bucket) is one static graph, MAELRE's too
    (its merge-plan table is built at the longest bucket before the first trace, never grown
    under a graph). The recompile limit is lowered to 2 here so that the fit must raise it
    (past it dynamo would run the model eagerly) and restore it afterwards."""
    counter = compile_counter(backend)
    train = text_samples(32)
    val = sorted(text_samples(12, seed=1), key=lambda s: len(s[0]))  # evaluation keeps this order: batches of several lengths
    loader = make_dataloader(train, _model(train).adapter, 8, shuffle=True, drop_last=True, bucket_by_length=True, length_buckets=4)
    seen = set()
    for epoch in range(2):
        loader.batch_sampler.set_epoch(epoch)
        seen |= {batch["mask"].shape[1] for batch, _ in loader}
    with dynamo_config.patch(recompile_limit=2):  # (monkeypatch's undo breaks the config module's alias)
        result = _fit(train, val, compile=True, backbone=backbone)
        assert dynamo_config.recompile_limit == 2  # restored
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert not any(_is_dynamic(graph) for graph in counter.graphs)
    assert 2 < counter.frame_count <= 2 * 4
    assert len(seen) >= 3 and counter.frame_count >= len(seen) + 2  # every training length compiled (none ran eagerly), and evaluation's
    assert len(result.history) == 2 and all("val/acc" in row for row in result.history)


def test_compiled_and_eager_variable_length_fits_give_the_same_metrics(compile_counter):
    compile_counter("aot_eager")
    train, val = text_samples(32), text_samples(10, seed=1)
    eager, compiled = _fit(train, val, compile=False), _fit(train, val, compile=True)
    assert len(compiled.history) == len(eager.history) == 2
    for got, want in zip(compiled.history, eager.history):
        assert got["val/acc"] == want["val/acc"] and got["val/f1"] == want["val/f1"]
        for key in ("train/loss", "val/loss"):
            assert got[key] == pytest.approx(want[key], abs=1e-4)
