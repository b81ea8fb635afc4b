"""The accuracy leaderboard sweep (``maelre lra``) on CPU: tiny generated tasks, 2-step budgets."""
from __future__ import annotations

import argparse
import copy
import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

import maelre.bench.leaderboard as lb
import maelre.bench.lra_children as lra_children
import maelre.bench.lra_sweep as lra_sweep
from maelre.bench.report import read_json, write_json_atomic
from maelre.recipe import load_recipe

REPO = Path(__file__).resolve().parents[1]

SHARED_MODEL = {"dim": 16, "depth": 1, "heads": 2, "mlp_ratio": 2.0}
TINY_TRAINER = {"max_steps": 3, "max_epochs": None, "accelerator": "cpu", "enable_progress_bar": False}
TINY_RECIPES = {
    "lra_listops.yaml": {
        "data": {
            "dataset": {"name": "listops", "n_train": 24, "n_val": 8, "n_test": 12, "min_len": 10, "max_len": 60, "max_depth": 4, "max_args": 4},
            "adapter": {"name": "text", "tokenizer": "byte", "max_len": 128},
            "batch_size": 8,
        },
        "model": {"backbone": "maelre", **SHARED_MODEL, "backbone_config": {"ecp": {"segment_size": 16}, "maelre": {"merge_schedule": "fraction", "merge_fraction": 0.25}}},
        "optimizer": {"lr": 0.001},
        "trainer": TINY_TRAINER,
    },
    "lra_pathfinder.yaml": {
        "data": {
            "dataset": {"name": "pathfinder", "n_train": 8, "n_val": 4, "n_test": 6},
            "adapter": {"name": "pixels", "channels": "gray", "max_len": 1024},
            "batch_size": 4,
        },
        "model": {"backbone": "maelre", **SHARED_MODEL, "backbone_config": {"ecp": {"segment_size": 64}, "maelre": {"switch_threshold": 1024}}},
        "optimizer": {"lr": 0.001},
        "trainer": TINY_TRAINER,
    },
}


@pytest.fixture
def recipes(tmp_path: Path) -> Path:
    folder = tmp_path / "recipes"
    folder.mkdir()
    for name, raw in TINY_RECIPES.items():
        (folder / name).write_text(yaml.safe_dump(raw), encoding="utf-8")
    return folder


def sweep_args(tmp_path: Path, recipes: Path, *extra: str) -> list[str]:
    return [
        "--recipes-dir", str(recipes), "--out", str(tmp_path / "lb.json"), "--table", str(tmp_path / "lb.md"),
        "--run-root", str(tmp_path / "runs"), *extra,
    ]  # fmt: skip


def make_row(task: str, backbone: str, accuracy: float | None, *, status: str = "ok", data: str = "generated", **extra) -> dict:
    row = lb.empty_row(task, backbone, recipe=f"recipes/{lb.TASKS[task].recipe}", command=f"maelre fit recipes/{task}.yaml --set model.backbone={backbone}", status=status)
    row.update(accuracy=accuracy, data=data, steps=100, train_seconds=60.0, gpu="NVIDIA H100 80GB HBM3", params=1000,
               samples={"train": 10, "val": 2, "test": 300}, full_test_split=True, date="2026-11-20T10:00:00+00:00",
               dataset=task, model=dict(SHARED_MODEL), precision="bf16-mixed", budget={"max_steps": 100, "max_epochs": None, "max_time_minutes": 1.5})  # fmt: skip
    row.update(extra)
    return row


# --------------------------------------------------------------------------- the sweep


