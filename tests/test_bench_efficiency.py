"""The efficiency benchmark harness, run on CPU with tiny models (the numbers are not the point)."""
from __future__ import annotations

import gc
import json
import math
import time
import warnings
from pathlib import Path

import pytest
import torch

import maelre.bench.efficiency as eff
import maelre.bench.efficiency_case as efficiency_case
import maelre.bench.efficiency_run as efficiency_run
from maelre.bench.report import markdown_table, read_json, write_json_atomic
from maelre.registry import list_backbones

# Tweaks some backbones need at the tiny test lengths (N = 32, 64); applied only if registered.
TINY_TWEAKS = {"ecp": {"segment_size": 16}, "perceiver_ar": {"num_latents": 8}, "masformer": {"window": 8}}
SEQ_LENS = [32, 64]
TOKENS_PER_BATCH = 128  # batch 4 at N=32, 2 at N=64


def tiny_config(**overrides) -> eff.BenchConfig:
    backbones = overrides.pop("backbones", list_backbones())
    settings = dict(
        backbones=backbones,
        seq_lens=SEQ_LENS,
        dim=32,
        depth=2,
        heads=4,
        tokens_per_batch=TOKENS_PER_BATCH,
        dtype="fp32",
        device="cpu",
        warmup=1,
        repeats=2,
        time_budget_s=None,
        backbone_configs={k: v for k, v in TINY_TWEAKS.items() if k in backbones},
    )
    settings.update(overrides)
    return eff.BenchConfig(**settings)


def tiny_argv(tmp: Path) -> list[str]:
    tweaks = [f"{name}:{k}={v}" for name, cfg in TINY_TWEAKS.items() if name in list_backbones() for k, v in cfg.items()]
    argv = ["--device", "cpu", "--dtype", "fp32", "--dim", "32", "--depth", "2", "--heads", "4", "--seq-lens", "32,64"]
    argv += ["--tokens-per-batch", str(TOKENS_PER_BATCH), "--warmup", "1", "--repeats", "2", "--time-budget-s", "0"]
    argv += ["--out", str(tmp / "eff.json"), "--table", str(tmp / "table.md")]
    for tweak in tweaks:
        argv += ["--backbone-config", tweak]
    return argv


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory) -> tuple[Path, dict]:
    """One full run of the command line over every registered backbone."""
    tmp = tmp_path_factory.mktemp("bench")
    torch.manual_seed(0)
    assert eff.main(tiny_argv(tmp)) == 0
    return tmp, json.loads((tmp / "eff.json").read_text())


# --------------------------------------------------------------------------- full run


def measured_names() -> list[str]:
    """Every registered backbone, plus maelre's zero-cost-merge twin and attention-free floor."""
    return list_backbones() + (["maelre.twin", "maelre.floor"] if "maelre" in list_backbones() else [])


def test_every_registered_backbone_is_measured(cpu_run):
    _, doc = cpu_run
    rows = doc["results"]
    expected = {(b, n, m) for b in measured_names() for n in SEQ_LENS for m in eff.MODES}
    assert {eff.case_key(r) for r in rows} == expected
    assert len(rows) == len(expected)
    for r in rows:
        assert set(r) == set(eff.RESULT_KEYS)
        assert r["status"] == "ok", r
        assert r["message"] == ""
        assert r["batch"] == TOKENS_PER_BATCH // r["seq_len"]  # same budget batch for every backbone
        assert r["min_ms"] <= r["median_ms"] <= r["max_ms"]
        assert r["tokens_per_s"] == pytest.approx(r["batch"] * r["seq_len"] / (r["median_ms"] / 1e3))
        assert r["peak_mem_gib"] is None  # CPU: not measured
        assert r["compile_s"] is None
        assert r["wall_s"] > 0
        if r["backbone"].endswith(".floor"):
            assert r["attn_flops"] == 0  # no attention at all
        else:
            assert r["attn_flops"] > 0 and r["attn_flops_ratio_vs_full"] > 0


