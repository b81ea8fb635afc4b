"""benchmarks/sdpa_backends.py on CPU: every variant and backend gets a time or the reason it has none."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.usefixtures("torch_single_thread")


def test_every_case_is_timed_or_says_why_and_exact_cases_match_the_math_backend(benchmark_script, tmp_path):
    sdpa = benchmark_script("sdpa_backends")
    data = tmp_path / "imdb.npz"
    np.savez(data, lengths=np.array([5, 20, 64, 300], dtype=np.uint16))  # 300 is cut to the 64 positions
    out = tmp_path / "sdpa.json"
    assert sdpa.main(["--device", "cpu", "--batch", "3", "--seq-len", "64", "--repeats", "2", "--data", str(data), "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    rows = {(r["layout"], r["variant"], r["backend"]): r for r in doc["rows"]}
    assert len(rows) == 2 * (3 * 5 + 1) + 4 and doc["meta"]["lengths"]["max"] <= 64
    for backend in ("default", "cudnn", "efficient", "exact_attention"):  # 5 distinct lengths 24 apart do not fit under 64
        assert rows[("contiguous", "new_shapes", backend)]["status"] == "skipped" and "too short" in rows[("contiguous", "new_shapes", backend)]["error"]
    for r in rows.values():
        assert r["status"] in ("ok", "refused", "skipped") and (r["status"] == "ok") == ("median_ms" in r) and (r["status"] == "ok" or r["error"])
    for layout in ("contiguous", "model"):
        assert rows[(layout, "bias_dropout", "math")]["status"] == "ok"
        assert rows[(layout, "bias_dropout", "flash")]["status"] == "refused"  # no fused kernel takes dropout on CPU
        for variant in ("bias", "no_mask"):
            assert rows[(layout, variant, "default")]["max_abs_diff"] < 1e-5 and rows[(layout, variant, "math")]["max_abs_diff"] == 0.0
        assert rows[(layout, "varlen", "flash")]["status"] == "skipped" and "CUDA" in rows[(layout, "varlen", "flash")]["error"]


def test_the_model_layout_is_what_attention_hands_sdpa(benchmark_script):
    import torch

    from maelre.layers.attention import Attention

    sdpa = benchmark_script("sdpa_backends")
    leaves, (q, k, v) = sdpa.attention_inputs("model", (2, 4, 16, 8), torch.device("cpu"), torch.float32)
    attn = Attention(32, 4)
    mq, mk, mv = attn.qkv(torch.randn(2, 16, 32))
    for ours, theirs in zip((q, k, v), (mq, mk, mv)):
        assert ours.shape == theirs.shape and ours.stride() == theirs.stride()
    assert [t.shape for t in leaves] == [(2, 16, 96)] and not q.is_contiguous()


def test_an_unknown_layout_is_a_clear_error(benchmark_script, tmp_path, capsys):
    sdpa = benchmark_script("sdpa_backends")
    with pytest.raises(SystemExit):
        sdpa.main(["--device", "cpu", "--layouts", "contiguous,weird", "--out", str(tmp_path / "x.json")])
    assert "weird" in capsys.readouterr().err


def test_a_missing_length_file_is_a_clear_error(benchmark_script, tmp_path, capsys):
    sdpa = benchmark_script("sdpa_backends")
    with pytest.raises(SystemExit):
        sdpa.main(["--device", "cpu", "--data", str(tmp_path / "nope.npz"), "--out", str(tmp_path / "x.json")])
    assert "make_compact_data.py" in capsys.readouterr().err


def test_new_shapes_give_every_call_a_length_no_call_had(benchmark_script, tmp_path):
    sdpa = benchmark_script("sdpa_backends")
    out = tmp_path / "sdpa.json"
    assert sdpa.main(["--device", "cpu", "--batch", "2", "--seq-len", "256", "--repeats", "2", "--layouts", "contiguous", "--out", str(out)]) == 0
    rows = [r for r in json.loads(out.read_text())["rows"] if r["variant"] == "new_shapes"]
    assert [r["backend"] for r in rows] == ["default", "cudnn", "efficient", "exact_attention"]
    assert rows[0]["status"] == "ok" and rows[0]["median_ms"] > 0  # the CPU's default (math) takes them
    assert rows[-1]["status"] == "ok" and rows[-1]["median_ms"] > 0  # and the library's call
    spans = [range(r["lengths"][1], r["lengths"][0] + 1) for r in rows if "lengths" in r]
    assert all(s.start >= 1 and len(s) > 1 for s in spans)
    assert sdpa.main(["--device", "cpu", "--batch", "2", "--seq-len", "64", "--repeats", "2", "--no-new-shapes", "--out", str(out)]) == 0
    assert not [r for r in json.loads(out.read_text())["rows"] if r["variant"] == "new_shapes"]