def test_sweep_writes_rows_then_resume_skips_them(tmp_path, recipes, monkeypatch):
    import modalities.datasets.lra as lra

    draws = []
    real_generate = lra.generate_listops
    monkeypatch.setattr(lra, "generate_listops", lambda *a, **k: draws.append(a) or real_generate(*a, **k))
    args = sweep_args(tmp_path, recipes, "--tasks", "listops,pathfinder", "--backbones", "maelre,transformer", "--budget-steps", "2")
    assert lb.main(args) == 0

    document = read_json(tmp_path / "lb.json")
    rows = document["results"]
    assert [(r["task"], r["backbone"]) for r in rows] == [
        ("listops", "maelre"), ("listops", "transformer"), ("pathfinder", "maelre"), ("pathfinder", "transformer"),
    ]  # fmt: skip
    assert len(draws) == 1, "the generated ListOps data must be drawn once for all backbones of the task"
    for row in rows:
        assert set(row) == set(lb.ROW_KEYS)
        assert row["status"] == "ok", row["message"]
        assert row["concurrent_runs"] == 1
        assert row["split"] == "test" and row["data"] == "generated" and row["gpu"] == "cpu"
        assert row["steps"] == 2 and row["budget"]["max_steps"] == 2 and row["budget"]["max_epochs"] is None
        assert row["params"] > 0 and row["train_seconds"] > 0
        assert row["peak_memory"]["kind"] == "cpu_peak_rss" and row["peak_memory"]["bytes"] > 0
        assert row["model"] == SHARED_MODEL  # the same shape for every backbone
        # the row agrees with the run's own results.json
        results = json.loads((Path(row["run_dir"]) / "results.json").read_text())
        assert row["accuracy"] == pytest.approx(100 * results["metrics"]["test/acc"])
        assert results["backbone"] == row["backbone"] and row["samples"] == results["samples"]
        assert Path(row["run_dir"]).parent == tmp_path / "runs" / row["task"] / row["backbone"]
        assert f"model.backbone={row['backbone']}" in row["command"] and "trainer.max_steps=2" in row["command"]
    by_task = {(r["task"], r["backbone"]): r for r in rows}
    assert by_task["listops", "maelre"]["backbone_config"] == {"merge_schedule": "fraction", "merge_fraction": 0.25}
    assert by_task["listops", "transformer"]["backbone_config"] == {}
    assert by_task["listops", "maelre"]["dataset"] == "listops (generated, seed 0)"

    page = (tmp_path / "lb.md").read_text()
    assert lb.BEGIN_MARKER in page and lb.END_MARKER in page and rows[0]["command"] in page

    def no_training(*_args, **_kwargs):
        raise AssertionError("--resume must not re-run a finished pair")

    monkeypatch.setattr(lra_sweep, "run_recipe", no_training)
    assert lb.main([*args, "--resume"]) == 0
    assert read_json(tmp_path / "lb.json") == document  # nothing ran, nothing rewritten


def test_a_row_takes_the_peak_memory_of_its_run(recipes):
    recipe = load_recipe(recipes / "lra_listops.yaml")
    results = {
        "metrics": {"test/acc": 0.5, "val/best_acc": 0.6}, "samples": {"train": 24, "val": 8, "test": 12}, "global_step": 9,
        "epochs": 3, "throughput": {"train_seconds": 1.5}, "environment": {"device": "cpu"}, "parameters": 10, "run_dir": "r",
        "fit_seconds": 2.0, "peak_memory": {"kind": "cuda_max_allocated", "bytes": 3 * 2**30},
    }  # fmt: skip
    row = lb.fill_from_results(lb.empty_row("listops", "maelre", recipe="r", command="c"), recipe, results)
    assert row["peak_memory"] == {"kind": "cuda_max_allocated", "bytes": 3 * 2**30}
    assert (row["accuracy"], row["steps"], row["train_seconds"]) == (50.0, 9, 1.5)
    # a call's deadline cut the last epoch: 'epochs' counts it as started, the row still says partial
    cut = lb.fill_from_results(lb.empty_row("listops", "maelre", recipe="r", command="c"), recipe, {**results, "global_step": 2, "call_ended_early": True})
    assert cut["status"] == "time_limit" and "deadline stopped it after 2 of" in cut["message"]


def test_failing_run_is_recorded_and_the_sweep_goes_on(tmp_path, recipes, monkeypatch):
    real_run = lb.run_recipe
    calls = []

    def flaky(recipe, **kwargs):
        calls.append(recipe.model.backbone)
        if recipe.model.backbone == "transformer":
            raise RuntimeError("CUDA out of memory (simulated)")
        return real_run(recipe, **kwargs)

    monkeypatch.setattr(lra_sweep, "run_recipe", flaky)
    args = sweep_args(tmp_path, recipes, "--tasks", "listops,pathx", "--backbones", "transformer,maelre", "--budget-steps", "2")
    assert lb.main(args) == 0
    rows = {(r["task"], r["backbone"]): r for r in read_json(tmp_path / "lb.json")["results"]}
    assert rows["listops", "transformer"]["status"] == "error"
    assert rows["listops", "transformer"]["message"] == "RuntimeError: CUDA out of memory (simulated)"
    assert rows["listops", "transformer"]["accuracy"] is None
    assert rows["listops", "maelre"]["status"] == "ok"  # ran after the failure
    # a task whose recipe is missing is an error row too, not a crash
    assert rows["pathx", "maelre"]["status"] == "error" and "FileNotFoundError" in rows["pathx", "maelre"]["message"]
    assert calls == ["transformer", "maelre"]  # pathx never reached training

    # --resume re-runs only what failed
    calls.clear()
    monkeypatch.setattr(lra_sweep, "run_recipe", lambda recipe, **kw: calls.append(recipe.model.backbone) or real_run(recipe, **kw))
    assert lb.main([*args, "--tasks", "listops", "--resume"]) == 0
    assert calls == ["transformer"]
    rows = {(r["task"], r["backbone"]): r for r in read_json(tmp_path / "lb.json")["results"]}
    assert rows["listops", "transformer"]["status"] == "ok" and rows["pathx", "maelre"]["status"] == "error"


