"""benchmarks/alone_cost.py: each leaderboard run timed alone, and the summary's use of those times."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def alone(benchmark_script):
    return benchmark_script("alone_cost")


def _fake_run(run_dir: Path, steps: int, rate: float | None, cut: bool = False) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "recipe.yaml").write_text((ROOT / "recipes" / "lra_text.yaml").read_text())  # batch 32
    results = {"global_step": steps, "call_ended_early": cut, "throughput": {"steady_samples_per_second": rate},
               "peak_memory": {"bytes": 2**30}, "environment": {"device": "cuda:0"}}  # fmt: skip
    (run_dir / "results.json").write_text(json.dumps(results))


def test_each_name_trains_alone_into_its_own_folder_and_becomes_a_cost_row(tmp_path, alone, monkeypatch):
    calls = []

    def fake(task, name, steps, root, eval_samples, seconds, extra, steady_after=50):
        calls.append((task, name, steps, root, extra))
        if name == "maelre":
            _fake_run(root / name, steps, rate=3200.0)  # 32 samples a step: 10 ms
        elif name == "ecp":
            _fake_run(root / name, 120, rate=None, cut=True)
        else:  # a fit that died: its traceback is in call.log, and the row carries it back
            (root / name).mkdir(parents=True, exist_ok=True)
            (root / name / "call.log").write_text("step 1\n" * 40 + "Traceback (most recent call last):\nTypeError: boom\n")
        return subprocess.CompletedProcess([], 0, "done\n", "")

    monkeypatch.setattr(alone, "time_alone", fake)
    out = tmp_path / "cost.json"
    args = ["text", "--names", "maelre,ecp,transformer", "--steps", "300", "--root", str(tmp_path / "runs"), "--out", str(out), "--set", "a=1"]
    assert alone.main(args) == 0
    assert [c[1] for c in calls] == ["maelre", "ecp", "transformer"] and calls[0][3] == tmp_path / "runs" / "text" and calls[0][4] == ["a=1"]
    rows = {r["name"]: r for r in json.loads(out.read_text())["rows"]}
    assert rows["maelre"]["status"] == "ok" and rows["maelre"]["steady_step_ms"] == pytest.approx(10.0) and rows["maelre"]["steady_steps"] == 250
    assert rows["ecp"]["status"] == "error" and "--seconds limit stopped it after 120 steps" in rows["ecp"]["error"]
    assert rows["transformer"]["status"] == "error" and "no results.json" in rows["transformer"]["error"]
    assert "Traceback (most recent call last):\nTypeError: boom" in rows["transformer"]["error"] and rows["transformer"]["error"].count("step 1") == 23

    # a later call keeps the rows it does not redo
    assert alone.main(["text", "--names", "transformer", "--root", str(tmp_path / "runs"), "--out", str(out)]) == 0
    assert {r["name"] for r in json.loads(out.read_text())["rows"]} == {"maelre", "ecp", "transformer"}
    with pytest.raises(SystemExit):
        alone.main(["text", "--steps", "50", "--out", str(out)])  # no steady rate past 50 warm-up steps


def test_the_summary_prefers_a_whole_run_timed_alone_for_its_own_task(benchmark_script):
    summary = benchmark_script("real_runs_summary")
    rows = [{"task": "text", "name": "maelre", "status": "ok", "steady_step_ms": 12.5},
            {"task": "text", "name": "ecp", "status": "error", "error": "x"},
            {"row": "vconv", "pos": "rope", "shape": "task", "cuda_graph": False, "status": "ok", "median_ms": 3.0}]  # fmt: skip
    assert summary.alone_step_ms(rows, "maelre", "text") == 12.5
    assert summary.alone_step_ms(rows, "ecp", "text") is None and summary.alone_step_ms(rows, "transformer", "text") is None
    assert summary.alone_step_ms(rows, "maelre", "scifar10") == 3.0  # no sCIFAR-10 run timed whole: the merge ablation's step


def test_the_summary_never_mixes_whole_run_and_merge_ablation_timings_within_a_task(benchmark_script):
    summary = benchmark_script("real_runs_summary")
    rows = [{"task": "scifar10", "name": "maelre", "status": "ok", "steady_step_ms": 30.0},
            {"row": "vconv", "pos": "rope", "shape": "task", "cuda_graph": False, "status": "ok", "median_ms": 3.0},
            {"row": "transformer", "pos": "learned", "shape": "task", "cuda_graph": False, "status": "ok", "median_ms": 2.0}]  # fmt: skip
    assert summary.alone_step_ms(rows, "maelre", "scifar10") == 30.0
    # the transformer has a merge-ablation step but no whole-run row: untimed, not 2.0 beside a whole run's 30.0
    assert summary.alone_step_ms(rows, "transformer", "scifar10") is None
    assert summary.alone_step_ms(rows[1:], "transformer", "scifar10") == 2.0


def test_a_tagged_variant_keeps_its_own_rows_and_folders_and_the_summary_ignores_it(tmp_path, alone, monkeypatch, benchmark_script):
    roots = []

    def fake(task, name, steps, root, eval_samples, seconds, extra, steady_after=50):
        roots.append(root)
        _fake_run(root / name, steps, rate=6400.0 if extra else 3200.0)  # compiled: 5 ms, eager: 10 ms
        return subprocess.CompletedProcess([], 0, "", "")

    monkeypatch.setattr(alone, "time_alone", fake)
    out, runs = tmp_path / "cost.json", tmp_path / "runs"
    assert alone.main(["scifar10", "--names", "maelre", "--root", str(runs), "--out", str(out)]) == 0
    assert alone.main(["scifar10", "--names", "maelre", "--root", str(runs), "--out", str(out), "--tag", "compiled",
                       "--set", "trainer.compile=reduce-overhead"]) == 0
    assert roots == [runs / "scifar10", runs / "scifar10@compiled"]
    rows = json.loads(out.read_text())["rows"]
    assert sorted((r["name"], r.get("tag", ""), r["steady_step_ms"]) for r in rows) == [("maelre", "", 10.0), ("maelre", "compiled", 5.0)]
    assert benchmark_script("real_runs_summary").alone_step_ms(rows, "maelre", "scifar10") == 10.0
    with pytest.raises(SystemExit):
        alone.main(["scifar10", "--out", str(out), "--tag", "a/b"])


def test_a_longer_warm_up_is_passed_to_the_run_and_counted_out_of_the_steady_steps(tmp_path, alone, monkeypatch):
    """LRA Text on CUDA: cuDNN builds a plan per new length, so a timing leaves out the steps that meet most lengths first."""
    seen = []

    def fake(task, name, steps, root, eval_samples, seconds, extra, steady_after=50):
        seen.append(steady_after)
        _fake_run(root / name, steps, rate=3200.0)
        results = json.loads((root / name / "results.json").read_text())
        results["throughput"]["steady_warmup_steps"] = steady_after
        (root / name / "results.json").write_text(json.dumps(results))
        return subprocess.CompletedProcess([], 0, "", "")

    monkeypatch.setattr(alone, "time_alone", fake)
    out = tmp_path / "cost.json"
    assert alone.main(["text", "--names", "maelre", "--steps", "600", "--steady-after", "300", "--root", str(tmp_path / "r"), "--out", str(out)]) == 0
    assert seen == [300] and json.loads(out.read_text())["rows"][0]["steady_steps"] == 300
    with pytest.raises(SystemExit):
        alone.main(["text", "--steps", "300", "--steady-after", "300", "--out", str(out)])


def test_the_run_is_told_its_warm_up(alone, monkeypatch, tmp_path):
    from maelre.engine import TrainerConfig

    with pytest.raises(ValueError, match="steady_warmup_steps must be >= 1"):
        TrainerConfig(steady_warmup_steps=0)
    envs = []
    monkeypatch.setattr(alone.subprocess, "run", lambda cmd, env, **kw: envs.append(env) or subprocess.CompletedProcess(cmd, 0, "", ""))
    alone.time_alone("text", "maelre", 600, tmp_path, 256, 240, ["a=1"], steady_after=300)
    assert "trainer.steady_warmup_steps=300" in envs[0]["SET"].split() and envs[0]["SET"].endswith("a=1")


def test_untagged_timings_are_eager_unless_set(alone, monkeypatch, tmp_path):
    """The GPU recipes compile, but the leaderboard runs trained eager: an untagged timing overrides compile off."""
    envs = []
    monkeypatch.setattr(alone.subprocess, "run", lambda cmd, env, **kw: envs.append(env) or subprocess.CompletedProcess(cmd, 0, "", ""))
    alone.time_alone("scifar10", "maelre", 300, tmp_path, 256, 240, [])
    alone.time_alone("scifar10", "maelre", 300, tmp_path, 256, 240, ["trainer.compile=reduce-overhead"])
    plain, compiled = (env["SET"].split() for env in envs)
    assert "trainer.compile=false" in plain
    assert compiled.index("trainer.compile=reduce-overhead") > compiled.index("trainer.compile=false")  # the later --set wins


def test_scifar10_rows_are_the_recipe_runs_and_a_run_not_timed_takes_its_twins_time(benchmark_script):
    summary = benchmark_script("real_runs_summary")
    assert summary.row_of("scifar10", "maelre_learned_lr2x") == "maelre" and summary.row_of("scifar10", "maelre") is None
    assert summary.diagnostic_of("scifar10", "maelre") == "maelre" and summary.diagnostic_of("scifar10", "maelre_noconv") == "maelre"
    assert summary.diagnostic_of("scifar10", "transformer_lr2x") is None
    # LRA Image: the compiled pair are the MAELRE and transformer rows, the eager runs before them diagnostics of those rows
    assert summary.row_of("image", "maelre_compiled") == "maelre" and summary.row_of("image", "maelre") is None
    assert summary.diagnostic_of("image", "transformer") == "transformer" and summary.row_of("image", "ecp") == "ecp"
    assert summary.row_of("image", "transformer_cls") is None
    # LRA Text likewise (session 21): the compiled pair are the rows, the eager MAELRE and transformer diagnostics
    assert summary.row_of("text", "transformer_compiled") == "transformer" and summary.row_of("text", "maelre") is None
    assert summary.diagnostic_of("text", "maelre") == "maelre" and summary.row_of("text", "perceiver_ar") == "perceiver_ar"
    rows = [{"task": "scifar10", "name": "maelre", "status": "ok", "steady_step_ms": 30.0},
            {"task": "scifar10", "name": "maelre", "tag": "compiled", "status": "ok", "steady_step_ms": 10.0},
            {"task": "scifar10", "name": "transformer_lr2x", "tag": "compiled", "status": "ok", "steady_step_ms": 18.0},
            {"task": "scifar10", "name": "transformer", "tag": "compiled", "status": "ok", "steady_step_ms": 99.0}]  # fmt: skip
    assert summary.alone_step_ms(rows, "maelre_learned_lr2x", "scifar10") == 30.0  # by its twin, maelre
    assert summary.compiled_step_ms(rows, "maelre_learned_lr2x", "scifar10") == 10.0
    assert summary.compiled_step_ms(rows, "transformer_lr2x", "scifar10") == 18.0  # timed itself: its own, not the twin's
    assert summary.alone_step_ms(rows, "transformer_lr2x", "scifar10") is None  # neither it nor its twin timed eager
    assert summary.compiled_step_ms(rows, "maelre_compiled", "scifar10") == 10.0  # NAME_compiled: NAME's compiled timing


def test_real_runs_reports_a_call_cut_before_its_first_validation(tmp_path):
    """A call whose deadline stops it before any validation (compiled MAELRE on LRA Text compiled past the 240 s that
    alone_cost.py gives a run: 8 steps) writes val/best_acc null; real_runs.sh's report of it must not fail (it raised
    ``TypeError: unsupported operand type(s) for *: 'int' and 'NoneType'`` and the script exited 1)."""
    import sys

    stub = tmp_path / "python"  # PYTHON for real_runs.sh: `-m maelre.cli fit` writes what such a call leaves, the rest is python
    stub.write_text(f"""#!{sys.executable}