def test_attention_flops_match_the_full_attention_formula(cpu_run):
    _, doc = cpu_run
    for r in doc["results"]:
        if r["backbone"] == "transformer":
            # depth x 4 N^2 D (QK^T and AV), independent of the backbone's own code
            assert r["attn_flops"] == pytest.approx(2 * 4 * r["seq_len"] ** 2 * 32)
            assert r["attn_flops_ratio_vs_full"] == pytest.approx(1.0)
    full = {r["seq_len"]: r["attn_flops"] for r in doc["results"] if r["backbone"] == "transformer"}
    for r in doc["results"]:
        assert r["attn_flops_ratio_vs_full"] == pytest.approx(r["attn_flops"] / full[r["seq_len"]])


def test_meta_describes_the_run(cpu_run):
    _, doc = cpu_run
    meta = doc["meta"]
    for key in ("command", "gpu_name", "torch_version", "cuda_version", "date", "dtype", "dim", "depth", "heads", "mlp_ratio", "tokens_per_batch", "backbone_configs"):
        assert key in meta, key
    assert meta["command"].startswith("maelre bench efficiency --device cpu")
    assert meta["torch_version"] == torch.__version__
    assert (meta["dim"], meta["depth"], meta["heads"], meta["mlp_ratio"]) == (32, 2, 4, 4.0)
    assert meta["dtype"] == "fp32" and meta["batch"] is None
    assert "token budget 128" in meta["batch_policy"]
    assert set(meta["backbone_configs"]) == set(list_backbones())
    for name, cfg in meta["backbone_configs"].items():
        assert cfg["dim"] == 32 and cfg["depth"] == 2
        for key, value in TINY_TWEAKS.get(name, {}).items():
            assert cfg[key] == value
    assert meta["date"].endswith("+00:00")


def test_markdown_table_and_plot_are_written(cpu_run):
    tmp, doc = cpu_run
    png = tmp / "eff.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    md = (tmp / "table.md").read_text()
    meta = doc["meta"]
    assert f"`{meta['command']}`" in md
    assert meta["torch_version"] in md and meta["date"] in md and meta["gpu_name"] in md
    assert "## Targets" in md and "## Training step" in md and "## Inference" in md
    assert "![throughput and memory vs N](eff.png)" in md
    for name in measured_names():
        assert f"| {name} | 32 | 4 |" in md and f"| {name} | 64 | 2 |" in md
    if "maelre" in list_backbones():  # the merge machinery's cost: maelre's time over its twin's, in maelre's rows only
        rows = [r for r in doc["results"] if r["status"] == "ok"]
        for r in rows:
            ratio = eff.vs_twin(rows, r)
            assert (ratio is not None) == (r["backbone"] == "maelre")
            if ratio is not None:
                twin = next(t for t in rows if (t["backbone"], t["seq_len"], t["mode"]) == ("maelre.twin", r["seq_len"], r["mode"]))
                assert ratio == pytest.approx(r["median_ms"] / twin["median_ms"])
                assert f"| {ratio:.3g} |" in md
    # maelre may not be registered yet; a target without data must never read as a pass
    if "maelre" not in list_backbones():
        assert "PASS" not in md and md.count("not measured") == 4
    assert not list(tmp.glob(".*.tmp")) and not list(tmp.glob(".*.png"))  # no temp files left behind


def test_report_only_rerenders_from_the_json(cpu_run, tmp_path):
    tmp, _ = cpu_run
    table = tmp_path / "again.md"
    assert eff.main(["--report-only", "--out", str(tmp / "eff.json"), "--table", str(table), "--plot", str(tmp_path / "p.png")]) == 0
    assert "## Targets" in table.read_text() and (tmp_path / "p.png").is_file()


# --------------------------------------------------------------------------- crash, resume, budget
# These tests check the run logic, so the model work is replaced by instant fakes.


def fake_measure(name, seq_len, batch, mode, cfg):
    return {"tokens_per_s": 1e3 * seq_len, "peak_mem_gib": None, "resident_before_gib": None, "median_ms": 1.0, "min_ms": 0.5, "max_ms": 2.0, "compile_s": None}