def test_short_runs_are_flagged_and_the_sweep_budget_is_kept(tmp_path, recipes, monkeypatch):
    def fake_run(recipe, **kwargs):  # maelre used its whole max_time; transformer stopped early, quickly
        seconds = 61.0 if recipe.model.backbone == "maelre" else 5.0
        return {
            "metrics": {"test/acc": 0.5, "val/best_acc": 0.25}, "global_step": 1, "epochs": 1,
            "throughput": {"train_seconds": seconds}, "environment": {"device": "cpu"}, "parameters": 10,
            "samples": {"train": 24, "val": 8, "test": 12}, "run_dir": "x", "fit_seconds": seconds,
        }  # fmt: skip

    monkeypatch.setattr(lra_sweep, "run_recipe", fake_run)
    config = lb.SweepConfig(
        tasks=["listops"], backbones=["maelre", "transformer", "ecp"], max_minutes=1, sweep_minutes=1.5, recipes_dir=str(recipes)
    )
    clock = iter([0.0, 0.0, 0.0, 70.0])  # the sweep's start, then before each run
    rows = lb.run_sweep(config, tmp_path / "lb.json", clock=lambda: next(clock), log=lambda _: None)["results"]
    assert read_json(tmp_path / "lb.json")["results"] == rows
    maelre, transformer, ecp = rows
    assert maelre["status"] == "time_limit" and maelre["accuracy"] == 50.0 and maelre["val_accuracy"] == 25.0
    assert maelre["message"] == "stopped by the 1-minute limit after 1 of 3 steps"  # the recipe's max_steps: 3
    assert maelre["budget"] == {"max_steps": 3, "max_epochs": None, "max_time_minutes": 1.0, "planned_steps": 3}
    assert "trainer.max_time=1" in maelre["command"]
    assert transformer["status"] == "ok" and transformer["message"] == "stopped early after 1 of 3 steps"
    # 70 s in, a 1-minute run would end after the 1.5-minute sweep budget
    assert ecp["status"] == "not_run" and "1.5 min" in ecp["message"] and ecp["accuracy"] is None


def test_concurrent_sweep_merges_the_row_of_each_child_process(
    tmp_path, recipes, monkeypatch
):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # 2 child processes share 2 CI cores
    tasks, backbones = ["listops"], ["maelre", "transformer"]
    args = sweep_args(
        tmp_path, recipes, "--tasks", ",".join(tasks), "--backbones", ",".join(backbones),
        "--budget-steps", "2", "--jobs", "2",
    )  # fmt: skip
    assert lb.main(args) == 0

    document = read_json(tmp_path / "lb.json")
    rows = {(r["task"], r["backbone"]): r for r in document["results"]}
    assert set(rows) == {(t, b) for t in tasks for b in backbones}
    runs = tmp_path / "runs"
    serial = lb.SweepConfig(
        tasks, backbones, budget_steps=2, recipes_dir=str(recipes), run_root=str(runs)
    )
    for (task, backbone), row in rows.items():
        assert row["status"] == "ok", row["message"]
        assert set(row) == set(lb.ROW_KEYS) and row["concurrent_runs"] == 2
        assert row["steps"] == 2 and row["gpu"] == "cpu" and row["accuracy"] is not None
        # the `maelre fit` command of the run, as a serial sweep records it
        assert row["command"] == serial.fit_command(task, backbone)
        assert Path(row["run_dir"]).parent == runs / task / backbone
        assert (runs / task / backbone / f"{lb.CHILD_FILES}.log").is_file()
    assert "--jobs 2" in document["meta"]["commands"][-1]

    page = (tmp_path / "lb.md").read_text().splitlines()
    header = next(line for line in page if line.startswith("| task | backbone |"))
    column = [cell.strip() for cell in header.split("|")].index("runs at once")
    ours = [line for line in page if line.startswith("| listops | ")]
    assert [line.split("|")[column].strip() for line in ours] == ["2", "2"]
    assert any("measured under that contention" in line for line in page)


