"""``maelre bench paired``: alternating rounds, the ratios of issue 15 and their verdicts (CPU, tiny shapes)."""
from __future__ import annotations

import json

import pytest
import torch

from maelre.bench import paired


def test_rounds_alternate_and_the_ratio_is_the_median_of_round_ratios(monkeypatch):
    calls: list[str] = []
    clock = {"a": iter([4.0, 4.0, 6.0, 4.0]), "b": iter([2.0, 2.0, 2.0, 4.0])}

    def fake_time_step(step, *, warmup, repeats, device):
        step()
        return [next(clock[calls[-1]])]

    monkeypatch.setattr(paired, "time_step", fake_time_step)
    result = paired.paired_ratio(lambda: calls.append("a"), lambda: calls.append("b"), rounds=4, per_round=1, warmup=1, device=torch.device("cpu"))
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b", "b", "a"]  # warm-up, then A B, B A, A B, B A
    assert result["a_round_ms"] == [4.0, 4.0, 6.0, 4.0] and result["b_round_ms"] == [2.0, 2.0, 2.0, 4.0]
    assert result["ratio"] == 2.0 and result["ratio_min"] == 1.0 and result["ratio_max"] == 3.0  # ratios 2, 2, 3, 1


@pytest.mark.parametrize(("kind", "n", "graphs", "ratio", "expected"), [
    ("twin", 4096, False, 1.10, "PASS"), ("twin", 65536, True, 1.31, "MISS"),
    ("speedup", 16384, False, 4.8, "MISS"), ("speedup", 16384, True, 12.8, "PASS"), ("speedup", 4096, False, 2.0, "-"),
])
def test_verdicts_follow_issue_15s_goals(kind, n, graphs, ratio, expected):
    row = {"kind": kind, "status": "ok", "ratio": ratio, "goal": paired.goal_of(kind, n, graphs)}
    assert paired.verdict(row) == expected


def test_a_tiny_run_on_cpu_writes_both_pairs(tmp_path):
    out = tmp_path / "paired.json"
    args = ["--device", "cpu", "--dtype", "fp32", "--dim", "32", "--depth", "2", "--heads", "2", "--seq-lens", "128",
            "--batch", "2", "--warmup", "1", "--rounds", "2", "--per-round", "1", "--out", str(out)]
    assert paired.main(args) == 0
    rows = json.loads(out.read_text())["results"]
    assert [(r["kind"], r["a"], r["b"]) for r in rows] == [("twin", "maelre", "maelre.twin"), ("speedup", "transformer", "maelre")]
    assert all(r["status"] == "ok" and r["ratio"] > 0 and len(r["a_round_ms"]) == 2 for r in rows), rows
    assert "| 128 | maelre / maelre.twin |" in out.with_suffix(".md").read_text()


def test_options_it_does_not_use_are_refused(tmp_path):
    with pytest.raises(SystemExit):
        paired.main(["--device", "cpu", "--resume", "--out", str(tmp_path / "p.json")])
    with pytest.raises(SystemExit):
        paired.main(["--device", "cpu", "--rounds", "1", "--out", str(tmp_path / "p.json")])