def noop_make_step(name, seq_len, batch, mode, cfg):
    return lambda: None


class Crash(Exception):
    pass


def test_crash_keeps_rows_and_resume_does_not_rerun_them(tmp_path, monkeypatch):
    out = tmp_path / "r.json"
    config = tiny_config(backbones=["transformer"])
    monkeypatch.setattr(efficiency_run, "measure_case", fake_measure)

    def crash_after_first(row):
        raise Crash

    with pytest.raises(Crash):
        eff.run_benchmark(config, out, on_result=crash_after_first, log=lambda s: None)
    first = read_json(out)["results"]
    assert len(first) == 1 and first[0]["status"] == "ok"
    assert eff.case_key(first[0]) == ("transformer", 32, "train")

    calls = []

    def counting(name, seq_len, batch, mode, cfg):
        calls.append((name, seq_len, mode))
        return fake_measure(name, seq_len, batch, mode, cfg)

    monkeypatch.setattr(efficiency_run, "measure_case", counting)
    doc = eff.run_benchmark(config, out, command="second", resume=True, log=lambda s: None)
    assert ("transformer", 32, "train") not in calls
    assert sorted(calls) == sorted([("transformer", 32, "infer"), ("transformer", 64, "train"), ("transformer", 64, "infer")])
    assert doc["results"][0] == first[0]  # kept verbatim
    assert len(doc["results"]) == 4 and all(r["status"] == "ok" for r in doc["results"])
    assert read_json(out) == doc
    assert doc["meta"]["command"] == "second" and doc["meta"]["previous_commands"] == [""]


def test_resume_refuses_a_file_made_with_other_settings(tmp_path, monkeypatch):
    out = tmp_path / "r.json"
    monkeypatch.setattr(efficiency_run, "measure_case", fake_measure)
    eff.run_benchmark(tiny_config(backbones=["transformer"], seq_lens=[32], modes=["infer"]), out, log=lambda s: None)
    with pytest.raises(ValueError, match="dim"):
        eff.run_benchmark(tiny_config(backbones=["transformer"], dim=64, seq_lens=[32]), out, resume=True, log=lambda s: None)


def test_time_budget_marks_the_rest_not_run_and_resume_runs_them(tmp_path, monkeypatch):
    out = tmp_path / "b.json"

    def slow_measure(name, seq_len, batch, mode, cfg):
        time.sleep(0.05)
        return fake_measure(name, seq_len, batch, mode, cfg)

    monkeypatch.setattr(efficiency_run, "measure_case", slow_measure)
    config = tiny_config(backbones=["transformer"], time_budget_s=0.01)
    doc = eff.run_benchmark(config, out, log=lambda s: None)
    statuses = [r["status"] for r in doc["results"]]
    assert statuses == ["ok", "not_run", "not_run", "not_run"]
    assert "time budget" in doc["results"][1]["message"]
    assert doc["results"][1]["attn_flops"] > 0  # the cost model needs no run

    monkeypatch.setattr(efficiency_run, "measure_case", fake_measure)
    doc = eff.run_benchmark(tiny_config(backbones=["transformer"], time_budget_s=None), out, resume=True, log=lambda s: None)
    assert [r["status"] for r in doc["results"]] == ["ok"] * 4


# --------------------------------------------------------------------------- failures


