"""Masked-token self-pretraining: every backbone, loss going down, fine-tuning from the weights, clear errors."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from maelre import create_backbone, list_backbones
from maelre.cli import main
from maelre.engine.checkpoint import load_weights, resolve_checkpoint
from maelre.engine.fit import build_model
from maelre.engine.pretrain import load_pretrained
from maelre.pretrain import IGNORE, MaskedTokenModel, pretraining_config, state_index
from modalities import create_adapter
from modalities.datasets.listops import generate_listops

pytestmark = pytest.mark.usefixtures("torch_single_thread")

TINY = {"dim": 16, "depth": 2, "heads": 2, "mlp_ratio": 2.0}
OWN = {"ecp": {"segment_size": 8}, "perceiver_ar": {"num_latents": 8}, "masformer": {"window": 4}}
RECIPE = {
    "name": "tiny_listops",
    "data": {"dataset": {"name": "listops", "n_train": 48, "n_val": 16, "n_test": 16, "min_len": 10, "max_len": 40, "max_args": 4},
             "adapter": {"name": "text", "tokenizer": "word", "vocab_size": 32, "ignore_words": ["(", ")"], "max_len": 48},
             "batch_size": 8},
    "model": {"backbone": "transformer", **TINY},
    "optimizer": {"lr": 0.01},
    "schedule": {"kind": "constant"},
    "trainer": {"max_epochs": 10, "enable_progress_bar": False, "accelerator": "cpu"},
}


def _text_batch(backbone: str) -> tuple[object, dict]:
    texts = [t for t, _ in generate_listops(4, seed=0, min_len=10, max_len=40, max_args=4)]
    multiple = 8 if backbone == "ecp" else 1
    adapter = create_adapter("text", dim=16, tokenizer="word", vocab_size=32, ignore_words=("(", ")"), max_len=48,
                             pad_to_multiple=multiple).fit(texts)
    return adapter, adapter.collate([adapter.encode(t) for t in texts])


@pytest.mark.parametrize("name", list_backbones())
def test_every_backbone_predicts_the_masked_ids(name):
    adapter, batch = _text_batch(name)
    backbone = create_backbone(name, **pretraining_config(name, {**TINY, **OWN.get(name, {})}))
    model = MaskedTokenModel(adapter, backbone, mask_ratio=0.3)
    logits, targets = model(batch)
    slots = math.ceil(0.3 * batch["ids"].shape[1])
    assert targets.shape == (batch["ids"].shape[0], slots) and logits.shape == (*targets.shape, adapter.num_token_ids)
    assert ((targets != IGNORE).sum(dim=1) >= 1).all()  # every row predicts something
    logits.float().logsumexp(-1).mean().backward()
    assert model.mask_token.grad is not None and torch.isfinite(model.mask_token.grad).all()
    model.eval()
    _, targets = model(batch)
    real = batch["mask"]
    index = state_index(backbone, real)
    positions, used = model.mask_slots(real, index)
    has_state = torch.zeros_like(real).scatter(1, index, True)
    predicted = used & has_state.gather(1, positions)
    assert torch.equal(targets != IGNORE, predicted)  # exactly the masked tokens that keep a final state
    assert torch.equal(targets[predicted], batch["ids"].gather(1, positions)[predicted])  # with their true ids
    masked = model.choose_masked(real, index)
    assert not (masked & ~real).any()  # never padding
    expected = (real.sum(dim=1) * 0.3).round().clamp(min=1)
    assert torch.equal(masked.sum(dim=1), expected.long())  # round(ratio * real tokens) per row


def test_rgb_pixels_predict_every_channel():
    images = [np.random.default_rng(i).integers(0, 256, (4, 4, 3), dtype=np.uint8) for i in range(2)]
    adapter = create_adapter("pixels", dim=16, channels="rgb", max_len=16)
    batch = adapter.collate([adapter.encode(x) for x in images])
    model = MaskedTokenModel(adapter, create_backbone("transformer", **TINY), mask_ratio=0.5).eval()
    logits, targets = model(batch)
    positions, used = model.mask_slots(batch["mask"], state_index(model.backbone, batch["mask"]))
    assert logits.shape == (2, 3 * 8, 256) and targets.shape == (2, 3 * 8)
    assert torch.equal(targets.view(2, 8, 3)[used], batch["pixels"].gather(1, positions[..., None].expand(-1, -1, 3))[used])


@pytest.mark.parametrize("name", list_backbones())
def test_masked_token_model_compiles_without_graph_breaks(name):
    """Fixed slot shapes: one graph per input shape. Boolean indexing broke it, and a CUDA graph was recorded per mask count."""
    adapter, batch = _text_batch(name)
    model = MaskedTokenModel(adapter, create_backbone(name, **pretraining_config(name, {**TINY, **OWN.get(name, {})})), mask_ratio=0.3)
    torch._dynamo.reset()
    explained = torch._dynamo.explain(model)(batch)
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1


def test_pretrain_loss_averages_over_the_used_slots_only():
    from maelre.engine.pretrain import PretrainTask
    from maelre.engine.task import OptimConfig

    adapter, _ = _text_batch("transformer")
    task = PretrainTask(MaskedTokenModel(adapter, create_backbone("transformer", **TINY), 0.3), OptimConfig(), num_classes=5)
    logits = torch.randn(4, 5)
    labels = torch.tensor([1, IGNORE, 3, IGNORE])
    total, norm = task._loss_terms(logits, labels)
    assert norm.item() == 2 and torch.allclose(total / norm, torch.nn.functional.cross_entropy(logits[[0, 2]], labels[[0, 2]]))
    task.val_metrics.update(logits, labels)
    expected = (logits[[0, 2]].argmax(-1) == labels[[0, 2]]).float().mean()
    assert torch.allclose(task.val_metrics["val/acc"].compute(), expected)  # the ignored slots do not count


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("pretrain")
    recipe = folder / "tiny_listops.yaml"
    recipe.write_text(yaml.safe_dump({**RECIPE, "output": {"run_dir": str(folder / "runs")}}))
    assert main(["pretrain", str(recipe), "--no-progress", "--set", "model.backbone=maelre"]) == 0
    return recipe, folder / "runs" / "pretrain" / "version_0"


def test_pretraining_loss_decreases(pretrained):
    _, run = pretrained
    results = json.loads((run / "results.json").read_text())
    losses = [row["train/loss"] for row in results["history"]]
    assert results["mask_ratio"] == 0.1 and results["global_step"] == 60 and len(losses) == 10
    assert losses[-1] < losses[0] - 0.5, losses  # from about ln(32); the token frequencies alone are worth more than 0.5
    assert 0.0 < results["metrics"]["val/best_masked_acc"] <= 1.0


def test_finetuning_starts_from_the_pretrained_weights(pretrained, tmp_path):
    recipe, run = pretrained
    saved = load_weights(resolve_checkpoint(run) / "model.safetensors")
    out = tmp_path / "finetune"
    # a learning rate of 1e-12 leaves the weights where they started, so they can be compared after the run
    assert main(["fit", str(recipe), "--no-progress", "--run-dir", str(out), "--init-from", str(run), "--set", "model.backbone=maelre",
                 "--set", "optimizer.lr=1.0e-12", "--set", "trainer.max_epochs=1"]) == 0
    tuned = load_weights(resolve_checkpoint(out) / "model.safetensors")
    shared = [k for k in tuned if k.startswith(("adapter.", "backbone."))]
    assert shared and all(torch.allclose(tuned[k], saved[k], atol=1e-6) for k in shared)
    assert tuned["head.fc.weight"].shape == (10, 16)  # a new 10-class head, not the 32-token one of pretraining
    assert json.loads((out / "results.json").read_text())["initialised_from"] == str(resolve_checkpoint(run))


def test_mismatched_checkpoint_is_a_clear_error(pretrained, capsys):
    _, run = pretrained
    assert main(["test", str(run)]) == 2
    assert "masked-token pretraining model, not a classifier" in capsys.readouterr().err
    adapter, _ = _text_batch("maelre")
    wider = build_model(adapter, "maelre", {**TINY, "mlp_ratio": 4.0}, num_classes=10)
    with pytest.raises(ValueError, match=r"backbone\.blocks\.0\.mlp\.fc1\.weight has shape \(32, 16\) there but \(64, 16\) here"):
        load_pretrained(wider, run)
    deeper = build_model(adapter, "maelre", {**TINY, "depth": 3}, num_classes=10)
    with pytest.raises(ValueError, match="the checkpoint lacks"):
        load_pretrained(deeper, run)


def test_pretraining_needs_token_ids(tmp_path, capsys):
    recipe = tmp_path / "ts.yaml"
    recipe.write_text(yaml.safe_dump({
        "data": {"dataset": {"name": "italypowerdemand"}, "adapter": {"name": "timeseries", "max_len": 32}, "batch_size": 16},
        "model": {"backbone": "transformer", **TINY},
        "trainer": {"max_epochs": 1, "accelerator": "cpu"},
        "output": {"run_dir": str(tmp_path / "runs")},
    }))
    assert main(["pretrain", str(recipe), "--no-progress"]) == 2
    assert "has no token ids" in capsys.readouterr().err


def test_pretraining_resumes_with_a_larger_budget(pretrained, tmp_path):
    recipe, run = pretrained
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    assert main(["pretrain", str(recipe), "--no-progress", "--run-dir", str(copy), "--resume", "--set", "model.backbone=maelre",
                 "--set", "trainer.max_epochs=11"]) == 0
    results = json.loads((copy / "results.json").read_text())
    assert results["global_step"] == 66 and results["resumed_from"].endswith("step-0000060")


def test_a_resumed_pretraining_keeps_the_backbone_it_started_with(tmp_path, monkeypatch):
    """A library default that changed between two calls (here MAELRE's value_conv) must not change the resumed model."""
    from maelre.recipe import Recipe

    recipe = tmp_path / "tiny_listops.yaml"
    recipe.write_text(yaml.safe_dump({**RECIPE, "output": {"run_dir": str(tmp_path / "runs")}}))
    run = tmp_path / "run"
    common = [str(recipe), "--no-progress", "--run-dir", str(run), "--set", "model.backbone=maelre"]
    with monkeypatch.context() as old_library:  # the first call: a library whose default had no value convolution
        kwargs = Recipe.backbone_kwargs
        old_library.setattr(Recipe, "backbone_kwargs", lambda self: {**kwargs(self), "value_conv": None})
        assert main(["pretrain", *common, "--set", "trainer.max_epochs=1"]) == 0
    assert main(["pretrain", *common, "--resume", "--set", "trainer.max_epochs=2"]) == 0
    final = resolve_checkpoint(run)
    assert json.loads((run / "results.json").read_text())["global_step"] == 12
    assert json.loads((final / "model.json").read_text())["backbone_config"]["value_conv"] is None
    assert not any("value_conv" in key for key in load_weights(final / "model.safetensors"))