def test_a_child_that_dies_without_a_row_becomes_an_error_row(
    tmp_path, recipes, monkeypatch
):
    def crashing_child(config, task, backbone, out, table):
        code = f"print('loading ...'); raise SystemExit('crash of {backbone}')"
        return [sys.executable, "-c", code]

    monkeypatch.setattr(lra_children, "child_command", crashing_child)
    backbones = ["maelre", "transformer", "ecp"]
    runs = str(tmp_path / "runs")
    config = lb.SweepConfig(
        ["listops"], backbones, recipes_dir=str(recipes), run_root=runs
    )
    logged = []
    document = lb.run_sweep(config, tmp_path / "lb.json", jobs=2, log=logged.append)
    assert read_json(tmp_path / "lb.json") == document
    rows = {r["backbone"]: r for r in document["results"]}
    assert set(rows) == set(backbones)  # the third started once a slot was free
    for backbone, row in rows.items():
        assert row["status"] == "error" and row["accuracy"] is None
        assert row["concurrent_runs"] == 2 and row["wall_seconds"] > 0 and row["date"]
        message = row["message"]  # how the process ended, then the end of its log
        assert message.startswith("the run's process exited with code 1 without")
        assert message.endswith(f"loading ...\ncrash of {backbone}")
        assert row["command"] == config.fit_command("listops", backbone)
    summaries = [line for line in logged if "error the run's process exited" in line]
    assert len(summaries) == 3
    assert all("\n" not in line and lb.CHILD_FILES in line for line in summaries)


def test_concurrent_sweep_starts_no_run_past_the_time_budget(
    tmp_path, recipes, monkeypatch
):
    monkeypatch.setattr(lra_children, "child_command", lambda *_: [sys.executable, "-c", "pass"])
    config = lb.SweepConfig(
        ["listops"], ["maelre", "transformer", "ecp"], max_minutes=1, sweep_minutes=1.5,
        recipes_dir=str(recipes), run_root=str(tmp_path / "runs"),
    )  # fmt: skip
    clock = iter([0.0, 0.0, 0.0, 70.0])  # the sweep's start, then before each start
    out, logged = tmp_path / "lb.json", []
    document = lb.run_sweep(
        config, out, jobs=2, clock=lambda: next(clock), log=logged.append
    )
    rows = {r["backbone"]: r for r in document["results"]}
    # 70 s in, a 1-minute run would end after the 1.5-minute sweep budget
    assert rows["ecp"]["status"] == "not_run" and rows["ecp"]["concurrent_runs"] == 2
    assert "listops / ecp: training" not in "\n".join(logged)
    assert rows["maelre"]["status"] == rows["transformer"]["status"] == "error"


def test_child_options_give_the_configuration_back(recipes):
    parser = argparse.ArgumentParser()
    lb.add_arguments(parser)
    config = lb.SweepConfig(
        tasks=["listops", "fsdd"],
        backbones=["ecp", "maelre"],
        overrides=["optimizer.lr=0.002", "data.dataset={name: fsdd, seed: 1}"],
        preset="ecp_scifar",
        budget_steps=10,
        max_minutes=2.2,
        sweep_minutes=8.0,
        recipes_dir=str(recipes),
        run_root="runs/x",
        progress=True,
    )
    assert lb.config_from_args(parser.parse_args(config.cli_args())) == config
    command = lb.child_command(config, "fsdd", "ecp", Path("c.json"), Path("c.md"))
    assert command[:3] == [sys.executable, "-m", "maelre.bench.leaderboard"]
    child = parser.parse_args(command[3:])
    assert (child.out, child.table, child.jobs) == ("c.json", "c.md", 1)
    # one pair, and no sweep budget (the parent keeps it): the same run otherwise
    alone = replace(config, tasks=["fsdd"], backbones=["ecp"], sweep_minutes=None)
    assert lb.config_from_args(child) == alone