def test_oom_is_recorded_and_larger_n_skipped(tmp_path, monkeypatch):
    def make_step(name, seq_len, batch, mode, cfg):
        if (seq_len, mode) == (32, "train"):
            def oom():
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")
            return oom
        return noop_make_step(name, seq_len, batch, mode, cfg)

    monkeypatch.setattr(efficiency_case, "make_step", make_step)
    config = tiny_config(backbones=["transformer"], seq_lens=[32, 64, 128])
    doc = eff.run_benchmark(config, tmp_path / "o.json", log=lambda s: None)
    rows = {eff.case_key(r)[1:]: r for r in doc["results"]}
    assert rows[(32, "train")]["status"] == "oom"
    assert "Tried to allocate" in rows[(32, "train")]["message"]
    assert rows[(32, "train")]["tokens_per_s"] is None
    for n in (64, 128):
        assert rows[(n, "train")]["status"] == "skipped_after_oom"
        assert "N=32" in rows[(n, "train")]["message"]
    for n in (32, 64, 128):
        assert rows[(n, "infer")]["status"] == "ok"  # the other mode is unaffected

    # a resumed run keeps skipping larger N for the OOM'd backbone and mode
    monkeypatch.setattr(efficiency_case, "make_step", noop_make_step)
    config = tiny_config(backbones=["transformer"], seq_lens=[32, 64, 128, 256])
    doc = eff.run_benchmark(config, tmp_path / "o.json", resume=True, log=lambda s: None)
    assert {eff.case_key(r): r["status"] for r in doc["results"]}[("transformer", 256, "train")] == "skipped_after_oom"


def test_other_errors_are_recorded_and_the_run_goes_on(tmp_path, monkeypatch):
    def failing(name, seq_len, batch, mode, cfg):
        if seq_len == 32:
            raise RuntimeError("kernel exploded")
        return noop_make_step(name, seq_len, batch, mode, cfg)

    monkeypatch.setattr(efficiency_case, "make_step", failing)
    doc = eff.run_benchmark(tiny_config(backbones=["transformer"]), tmp_path / "e.json", log=lambda s: None)
    statuses = {eff.case_key(r)[1:]: (r["status"], r["message"]) for r in doc["results"]}
    assert statuses[(32, "train")] == ("error", "RuntimeError: kernel exploded")
    assert statuses[(64, "train")][0] == "ok"  # an error is not an OOM: larger N still run


def test_a_case_past_its_timeout_is_an_error_row_and_the_run_goes_on(tmp_path, monkeypatch):
    def make_step(name, seq_len, batch, mode, cfg):
        if seq_len == 32:
            return lambda: time.sleep(0.2)  # 3 steps: 0.6 s > 0.3 s timeout
        return noop_make_step(name, seq_len, batch, mode, cfg)

    monkeypatch.setattr(efficiency_case, "make_step", make_step)
    config = tiny_config(backbones=["transformer"], modes=["infer"], case_timeout_s=0.3)
    t0 = time.perf_counter()
    doc = eff.run_benchmark(config, tmp_path / "t.json", log=lambda s: None)
    assert time.perf_counter() - t0 < 0.55  # abandoned, not waited out
    slow, fast = doc["results"]
    assert slow["status"] == "error" and "longer than 0.3 s" in slow["message"]
    assert fast["status"] == "ok"


def test_length_a_backbone_cannot_take_is_an_error_row(tmp_path, monkeypatch):
    from maelre.backbones.transformer import Transformer

    monkeypatch.setattr(Transformer, "length_multiple", lambda self: 8)
    config = tiny_config(backbones=["transformer"], seq_lens=[36, 64], modes=["infer"])
    doc = eff.run_benchmark(config, tmp_path / "x.json", log=lambda s: None)
    bad, good = doc["results"]
    assert bad["status"] == "error" and "divisible by 8" in bad["message"]
    assert good["status"] == "ok"


