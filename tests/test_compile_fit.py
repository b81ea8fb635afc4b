"""``trainer.compile``: a compiled fit compiles a fixed, small number of graphs and trains like eager.

The compiler is dynamo with the ``aot_eager`` backend (forward and backward graphs traced as
Inductor would get them, no code generation), or plain ``eager`` for MAELRE (``aot_eager``
runs ``elu_backward`` with other strides than it traced in torch 2.11; Inductor is fine).
Graph counts are dynamo's, so they are those of an Inductor run.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch._dynamo
from torch._dynamo.testing import CompileCounterWithBackend
from torch._dynamo.utils import counters

from maelre.engine import OptimConfig, TrainerConfig, build_model, fit_classifier, prepare_adapter
from maelre.engine.data import BatchCollator, ResumableBatchSampler, repeat_last_rows

pytestmark = pytest.mark.usefixtures("torch_single_thread")


def image_samples(n: int, side: int = 8, seed: int = 0) -> list[tuple[np.ndarray, int]]:
    """Gray images whose brightness gives the class (learnable in a few steps)."""
    rng = np.random.default_rng(seed)
    return [((rng.integers(0, 256, (side, side)) // (1 + i % 3)).astype(np.uint8), i % 3) for i in range(n)]


def tiny_model(train, backbone: str):
    adapter = prepare_adapter("pixels", {"dim": 16, "channels": "gray", "max_len": 64, "img_size": 8, "pos_embed": "none"}, train)
    extra = {"maelre": {"rope": True, "depth": 2}, "ecp": {"segment_size": 16}, "perceiver_ar": {"num_latents": 16}}.get(backbone, {})
    return build_model(adapter, backbone, {"depth": 1, "heads": 2, **extra}, num_classes=3)


@pytest.fixture
def compile_counter(monkeypatch):
    """``counter(backend)``: torch.compile as the task calls it, counting the graphs dynamo compiles."""
    def make(backend: str) -> CompileCounterWithBackend:
        torch._dynamo.reset()
        counters.clear()
        counter = CompileCounterWithBackend(backend)
        compile_ = torch.compile
        monkeypatch.setattr(torch, "compile", lambda model, mode=None, **kw: compile_(model, backend=counter, **kw))
        return counter

    yield make
    torch._dynamo.reset()


def _fit(train, val, backbone: str, compile: bool, on_device: bool = False):
    torch.manual_seed(0)
    model = tiny_model(train, backbone)
    cfg = TrainerConfig(max_epochs=3, enable_progress_bar=False, accelerator="cpu", compile=compile)
    return fit_classifier(model, train, val, cfg, OptimConfig(lr=3e-3), batch_size=8, eval_batch_size=6, on_device=on_device)


@pytest.mark.parametrize(("backbone", "backend", "on_device"), [("transformer", "aot_eager", False), ("transformer", "aot_eager", True), ("maelre", "eager", False),
                                                             ("ecp", "aot_eager", False), ("perceiver_ar", "aot_eager", False)])
def test_compiled_fit_compiles_one_graph_for_training_and_one_for_evaluation(compile_counter, backbone, backend, on_device):
    """3 epochs, each with a short last training batch (30 = 3 * 8 + 6) and validation ending
    in a short batch (10 = 6 + 4). Before: the short batch recompiled training (then with a
    dynamic batch size) and evaluation compiled a dynamic-batch graph: 3 graphs; MAELRE broke
    its graph at every merge and linear attention and recompiled those pieces per token count."""
    counter = compile_counter(backend)
    train, val = image_samples(30), image_samples(10, seed=1)
    torch._dynamo.utils.warn_once_cache.clear()  # Dynamo warns once per process; an earlier test may have had it
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = _fit(train, val, backbone, compile=True, on_device=on_device)
    assert not [w for w in caught if "lru_cache" in str(w.message)]  # MAELRE's plan caches are traced quietly
    assert counter.frame_count == 2  # training (grad mode) and evaluation (no grad, eval mode)
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert result.throughput["samples_seen"] == 3 * 24  # compiled: the short last batch is dropped every epoch
    assert len(result.history) == 3 and all("val/acc" in row for row in result.history)


def test_compiled_and_eager_fits_give_the_same_metrics(compile_counter):
    """No short training batch (32 = 4 * 8), so both fits see the same batches; validation's short
    last batch (10 = 6 + 4) is padded when compiled and must count each sample once."""
    compile_counter("aot_eager")
    train, val = image_samples(32), image_samples(10, seed=1)
    eager, compiled = _fit(train, val, "transformer", compile=False), _fit(train, val, "transformer", compile=True)
    assert len(compiled.history) == len(eager.history) == 3
    for got, want in zip(compiled.history, eager.history):
        assert got["val/acc"] == want["val/acc"] and got["val/f1"] == want["val/f1"]
        for key in ("train/loss", "val/loss"):
            assert got[key] == pytest.approx(want[key], abs=1e-4)
    assert eager.throughput["samples_seen"] == compiled.throughput["samples_seen"] == 3 * 32


def test_eager_fit_keeps_its_short_last_batch():
    train = image_samples(30)
    result = _fit(train, None, "transformer", compile=False)
    assert result.throughput["samples_seen"] == 3 * 30


@pytest.mark.parametrize("config", [{}, {"match_window": None, "pool": "cls"}])
def test_maelre_compiles_as_one_graph_and_matches_eager(config):
    """Merging, the merge plan's table and linear attention (RoPE) trace without a graph break."""
    torch._dynamo.reset()
    train = image_samples(12)
    torch.manual_seed(0)
    adapter = prepare_adapter("pixels", {"dim": 16, "channels": "gray", "max_len": 64, "img_size": 8, "pos_embed": "none"}, train)
    model = build_model(adapter, "maelre", {"depth": 3, "heads": 2, "rope": True, **config}, num_classes=3)
    batch, labels = BatchCollator(adapter)([(adapter.encode(x), y) for x, y in train])
    batch["mask"][3, 40:] = False  # a padded row
    compiled = torch.compile(model, backend="eager", fullgraph=True)  # fullgraph: a graph break is an error
    results = []
    for forward in (model, compiled):
        model.zero_grad()
        logits = forward(batch)
        torch.nn.functional.cross_entropy(logits, labels).backward()
        results.append((logits.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    (want, want_grads), (got, got_grads) = results
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    for g, w in zip(got_grads, want_grads):
        torch.testing.assert_close(g, w, atol=1e-6, rtol=1e-5)
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # the matchers' custom ops cast as autocast does
        torch.testing.assert_close(compiled(batch), model(batch))
    torch._dynamo.reset()


def test_drop_last_keeps_a_lone_short_batch_and_padding_repeats_the_last_sample():
    assert [len(b) for b in ResumableBatchSampler(10, 4, shuffle=False, drop_last=True)] == [4, 4]
    lone = ResumableBatchSampler(3, 4, shuffle=False, drop_last=True)
    assert [len(b) for b in lone] == [3] and len(lone) == 1  # fewer samples than a batch: one batch of all
    batch = {"x": torch.arange(6).view(3, 2), "mask": torch.tensor([True, True, False])}
    padded = repeat_last_rows({"left": batch, "right": batch}, 5)
    assert padded["left"]["x"].tolist() == [[0, 1], [2, 3], [4, 5], [4, 5], [4, 5]]
    assert padded["right"]["mask"].tolist() == [True, True, False, False, False]
    assert repeat_last_rows(batch, 3)["x"] is batch["x"]