def test_overrides_are_the_same_for_every_backbone():
    config = lb.SweepConfig(tasks=["scifar_standin"], backbones=["maelre", "ecp"], overrides=["optimizer.lr=0.002"], budget_steps=10, max_minutes=1.5)
    runs = {b: config.run_overrides("scifar_standin", b) for b in config.backbones}
    assert [i for i in runs["maelre"] if not i.startswith(("model.backbone=", "output.run_dir="))] == [
        i for i in runs["ecp"] if not i.startswith(("model.backbone=", "output.run_dir="))
    ]
    items = runs["ecp"]
    assert items.index("model.depth=3") < items.index("optimizer.lr=0.002") < items.index("trainer.max_steps=10")
    assert {"trainer.max_epochs=null", "trainer.max_time=1.5", "model.backbone=ecp"} <= set(items)
    assert any(i.startswith("data.dataset={name: digits") for i in items)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"tasks": ["listop"]}, "did you mean 'listops'"),
        ({"backbones": ["transfomer"]}, "transformer"),
        ({"tasks": ["fsdd", "fsdd"]}, "listed twice"),
        ({"budget_steps": 0}, "--budget-steps must be >= 1"),
        ({"max_minutes": -1.0}, "--max-minutes must be positive"),
        ({"overrides": ["model.backbone=ecp"]}, "use --backbones"),
        ({"overrides": ["trainer.max_steps=5"], "budget_steps": 3}, "conflicts with --budget-steps"),
        ({"preset": "nope"}, "unknown preset"),
    ],
)
def test_bad_settings_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        lb.SweepConfig(**kwargs)


def test_cli_reports_bad_arguments(tmp_path, recipes, capsys):
    with pytest.raises(SystemExit) as exit_info:
        lb.main(sweep_args(tmp_path, recipes, "--tasks", "lisstops"))
    assert exit_info.value.code == 2
    assert "unknown task 'lisstops'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        lb.main(sweep_args(tmp_path, recipes, "--report-only"))  # no results file yet
    assert "no JSON file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        lb.main(sweep_args(tmp_path, recipes, "--jobs", "0"))
    assert "--jobs must be >= 1" in capsys.readouterr().err


@pytest.mark.parametrize("task", list(lb.TASKS))
def test_every_task_recipe_validates_for_every_backbone(task):
    config = lb.SweepConfig(tasks=[task], backbones=list(lb.DEFAULT_BACKBONES), budget_steps=100, max_minutes=1.5)
    for backbone in config.backbones:
        recipe = load_recipe(REPO / config.recipe_path(task), config.run_overrides(task, backbone))
        assert recipe.model.backbone == backbone and recipe.trainer.max_steps == 100
        if task in ("scifar10", "scifar_standin"):  # the ECP paper's sCIFAR setting
            assert {k: recipe.shared[k] for k in ("dim", "depth", "heads", "mlp_ratio")} == {"dim": 64, "depth": 3, "heads": 4, "mlp_ratio": 2.0}
            assert recipe.data.adapter["max_len"] == 1024
        expected = "standin" if task == "scifar_standin" else ("generated" if task in ("listops", "pathfinder", "pathx") else "real")
        assert lb.data_provenance(lb.TASKS[task], recipe) == expected


# --------------------------------------------------------------------------- targets and report