@pytest.mark.parametrize(
    "overrides",
    [{}, {"merge_site": "both", "merge_schedule": "fraction", "merge_fraction": 0.3, "switch_threshold": 40}, {"merge_schedule": "target", "stage_targets": [48, 20], "stage_depths": [1, 2], "pool": "cls"},
     {"value_conv": 5}],
)
def test_twin_runs_maelres_token_counts_and_attention_kinds(overrides):
    """The zero-cost-merge twin sees, block by block, the N and attention kind that MAELRE's own trace records."""
    from maelre import create_backbone
    from maelre.bench.ideal import build_variant

    maelre = create_backbone("maelre", dim=32, depth=3, heads=4, **overrides)
    tokens = torch.randn(2, 96, 32)
    want = [(b.n_in, b.n_out, b.attention) for b in maelre(tokens, return_trace=True).trace]
    twin = build_variant(maelre, "twin", 96)
    out = twin(tokens, return_trace=True)
    assert [(b.n_in, b.n_out, b.attention) for b in out.trace] == want
    assert out.states.shape[1] == want[-1][1] and out.pooled.shape == (2, 32)
    assert want[0][1] < want[0][0]  # it merges
    assert sum(p.numel() for p in twin.parameters()) == sum(p.numel() for p in maelre.parameters())  # same weights, value convs too
    floor = build_variant(maelre, "floor", 96)
    assert floor(tokens).shape == (2, 32) and not any("attn" in n for n, _ in floor.named_parameters())
    with pytest.raises(ValueError, match="built for N=96"):
        twin(torch.randn(1, 64, 32))


def test_compile_time_is_reported_apart(tmp_path, monkeypatch):
    compiled = []

    def fake_compile(module, **kwargs):
        compiled.append(module)
        return module

    monkeypatch.setattr(torch, "compile", fake_compile)
    config = tiny_config(backbones=["transformer"], seq_lens=[32], modes=["infer"], compile=True)
    doc = eff.run_benchmark(config, tmp_path / "c.json", log=lambda s: None)
    row = doc["results"][0]
    assert len(compiled) == 1 and row["status"] == "ok"
    assert row["compile_s"] is not None and row["compile_s"] > 0
    assert doc["meta"]["compile"] is True


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_cuda_graph_capture_replays_and_is_recorded(tmp_path):
    """A captured MAELRE training step replays, and the run's meta records graph mode."""
    config = tiny_config(backbones=["maelre"], seq_lens=[64], modes=["train"], cuda_graph=True, device="cuda", dtype="bf16")
    step = eff.capture_step(eff.make_step("maelre", 64, 2, "train", config), torch.device("cuda"))
    doc = eff.run_benchmark(config, tmp_path / "g.json", log=lambda s: None)  # allocates and frees in between
    assert doc["results"][0]["status"] == "ok" and doc["meta"]["cuda_graph"] is True
    step()  # the replay still owns its inputs: before, they were freed and reused, and its labels were garbage
    torch.cuda.synchronize()  # a device-side assert surfaces here


def test_time_step_counts_warmup_and_repeats():
    calls = []

    def step():
        calls.append(time.perf_counter())
        time.sleep(0.01)

    times = eff.time_step(step, warmup=2, repeats=3, device=torch.device("cpu"))
    assert len(calls) == 5 and len(times) == 3
    assert all(10.0 <= t < 200.0 for t in times)


def test_time_step_runs_without_the_garbage_collector_and_restores_it():
    seen = []
    assert gc.isenabled()
    eff.time_step(lambda: seen.append(gc.isenabled()), warmup=1, repeats=2, device=torch.device("cpu"))
    assert seen == [False, False, False] and gc.isenabled()
    with pytest.raises(RuntimeError):  # a failing step still gives the collector back
        eff.time_step(lambda: (_ for _ in ()).throw(RuntimeError("boom")), warmup=0, repeats=1, device=torch.device("cpu"))
    assert gc.isenabled()


# --------------------------------------------------------------------------- targets