import json, os, sys
from pathlib import Path
if sys.argv[1:4] != ["-m", "maelre.cli", "fit"]:
    os.execv({sys.executable!r}, [{sys.executable!r}, *sys.argv[1:]])
run = Path(sys.argv[sys.argv.index("--run-dir") + 1])
(run / "recipe.yaml").write_text("trainer: {{max_steps: 600, max_epochs: null}}\\n")
metrics = {{"test/acc": None, "test/f1": None, "test/loss": None, "val/best_acc": None}}
(run / "results.json").write_text(json.dumps({{"epochs": 1, "global_step": 8, "call_ended_early": True, "tested": False,
                                               "metrics": metrics}}))
""")
    stub.chmod(0o755)
    env = {"PATH": os.environ["PATH"], "PYTHON": str(stub), "ROOT": str(tmp_path / "runs"), "NAMES": "maelre"}
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "real_runs.sh"), "text"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().splitlines()[-1] == "maelre 1 epochs, 8 steps, not validated or tested yet"


def test_real_runs_text_compiled_rows_are_the_eager_rows_compiled(tmp_path):
    """LRA Text's ``*_compiled`` runs are its rows (the transformer's padding to 128 included) as the recipe trains them
    since session 21, with CUDA graphs over 4 length buckets; the eager rows its first runs were made with stay eager."""
    import sys

    stub = tmp_path / "python"  # records the fit's arguments; everything else is python
    stub.write_text(f"""#!{sys.executable}
