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


@pytest.mark.parametrize("mode", [None, "plans and merges"])
def test_the_table_says_what_replayed_from_cuda_graphs(mode):
    """A run with MAELRE_PLAN_GRAPHS set reads differently from the default; its table must say which it is."""
    meta = {"gpu_name": "GPU", "dtype": "bf16", "cuda_graph": False, "batch_policy": "batch 1", "rounds": 2, "per_round": 1,
            "command": "cmd", "plan_graphs": mode}
    head = paired.table({"meta": meta, "results": []}).splitlines()[0]
    assert ("merge plans and merges replayed from CUDA graphs" in head) == (mode is not None), head


def test_replay_pairs_build_each_mode_in_one_process(monkeypatch):
    """``--replay``: MAELRE with merge graphs against MAELRE without, whatever MAELRE_PLAN_GRAPHS the process has."""
    from maelre.bench.efficiency_config import BenchConfig
    from maelre.layers import plan_graphs

    config = BenchConfig(device="cpu", dtype="fp32", dim=32, depth=2, heads=2, seq_lens=(128,), backbones=("maelre",), batch=2)
    assert paired.pairs_of(config, ["1", "merge"]) == [("replay", "maelre+plangraphs", "maelre+nographs"),
                                                       ("replay", "maelre+mergegraphs", "maelre+nographs")]
    built = []
    monkeypatch.setattr(paired, "ready_step", lambda step, config: step)
    monkeypatch.setattr(paired, "make_step", lambda name, *a: built.append((name, plan_graphs.ENABLED, plan_graphs.MERGES)))
    monkeypatch.setattr(plan_graphs, "ENABLED", True)  # as if the process had MAELRE_PLAN_GRAPHS=merge
    monkeypatch.setattr(plan_graphs, "MERGES", True)
    for name in ("maelre+nographs", "maelre+plangraphs", "maelre+mergegraphs", "maelre"):
        paired.build_step(name, 128, 2, config)
    assert built == [("maelre", False, False), ("maelre", True, False), ("maelre", True, True), ("maelre", True, True)]
    assert plan_graphs.ENABLED and plan_graphs.MERGES  # restored after each build


def test_a_tiny_replay_run_on_cpu_writes_its_pair(tmp_path):
    """The harness end to end (on the CPU nothing is graphed: both sides are the same step, which is why the CLI refuses it)."""
    from maelre.bench.efficiency_config import BenchConfig

    out = tmp_path / "replay.json"
    config = BenchConfig(device="cpu", dtype="fp32", dim=32, depth=2, heads=2, seq_lens=(128,), backbones=("maelre",), batch=2, warmup=2)
    document = paired.run_pairs(config, out, rounds=2, per_round=1, replay=["merge"], log=lambda s: None)
    assert [(r["kind"], r["a"], r["b"], r["status"], r["verdict"]) for r in document["results"]] == [
        ("replay", "maelre+mergegraphs", "maelre+nographs", "ok", "-")]
    assert document["meta"]["replay"] == ["merge"] and document["meta"]["plan_graphs"] is None  # the rows say their modes
    assert json.loads(out.read_text())["results"][0]["ratio"] > 0


@pytest.mark.parametrize(("extra", "message"), [
    (["--replay", "2"], "takes 1 and/or merge"),
    (["--replay", "merge,merge"], "each once"),
    (["--replay", "merge", "--cuda-graph"], "drop --cuda-graph"),
    (["--replay", "merge", "--device", "cpu"], "needs a CUDA device"),
    (["--replay", "merge", "--device", "cuda", "--warmup", "1"], "--warmup >= 2"),  # refused before any CUDA call
    (["--replay", "merge", "--device", "cuda", "--backbones", "transformer"], "has none"),
])
def test_replay_refusals_say_what_to_change(tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit):
        paired.main(["--seq-lens", "128", "--out", str(tmp_path / "p.json"), *extra])
    assert message in capsys.readouterr().err


def test_an_unknown_merge_graphs_tag_is_named():
    from maelre.bench.efficiency_config import BenchConfig

    with pytest.raises(ValueError, match="unknown merge-graphs tag 'fast'; use one of"):
        paired.build_step("maelre+fast", 128, 2, BenchConfig(device="cpu"))


def test_the_table_counts_rounds_and_tests_them_and_report_only_rerenders_it(tmp_path, capsys):
    """A run's JSON keeps the per-round times; the table turns them into rounds won and a Wilcoxon p, also for old JSONs."""
    meta = {"gpu_name": "GPU", "dtype": "bf16", "cuda_graph": False, "batch_policy": "batch 1", "rounds": 8, "per_round": 5,
            "command": "cmd", "plan_graphs": None}
    a = [10.0, 11.0, 9.5, 10.2, 10.1, 9.8, 10.4, 12.0]
    row = {"kind": "replay", "a": "maelre+mergegraphs", "b": "maelre+nographs", "seq_len": 4096, "batch": 16, "goal": None,
           "status": "ok", "ratio": 0.9, "ratio_min": 0.8, "ratio_max": 1.1, "a_ms": 10.1, "b_ms": 11.2,
           "a_round_ms": a, "b_round_ms": [x + 1.0 for x in a[:7]] + [11.0], "verdict": "-"}
    out = tmp_path / "paired.json"
    out.write_text(json.dumps({"meta": meta, "results": [row]}))
    assert paired.main(["--report-only", "--out", str(out)]) == 0
    line = next(l for l in out.with_suffix(".md").read_text().splitlines() if l.startswith("| 4096"))
    assert "| 7 of 8 rounds |" in line, line
    p = float(line.split("|")[6])
    assert 0.01 < p < 0.1, line  # 7 of 8 one way, the eighth the other way but largest: not as strong as 8 of 8
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(SystemExit):
        paired.main(["--report-only", "--out", str(tmp_path / "bad.json")])
    assert "re-renders the table from a paired timing JSON" in capsys.readouterr().err