def row(backbone, n, status="ok", tps=None, mem=None, mode="train", message=""):
    r = eff.empty_row(backbone, n, max(1, 65536 // n), mode, status, message)
    r.update(tokens_per_s=tps, peak_mem_gib=mem)
    return r


def verdicts(rows, **kw):
    return [t.verdict for t in eff.evaluate_targets(rows, **kw)]


def test_targets_pass():
    rows = [
        row("maelre", 16384, tps=4e5, mem=3.0), row("transformer", 16384, tps=1e5, mem=10.0),
        row("maelre", 4096, tps=5e5), row("maelre", 65536, tps=3.5e5), row("transformer", 65536, "oom"),
    ]  # fmt: skip
    checks = eff.evaluate_targets(rows)
    assert [c.verdict for c in checks] == ["PASS"] * 4
    assert "4.00x" in checks[0].detail and "0.30x" in checks[1].detail and "0.70" in checks[2].detail
    assert "OOM" in checks[3].detail


def test_targets_miss():
    rows = [
        row("maelre", 16384, tps=2e5, mem=5.0), row("transformer", 16384, tps=1e5, mem=10.0),
        row("maelre", 4096, tps=5e5), row("maelre", 65536, tps=2e5), row("transformer", 65536, tps=5e4),
    ]  # fmt: skip
    checks = eff.evaluate_targets(rows)
    assert [c.verdict for c in checks] == ["MISS"] * 4
    assert "2.00x" in checks[0].detail and "0.50x" in checks[1].detail and "0.40" in checks[2].detail and "4.00x" in checks[3].detail


def test_targets_boundaries_and_slow_baseline():
    rows = [
        row("maelre", 16384, tps=3e5, mem=3.5), row("transformer", 16384, tps=1e5, mem=10.0),
        row("maelre", 4096, tps=5e5), row("maelre", 65536, tps=3e5), row("transformer", 65536, tps=3e5 / 8),
    ]  # fmt: skip
    assert verdicts(rows) == ["PASS"] * 4


def test_targets_without_data_are_not_measured():
    assert verdicts([]) == ["not measured"] * 4
    only_baseline = [row("transformer", n, tps=1e5, mem=1.0) for n in (4096, 16384, 65536)]
    assert verdicts(only_baseline) == ["not measured"] * 4
    errors = [row(b, n, "error", message="boom") for b in ("maelre", "transformer") for n in (4096, 16384, 65536)]
    assert verdicts(errors) == ["not measured"] * 4
    not_run = [row(b, n, "not_run") for b in ("maelre", "transformer") for n in (4096, 16384, 65536)]
    assert verdicts(not_run) == ["not measured"] * 4
    # CPU rows: throughput but no memory
    cpu = [row("maelre", 16384, tps=4e5), row("transformer", 16384, tps=1e5)]
    assert verdicts(cpu)[:2] == ["PASS", "not measured"]
    # inference rows do not count for the train targets
    infer = [row(b, n, tps=1e5, mem=1.0, mode="infer") for b in ("maelre", "transformer") for n in (4096, 16384, 65536)]
    assert verdicts(infer) == ["not measured"] * 4


def test_targets_when_something_runs_out_of_memory():
    base_oom = [row("maelre", 16384, tps=4e5, mem=10.0), row("transformer", 16384, "oom")]
    assert verdicts(base_oom, gpu_memory_gib=80.0)[:2] == ["PASS", "PASS"]  # 10/80 bounds the ratio below 0.35
    assert verdicts(base_oom)[:2] == ["PASS", "not measured"]  # no GPU size: the ratio is unknown
    big = [row("maelre", 16384, tps=4e5, mem=40.0), row("transformer", 16384, "oom")]
    assert verdicts(big, gpu_memory_gib=80.0)[:2] == ["PASS", "not measured"]  # 40/80 proves nothing

    main_oom = [row("maelre", 16384, "oom"), row("transformer", 16384, tps=1e5, mem=10.0), row("maelre", 4096, tps=1e5)]
    main_oom += [row("maelre", 65536, "skipped_after_oom", message="out of memory at N=16384"), row("transformer", 65536, "oom")]
    assert verdicts(main_oom) == ["MISS"] * 4

    skipped = [row("maelre", 65536, tps=1e5), row("transformer", 65536, "skipped_after_oom", message="out of memory at N=32768")]
    check = eff.evaluate_targets(skipped)[3]
    assert check.verdict == "PASS" and "N=32768" in check.detail


def test_targets_use_the_names_given():
    rows = [row("ecp", 16384, tps=4e5, mem=1.0), row("transformer", 16384, tps=1e5, mem=10.0)]
    assert verdicts(rows, main="ecp")[:2] == ["PASS", "PASS"]
    assert verdicts(rows)[:2] == ["not measured", "not measured"]


# --------------------------------------------------------------------------- options and files


def test_parse_seq_lens():
    assert eff.parse_seq_lens("1K,2k, 4096") == [1024, 2048, 4096]
    for bad in ("", "1K,,2K", "abc", "0", "-5", "1.5K"):
        with pytest.raises(ValueError, match="sequence length"):
            eff.parse_seq_lens(bad)


def test_parse_backbone_configs():
    got = eff.parse_backbone_configs(["ecp:segment_size=128", "masformer:full_layers=[0, 4]", "masformer:causal=true", "x:y=null"])
    assert got == {"ecp": {"segment_size": 128}, "masformer": {"full_layers": [0, 4], "causal": True}, "x": {"y": None}}
    for bad in ("ecp", "ecp:segment_size", ":a=1", "ecp:=1", "ecp:a=[1"):
        with pytest.raises(ValueError, match="backbone-config"):
            eff.parse_backbone_configs([bad])


def test_backbone_config_validation():
    with pytest.raises(ValueError, match="same for every backbone"):
        eff.resolve_backbone_configs(["transformer"], {"transformer": {"dim": 64}})
    with pytest.raises(ValueError, match="no config key 'windw'"):
        eff.resolve_backbone_configs(["transformer"], {"transformer": {"windw": 3}})
    with pytest.raises(ValueError, match="not being benchmarked"):
        eff.resolve_backbone_configs(["transformer"], {"ecp": {"segment_size": 64}})
    assert eff.resolve_backbone_configs(["transformer"], {}) == {}
    if "ecp" in list_backbones():  # documented defaults apply to selected backbones, user values win
        assert eff.resolve_backbone_configs(["ecp"], {})["ecp"]["segment_size"] == 256
        assert eff.resolve_backbone_configs(["ecp"], {"ecp": {"segment_size": 64}})["ecp"]["segment_size"] == 64


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"backbones": ["transfomer"]}, "did you mean 'transformer'"),
        ({"backbones": []}, "no backbones"),
        ({"seq_lens": [0]}, "seq_lens"),
        ({"modes": ["training"]}, "modes"),
        ({"dtype": "fp8"}, "dtype"),
        ({"repeats": 0}, "repeats"),
        ({"batch": 0}, "batch"),
        ({"time_budget_s": -1.0}, "time_budget_s"),
        ({"case_timeout_s": 0.0}, "case_timeout_s"),
        ({"cuda_graph": True}, "cuda_graph needs a CUDA device"),
    ],
)
def test_bad_settings_raise(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**overrides)


