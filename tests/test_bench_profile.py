"""The step profiler: operator counts, saved-activation accounting and the compile check, on the CPU."""
from __future__ import annotations

import json

import pytest
import torch

from maelre.bench import profile as prof
from maelre.bench.efficiency import BenchConfig


def tiny(**kwargs) -> BenchConfig:
    base = {"backbones": ["maelre", "transformer"], "seq_lens": [64], "modes": ["train"], "dim": 16, "depth": 2, "heads": 2,
            "tokens_per_batch": 128, "dtype": "fp32", "device": "cpu", "warmup": 1, "repeats": 1}  # fmt: skip
    return BenchConfig(**{**base, **kwargs})


def test_profile_case_counts_operators(torch_single_thread):
    case = prof.profile_case("maelre", 64, "train", tiny(), steps=1)
    assert case["batch"] == 2 and case["wall_ms"] > 0
    assert case["aten_ops"] > 100  # a train step of two blocks dispatches hundreds of operators
    assert case["kernels"] == 0 and case["gpu_busy"] is None  # no GPU kernels on the CPU
    assert case["top_ops_by_calls"][0]["calls"] >= case["top_ops_by_calls"][-1]["calls"]


def test_profile_case_by_source_attributes_every_call(torch_single_thread):
    case = prof.profile_case("maelre", 64, "train", tiny(), steps=1, by_source=True)
    sources = {s["source"]: s["calls"] for s in case["top_sources"]}
    assert "optimizer" in sources and any(k.startswith("backward: ") for k in sources)
    assert any(k.startswith("layers/merge.py: ") for k in sources)  # forward calls land on the maelre function that made them
    assert 0 < case["cpu_scalar_casts"] < case["aten_ops"]
    assert 0 < case["kernel_ops"]["float32"] <= sum(case["kernel_ops"].values()) < case["aten_ops"]  # no views, no scalar casts
    assert "top_sources" not in prof.profile_case("transformer", 64, "train", tiny(), steps=1)


def test_kernel_ops_skip_views_and_count_by_dtype():
    x = torch.randn(4, 4)
    counts = prof.count_kernel_ops(lambda: (x.view(16).t().bfloat16() * 2).sum())  # view and t launch nothing
    assert counts == {"bfloat16": 3}  # the cast, the multiply, the sum


def test_saved_activations_shrink_with_merging(torch_single_thread):
    config = tiny(backbone_configs={"maelre": {"switch_threshold": 64}})  # 2 blocks reach 64 of 256 tokens, not dim=16
    maelre = prof.saved_activations("maelre", 256, config)
    full = prof.saved_activations("transformer", 256, config)
    assert 0 < maelre["saved_mib"] < full["saved_mib"]
    assert abs(sum(s["mib"] for s in full["top_sources"]) - full["saved_mib"]) < 1e-6  # every storage attributed
    no_merge = prof.saved_activations("maelre", 256, tiny(backbone_configs={"maelre": {"merge_schedule": "fraction", "merge_fraction": 0.0}}))
    assert no_merge["saved_mib"] > maelre["saved_mib"]


def test_main_writes_json_and_markdown(tmp_path, torch_single_thread):
    out, table = tmp_path / "p.json", tmp_path / "p.md"
    argv = ["--backbones", "transformer", "--seq-lens", "32", "--tokens-per-batch", "64", "--dim", "16", "--depth", "1",
            "--heads", "2", "--dtype", "fp32", "--device", "cpu", "--steps", "1", "--saved", "--saved-len", "32", "--by-source",
            "--out", str(out), "--table", str(table)]  # fmt: skip
    assert prof.main(argv) == 0
    doc = json.loads(out.read_text())
    assert [c["backbone"] for c in doc["cases"]] == ["transformer"] and doc["saved"][0]["saved_mib"] > 0
    text = table.read_text()
    assert "aten ops/step" in text and "Activations saved for backward" in text and "by source" in text
    assert "Kernel-launching operators per step" in text


def test_main_profiles_the_zero_cost_merge_twin(tmp_path, torch_single_thread):
    out = tmp_path / "p.json"
    argv = ["--backbones", "maelre,maelre.twin", "--seq-lens", "64", "--tokens-per-batch", "128", "--dim", "16", "--depth", "2",
            "--heads", "2", "--dtype", "fp32", "--device", "cpu", "--steps", "1", "--saved", "--saved-len", "64", "--out", str(out)]  # fmt: skip
    assert prof.main(argv) == 0
    doc = json.loads(out.read_text())
    assert [c["backbone"] for c in doc["cases"]] == ["maelre", "maelre.twin"] and len(doc["saved"]) == 2
    maelre, twin = doc["cases"]
    assert twin["aten_ops"] < maelre["aten_ops"]  # no matching, no scatter


@pytest.mark.slow
def test_compile_check_agrees_with_eager(torch_single_thread):
    check = prof.check_compile("transformer", tiny(depth=1), seq_len=32)
    assert check["max_abs_diff"] < 1e-4