def test_targets_pass_miss_and_not_run():
    rows = [make_row("listops", "maelre", 41.5), make_row("pathfinder", "maelre", 74.9), make_row("fsdd", "maelre", 98.0, data="real")]
    verdicts = {t.name.split(",")[0]: (t.verdict, t.detail) for t in lb.evaluate_targets(rows)}
    assert verdicts["ListOps (generated)"][0] == "PASS" and "41.50%" in verdicts["ListOps (generated)"][1]
    assert verdicts["Pathfinder-32 (generated)"][0] == "MISS" and "74.90%" in verdicts["Pathfinder-32 (generated)"][1]
    assert verdicts["FSDD"][0] == "PASS"

    capped = make_row("fsdd", "maelre", 99.0, data="real", full_test_split=False)
    failed = make_row("listops", "maelre", None, status="error", message="RuntimeError: boom")
    standin = make_row("pathfinder", "maelre", 90.0, data="standin")
    checks = lb.evaluate_targets([capped, failed, standin])
    assert [c.verdict for c in checks] == ["not run"] * len(lb.TARGETS)
    assert "boom" in checks[0].detail and "stand-in" in checks[1].detail and "official test split" in checks[2].detail
    assert all(c.verdict == "not run" for c in lb.evaluate_targets([]))
    assert lb.evaluate_targets([make_row("listops", "maelre", 40.0)])[0].verdict == "PASS"  # the bound is inclusive
    partial = make_row("listops", "maelre", 37.0, status="time_limit", steps=29_119, budget={"planned_steps": 50_000},
                       message="partial: 29119 of 50000 steps so far; resumes with lra_learn.sh")
    (check,) = [c for c in lb.evaluate_targets([partial]) if c.name.startswith("ListOps (generated)")]
    assert check.verdict == "MISS so far" and "29119 of 50000 steps, partial" in check.detail  # a resumable run part-way
    stopped = {**partial, "message": "stopped by the 7.5-minute limit after 29119 of 50000 steps"}  # will not resume
    (check,) = [c for c in lb.evaluate_targets([stopped]) if c.name.startswith("ListOps (generated)")]
    assert check.verdict == "MISS" and "29119 steps" in check.detail

    scifar = {t.name.split(",")[1].strip(): t for t in lb.evaluate_targets(
        [make_row("scifar10", "ecp", 57.2, data="real"), make_row("scifar10", "transformer_rope", 49.3, data="real")]) if t.name.startswith("sCIFAR")}
    assert scifar["ECP test accuracy (paper: 59.32)"].verdict == "MISS"  # 2 points under the paper, not 2.12
    assert scifar["transformer with RoPE (paper: 51.32)"].verdict == "PASS"
    assert scifar["maelre test accuracy"].verdict == "not run"


def test_accuracy_interval_is_wilsons_and_shown_where_rows_are_compared():
    from maelre.bench.lra_results import accuracy_interval

    lo, hi = accuracy_interval(make_row("listops", "maelre", 50.0, samples={"test": 100}))
    assert (round(lo, 2), round(hi, 2)) == (40.38, 59.62)  # Wilson, z = 1.96: not the normal 40.2-59.8
    lo_big, hi_big = accuracy_interval(make_row("listops", "maelre", 50.0, samples={"test": 10_000}))
    assert hi_big - lo_big < (hi - lo) / 9  # 100 times the samples: a tenth of the width
    assert accuracy_interval(make_row("listops", "maelre", None)) is None
    assert accuracy_interval(make_row("listops", "maelre", 50.0, samples={})) is None
    assert accuracy_interval(make_row("listops", "maelre", 101.0)) is None  # a bad row gets no interval, not a broken page
    lo, hi = accuracy_interval(make_row("listops", "maelre", 100.0, samples={"test": 2000.0}))  # a float count, as JSON may hold
    assert hi == 100.0 and 99.8 < lo < 100.0
    assert accuracy_interval(make_row("fsdd", "maelre", 99.00000095, samples={"test": 300})) == accuracy_interval(
        make_row("fsdd", "maelre", 99.0, samples={"test": 300}))  # 297 of 300 either way

    (check,) = [t for t in lb.evaluate_targets([make_row("listops", "maelre", 38.45, samples={"test": 2000})])
                if t.name.startswith("ListOps (generated)")]
    assert "95% CI 36.3-40.6" in check.detail
    page = lb.render_markdown({"meta": {}, "results": [make_row("listops", "maelre", 38.45, samples={"test": 2000})]}, [])
    assert "| 95% CI |" in page and "| 38.45 | 36.3-40.6 |" in page