def test_batch_policy():
    config = tiny_config(backbones=["transformer"], tokens_per_batch=65536)
    assert [config.batch_for(n) for n in (1024, 16384, 65536, 131072)] == [64, 4, 1, 1]
    fixed = tiny_config(backbones=["transformer"], batch=3)
    assert [fixed.batch_for(n) for n in (32, 65536)] == [3, 3] and "fixed batch 3" in fixed.batch_policy()


def test_cli_rejects_bad_options(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        eff.main(["--device", "cpu", "--seq-lens", "1K,x", "--out", str(tmp_path / "a.json")])
    assert exc.value.code == 2 and "bad sequence length 'x'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        eff.main(["--report-only", "--out", str(tmp_path / "missing.json")])
    assert "no JSON file" in capsys.readouterr().err


def test_atomic_json_write_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "sub" / "x.json"
    write_json_atomic(path, {"a": 1})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"a": object()})
    with pytest.raises(ValueError):
        write_json_atomic(path, {"a": math.nan})  # NaN is not JSON
    assert read_json(path) == {"a": 1}
    assert [p.name for p in path.parent.iterdir()] == ["x.json"]
    path.write_text("{broken")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_json(path)
    with pytest.raises(FileNotFoundError):
        read_json(tmp_path / "nope.json")