import json, os, sys
from pathlib import Path
if sys.argv[1:4] != ["-m", "maelre.cli", "fit"]:
    os.execv({sys.executable!r}, [{sys.executable!r}, *sys.argv[1:]])
run = Path(sys.argv[sys.argv.index("--run-dir") + 1])
(run / "argv.json").write_text(json.dumps(sys.argv[4:]))
sys.exit(1)
""")
    stub.chmod(0o755)
    names = ["maelre", "maelre_compiled", "transformer", "transformer_compiled"]
    env = {"PATH": os.environ["PATH"], "PYTHON": str(stub), "ROOT": str(tmp_path / "runs"), "NAMES": " ".join(names)}
    subprocess.run(["bash", str(ROOT / "benchmarks" / "real_runs.sh"), "text"], env=env, capture_output=True, timeout=60)
    sets = {n: [a for a in json.loads((tmp_path / "runs" / n / "argv.json").read_text()) if "=" in a] for n in names}
    recipe = yaml.safe_load((ROOT / "recipes" / "lra_text.yaml").read_text())["trainer"]
    assert (recipe["compile"], recipe["compile_length_buckets"]) == ("reduce-overhead", 4)
    for eager in ("maelre", "transformer"):
        assert [a for a in sets[eager] if a.startswith("trainer.compile")] == ["trainer.compile=false"]
        compiled = sets[f"{eager}_compiled"]
        assert compiled == [a for a in sets[eager] if a != "trainer.compile=false"]
    assert "data.adapter.pad_to_multiple=128" in sets["transformer_compiled"]