def test_maelre_against_the_transformer_needs_the_accuracy_and_a_lower_cost_measured_alone():
    def pair(ours, theirs, **kw):
        rows = [make_row("image", "maelre", ours, data="real", **kw.get("maelre", {})),
                make_row("image", "transformer", theirs, data="real", **kw.get("transformer", {}))]  # fmt: skip
        (check,) = [t for t in lb.evaluate_targets(rows) if t.name == "LRA Image (real), maelre against the transformer"]
        return check

    alone = {"maelre": {"alone_step_ms": 10.0}, "transformer": {"alone_step_ms": 20.0}}  # 100 steps each: 1 s against 2 s
    assert pair(37.3, 36.6, **alone).verdict == "PASS" and "1 against 2 GPU-s" in pair(37.3, 36.6, **alone).detail
    assert pair(36.6, 36.6, **alone).verdict == "PASS"  # as accurate is enough
    assert pair(36.0, 36.6, **alone).verdict == "MISS" and "less accurate" in pair(36.0, 36.6, **alone).detail
    dearer = {"maelre": {"alone_step_ms": 30.0}, "transformer": {"alone_step_ms": 20.0}}
    assert pair(37.3, 36.6, **dearer).verdict == "MISS" and "compiled" not in pair(37.3, 36.6, **dearer).detail
    compiled = {b: {**kw, "alone_step_ms_compiled": ms} for (b, kw), ms in zip(dearer.items(), (10.0, 40.0))}
    check = pair(37.3, 36.6, **compiled)  # the compiled cost is shown beside the eager one, which the runs trained with
    assert check.verdict == "MISS" and check.detail.endswith("3 against 2 GPU-s (compiled: 1 against 4)")
    trained_compiled = {b: {**kw, "compile": "reduce-overhead"} for b, kw in compiled.items()}
    check = pair(37.3, 36.6, **trained_compiled)  # runs that trained compiled are judged by the compiled step
    assert check.verdict == "PASS" and check.detail.endswith("1 against 4 GPU-s compiled, as the runs trained (eager: 3 against 2)")
    one_each = {"maelre": trained_compiled["maelre"], "transformer": compiled["transformer"]}
    check = pair(37.3, 36.6, **one_each)  # each at the step it trained with, and said so
    assert check.verdict == "PASS" and "1 against 2 GPU-s (one run trained compiled, the other eager" in check.detail
    shared = {"maelre": {"concurrent_runs": 5}, "transformer": {"concurrent_runs": 5}}  # wall time shared with other runs
    check = pair(37.3, 36.6, **shared)
    assert check.verdict == "not measured" and "maelre, transformer not timed alone" in check.detail
    assert pair(37.3, 36.6, transformer={"status": "time_limit", "message": "partial: 10 of 20 steps"}).verdict == "not run"
    assert pair(37.3, None, transformer={"status": "error", "message": "boom"}).verdict == "not run"


def test_report_puts_published_numbers_beside_ours_with_provenance(tmp_path):
    rows = [
        make_row("listops", "maelre", 41.234),
        make_row("listops", "transformer", 37.5, status="time_limit", message="stopped by the 1.5-minute limit after 90 steps"),
        make_row("fsdd", "maelre", 97.5, data="real"),
        make_row("scifar_standin", "ecp", 66.0, data="standin"),
        make_row("pathfinder", "ecp", None, status="error", message="RuntimeError: boom"),
    ]
    document = {"meta": {"commands": ["maelre lra --tasks listops"], "updated": "2026-11-20T10:00:00+00:00"}, "results": rows}
    write_json_atomic(tmp_path / "lb.json", document)
    page = tmp_path / "lb.md"
    page.write_text("# Leaderboard\n\nHand-written method.\n\n" + lb.BEGIN_MARKER + "\nstale\n" + lb.END_MARKER + "\n\n## Notes\n\nkept\n")
    assert lb.main(["--report-only", "--out", str(tmp_path / "lb.json"), "--table", str(page)]) == 0
    text = page.read_text()
    assert text.startswith("# Leaderboard\n\nHand-written method.") and text.rstrip().endswith("## Notes\n\nkept")
    assert "stale" not in text and text.count(lb.BEGIN_MARKER) == 1

    board = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in text.splitlines() if line.startswith("| ")}
    header = board["model"]
    col = {name: header.index(name) for name in header}
    lra = board["Transformer"]
    assert [lra[col[t]] for t in ("ListOps", "Text", "Retrieval", "Image", "Pathfinder", "Path-X")] == ["36.37", "64.27", "57.46", "42.44", "71.40", "FAIL"]
    assert board["Transformer + RoPE"][col["Image"]] == "51.32"
    assert board["ECP, 3 layers (dim 64, 4 heads, MLP 128)"][col["Image"]] == "59.32"
    assert board["ECP, 12 layers"][col["Image"]] == "64.42"
    maelre = board["**maelre** (ours)"]
    assert maelre[col["ListOps"]] == "41.23†" and maelre[col["FSDD (audio)"]] == "97.50" and maelre[col["Text"]] == "—"
    assert board["**transformer** (ours)"][col["ListOps"]] == "37.50† §"
    ecp = board["**ecp** (ours)"]
    assert ecp[col["sCIFAR stand-in (ECP setting)"]] == "66.00‡" and ecp[col["Pathfinder"]] == "error"
    # no published CIFAR number is put beside the stand-in
    assert lra[col["sCIFAR stand-in (ECP setting)"]] == "—"
    assert "**not** the benchmark's data set" in text
    assert "NVIDIA H100 80GB HBM3, 2026-11-20" in text
    for row in rows:
        assert f"`{row['command']}`" in text
    assert "| ListOps (generated), maelre test accuracy | >= 40% | PASS |" in text
    assert "| Pathfinder-32 (generated), maelre test accuracy | >= 75% | not run |" in text