def test_markdown_table_rendering():
    rows = [{"name": "a|b", "x": 1234.5, "y": None, "z": 2.5e7}, {"name": "c", "x": 0.5, "y": 3, "z": 1e-5}]
    md = markdown_table(rows, [("name", "Name"), "x", "y", "z"], formatters={"y": lambda v: "none" if v is None else f"<{v}>"})
    assert md.splitlines() == [
        "| Name | x | y | z |",
        "| --- | --- | --- | --- |",
        "| a\\|b | 1234 | none | 2.50e+07 |",
        "| c | 0.5 | <3> | 1.00e-05 |",
    ]
    with pytest.raises(ValueError):
        markdown_table(rows, [])


def test_peak_memory_counts_the_case_alone_not_what_earlier_cases_left(monkeypatch):
    """3 GiB left resident by earlier cases must not show in this case's 1 GiB peak (allocator mocked: no GPU here)."""
    import maelre.bench.efficiency_case as case
    from maelre.bench.efficiency_config import BenchConfig

    gib = 2**30
    mem = {"now": 3 * gib, "peak": 3 * gib}
    monkeypatch.setattr(case.torch.cuda, "reset_peak_memory_stats", lambda device=None: mem.update(peak=mem["now"]))
    monkeypatch.setattr(case.torch.cuda, "memory_allocated", lambda device=None: mem["now"])
    monkeypatch.setattr(case.torch.cuda, "max_memory_allocated", lambda device=None: mem["peak"])
    monkeypatch.setattr(case, "release_memory", lambda device: None)
    monkeypatch.setattr(case.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(case.torch.cuda, "synchronize", lambda device=None: None)
    sync_mode = {"mode": 0}  # what the mode was before: restored after
    monkeypatch.setattr(case.torch.cuda, "get_sync_debug_mode", lambda: sync_mode["mode"])
    monkeypatch.setattr(case.torch.cuda, "set_sync_debug_mode", lambda mode: sync_mode.update(mode=mode))

    def make_step(*args):
        def step():  # one synchronizing call a step, which the sync debug mode reports as PyTorch words it
            mem.update(peak=max(mem["peak"], mem["now"] + gib))
            if sync_mode["mode"] == "warn":
                warnings.warn(case.SYNC_WARNING, UserWarning, stacklevel=1)
                warnings.warn("remember to synchronize before timing", UserWarning, stacklevel=1)  # not a sync

        return step

    monkeypatch.setattr(case, "make_step", make_step)
    monkeypatch.setattr(case, "time_step", lambda step, **kwargs: [step(), 1.0][1:])
    row = case.measure_case("maelre", 64, 2, "train", BenchConfig(device="cuda"))
    assert row["peak_mem_gib"] == pytest.approx(1.0)
    assert row["resident_before_gib"] == pytest.approx(3.0)
    # eager on CUDA: the host's issue time and the step's synchronizing calls, the debug mode restored after
    assert row["syncs_per_step"] == 1 and row["host_ms"] >= 0 and sync_mode["mode"] == 0
    monkeypatch.setattr(case, "ready_step", lambda step, config: step)  # no capture without a GPU
    graphed = case.measure_case("maelre", 64, 2, "train", BenchConfig(device="cuda", cuda_graph=True, warmup=0))
    assert (graphed["host_ms"], graphed["syncs_per_step"]) == (None, None)  # a replay has no host work to speak of


@pytest.mark.skipif(not torch.cuda.is_available(), reason="counts real synchronizing calls: needs a CUDA GPU")
def test_host_side_counts_the_synchronizing_calls_of_a_cuda_step():
    x = torch.ones(1024, device="cuda")
    device = torch.device("cuda")
    synced = efficiency_case.host_side(lambda: (x * 2).sum().item(), device, repeats=2)
    free = efficiency_case.host_side(lambda: (x * 2).sum(), device, repeats=2)
    assert synced["syncs_per_step"] >= 1 and free["syncs_per_step"] == 0
    assert free["host_ms"] > 0
