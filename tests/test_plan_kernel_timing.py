"""benchmarks/plan_kernel_timing.py: its arguments, MAELRE's merge schedule it times, and its refusal without a GPU."""
from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

_ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("plan_kernel_timing", _ROOT / "benchmarks" / "plan_kernel_timing.py")
timing = importlib.util.module_from_spec(_spec)
sys.modules["plan_kernel_timing"] = timing
_spec.loader.exec_module(timing)


def test_shapes_and_options_parse():
    args = timing.parse_args(["--shapes", "1x65536, 4X16384", "--repeats", "5", "--out", "x.json"])
    assert args.shapes == [(1, 65536), (4, 16384)] and args.repeats == 5 and args.mode == "graph" and args.dtype == "bf16"
    assert timing.parse_args([]).shapes == [(1, 65536), (4, 16384), (16, 4096)]
    for bad in ("1x", "0x4096", "ax4096", "4096"):
        with pytest.raises(argparse.ArgumentTypeError):
            timing.parse_shapes(bad)
    with pytest.raises(SystemExit):
        timing.parse_args(["--heads", "3"])  # 256 channels do not split into 3 heads


def test_the_schedule_is_maelres_merges():
    """The merges it times are the default MAELRE's at 64K: 14, the first removing 21,433 of 65,536 tokens."""
    events, window, protect_first = timing.merge_events(65536, 256, 8, 8)
    assert len(events) == 14 and events[0] == (65536, 21433) and (window, protect_first) == (32, False)
    assert all(n - r == nxt for (n, r), (nxt, _) in zip(events, events[1:]))


def test_table_has_a_column_per_shape():
    rows = [dict(batch=b, seq_len=n, scope="first", what="plan", path="tiled", median_ms=ms) for b, n, ms in [(1, 65536, 0.02), (16, 4096, 0.01)]]
    text = timing.table(rows, [(1, 65536), (16, 4096)])
    assert "B=1, N=65536 (ms)" in text and "| first | plan | tiled | 0.02 | 0.01 |" in text


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without a CUDA GPU")
def test_refuses_to_run_without_a_gpu(tmp_path, capsys):
    out = tmp_path / "timing.json"
    assert timing.main(["--out", str(out)]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err and not out.exists()