def test_report_appends_to_a_page_without_markers_and_rejects_half_markers(tmp_path):
    document = {"meta": {}, "results": [make_row("listops", "maelre", 50.0)]}
    page = tmp_path / "page.md"
    page.write_text("# Method only\n")
    lb.write_report(document, page)
    text = page.read_text()
    assert text.startswith("# Method only\n\n" + lb.BEGIN_MARKER)
    lb.write_report(copy.deepcopy(document), page)
    assert page.read_text() == text  # re-rendering is stable
    page.write_text("# Broken\n" + lb.BEGIN_MARKER + "\n")
    with pytest.raises(ValueError, match="only one of the markers"):
        lb.write_report(document, page)


def test_committed_page_is_rendered_from_the_committed_results():
    results = REPO / lb.DEFAULT_OUT
    document = read_json(results) if results.exists() else {"meta": {}, "results": []}
    page = (REPO / lb.DEFAULT_TABLE).read_text(encoding="utf-8")
    assert lb.render_markdown(document, lb.evaluate_targets(document["results"])) in page


def test_children_split_the_cpu_cores_and_keep_thread_counts_set_by_the_caller(monkeypatch):
    monkeypatch.setattr(lra_children.os, "cpu_count", lambda: 16)
    env = lb.child_environment(4, {"PATH": "/bin"})
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "4" and env["PATH"] == "/bin"
    assert lb.child_environment(32, {})["OMP_NUM_THREADS"] == "1"
    assert lb.child_environment(4, {"OMP_NUM_THREADS": "7"})["OMP_NUM_THREADS"] == "7"


def test_merge_joins_results_files_and_a_later_row_wins(tmp_path):
    def results(command, *rows):
        return {"meta": {"commands": [command]}, "results": [lb.empty_row(task, "maelre", recipe="r", command="c", status="error", message=m) for task, m in rows]}

    write_json_atomic(tmp_path / "a.json", results("sweep a", ("listops", "from a"), ("fsdd", "from a")))
    write_json_atomic(tmp_path / "b.json", results("sweep b", ("listops", "from b")))
    out, page = tmp_path / "lb.json", tmp_path / "lb.md"
    files = ["--out", str(out), "--table", str(page)]
    assert lb.main(["--merge", str(tmp_path / "a.json"), str(tmp_path / "b.json"), *files]) == 0
    merged = read_json(out)
    assert {(r["task"], r["message"]) for r in merged["results"]} == {("listops", "from b"), ("fsdd", "from a")}
    commands = merged["meta"]["commands"]
    assert commands[:2] == ["sweep a", "sweep b"] and commands[2].startswith("maelre lra --merge")
    again = lb.merge_documents([merged, results("sweep a", ("listops", "x"))], command=commands[2])
    assert again["meta"]["commands"] == ["sweep b", "sweep a", commands[2]]  # each once, where it ran last
    assert lb.BEGIN_MARKER in page.read_text() and "from b" in page.read_text()
    with pytest.raises(SystemExit):
        lb.main(["--merge", str(page), *files])  # not a results file


def test_a_compiled_recipe_plans_epochs_without_their_short_last_batch():
    from maelre.bench.lra_results import planned_steps
    from maelre.recipe import load_recipe

    eager = load_recipe(REPO / "recipes" / "scifar10.yaml", ["trainer.compile=false"])
    compiled = load_recipe(REPO / "recipes" / "scifar10.yaml", ["trainer.compile=reduce-overhead"])
    assert planned_steps(eager, 45_000) == 100 * 176  # 175 full batches of 256 and one of 200
    assert planned_steps(compiled, 45_000) == 100 * 175  # the short batch dropped: one shape to capture
    assert planned_steps(compiled, 100) == 100  # a lone short batch is kept
