"""The accuracy-against-cost view of ``maelre lra``: the Pareto front, cost points, the table and the plots."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

import maelre.bench.leaderboard as lb
from maelre.bench.lra_pareto import MIB, cost_point, pareto_front, pareto_table, plot_pareto, points_by_task, task_points
from maelre.bench.report import write_json_atomic


def brute_force_front(points):
    """The definition: a point with both values that no other point dominates."""

    def dominates(j, i):
        (aj, cj), (ai, ci) = points[j], points[i]
        return aj >= ai and cj <= ci and (aj > ai or cj < ci)

    complete = [i for i, (a, c) in enumerate(points) if a is not None and c is not None]
    return [i in complete and not any(dominates(j, i) for j in complete if j != i) for i in range(len(points))]


def test_front_matches_the_definition_on_random_points():
    rng = random.Random(0)
    for _ in range(300):
        # few distinct values, so equal costs, equal accuracies and duplicates are common
        points = [(rng.choice([None, *range(4)]), rng.choice([None, *range(4)])) for _ in range(rng.randint(0, 7))]
        assert pareto_front(points) == brute_force_front(points), points
        assert sorted(pareto_front(points[::-1])) == sorted(pareto_front(points))  # order does not matter


@pytest.mark.parametrize(
    ("points", "front"),
    [
        ([(90.0, 10.0), (80.0, 20.0)], [True, False]),  # dominated on both
        ([(90.0, 10.0), (80.0, 10.0)], [True, False]),  # equal cost: the less accurate is off
        ([(90.0, 10.0), (90.0, 20.0)], [True, False]),  # equal accuracy: the costlier is off
        ([(90.0, 10.0), (90.0, 10.0)], [True, True]),  # identical: neither dominates
        ([(90.0, 20.0), (80.0, 10.0)], [True, True]),  # a trade-off
        ([(50.0, 5.0)], [True]),
        ([(99.0, None), (50.0, 5.0)], [False, True]),  # no cost: off the front, dominates nothing
        ([(None, 1.0), (50.0, float("nan"))], [False, False]),
        ([], []),
    ],
)
def test_front_hand_cases(points, front):
    assert pareto_front(points) == front


def row(backbone, accuracy, train_seconds=100.0, *, task="listops", runs=1, memory=2 * MIB, **extra):
    """A leaderboard row (every key of ``ROW_KEYS``) with a cost."""
    full = lb.empty_row(task, backbone, recipe=f"recipes/{task}.yaml", command="maelre fit")
    full.update(
        accuracy=accuracy, steps=1000, epochs=4, train_seconds=train_seconds, concurrent_runs=runs, data="generated", gpu="H200",
        samples={"train": 10, "val": 2, "test": 20}, full_test_split=True,
        peak_memory=None if memory is None else {"kind": "cuda_max_allocated", "bytes": memory},
    )  # fmt: skip
    full.update(extra)
    return full


def test_cost_prefers_a_step_time_measured_alone_and_flags_shared_wall_time():
    alone = cost_point(row("a", 50.0, 400.0, runs=5, alone_step_ms=20.0))
    assert (alone.gpu_seconds, alone.cost_source, alone.shared_runs, alone.shared_cost) == (20.0, "alone step time", 5, False)
    shared = cost_point(row("b", 50.0, 400.0, runs=5))
    assert (shared.gpu_seconds, shared.cost_source, shared.shared_cost) == (400.0, "shared wall", True)
    solo = cost_point(row("c", 50.0, 30.0, concurrent_runs=None, memory=3 * MIB))  # rows from before --jobs ran alone
    assert (solo.cost_source, solo.shared_runs, solo.peak_mib) == ("alone", 1, 3.0)
    bare = cost_point(row("d", 50.0, None, memory=None))
    assert bare.gpu_seconds is None and bare.peak_mib is None and bare.cost_source == "—"


def test_one_task_never_mixes_alone_step_times_with_wall_times():
    timed, untimed = row("a", 50.0, 400.0, runs=5, alone_step_ms=20.0), row("b", 52.0, 400.0, runs=5)
    mixed = task_points([timed, untimed])
    assert [(p.gpu_seconds, p.cost_source) for p in mixed] == [(400.0, "shared wall"), (400.0, "shared wall")]
    both = task_points([timed, {**untimed, "alone_step_ms": 50.0}])
    assert [(p.gpu_seconds, p.cost_source) for p in both] == [(20.0, "alone step time"), (50.0, "alone step time")]
    # without a wall time for every row, the alone step times stay; the untimed row gets no GPU-seconds, not a wall time
    unrecorded = task_points([{**timed, "train_seconds": None}, untimed])
    assert [(p.gpu_seconds, p.cost_source) for p in unrecorded] == [(20.0, "alone step time"), (None, "—")]


def table_cells(text):
    """``{backbone: {header: cell}}`` of a markdown table."""
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in lines[0].split("|")[1:-1]]
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in lines[2:]]
    return {cells[0]: dict(zip(header, cells)) for cells in rows}


def test_table_marks_the_front_of_each_cost_and_keeps_rows_without_a_cost():
    points = [
        cost_point(row("fast", 80.0, 50.0, memory=8 * MIB)),
        cost_point(row("slow", 70.0, 90.0, runs=3, memory=1 * MIB)),
        cost_point(row("unmeasured", 99.0, None, memory=None)),
    ]
    cells = table_cells(pareto_table(points))
    assert [cells["fast"][k] for k in ("front: GPU-s", "front: memory", "on the GPU", "GPU-s from")] == ["★", "★", "alone", "alone"]
    assert [cells["slow"][k] for k in ("front: GPU-s", "front: memory", "on the GPU", "GPU-s from")] == ["", "★", "shared (3 runs)", "shared wall"]
    assert [cells["unmeasured"][k] for k in ("train GPU-s", "peak MiB", "front: GPU-s", "front: memory")] == ["—"] * 4
    assert cells["unmeasured"]["test acc %"] == "99.00" and cells["fast"]["peak MiB"] == "8"


def test_plot_survives_a_panel_without_data(tmp_path):
    path = plot_pareto([cost_point(row("a", 50.0, memory=None)), cost_point(row("b", 60.0, None, memory=None))], tmp_path / "p.png", "t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not list(tmp_path.glob(".*"))  # no temporary left


def test_report_writes_a_plot_and_a_cost_table_per_task(tmp_path):
    results = [
        row("maelre", 60.0, 100.0, runs=4, alone_step_ms=30.0),  # 30 s alone
        row("transformer", 55.0, 40.0, runs=4, alone_step_ms=50.0),  # cheaper by shared wall time, but 50 s alone: dominated
        row("ecp", 65.0, 300.0, memory=None, alone_step_ms=200.0),
        {**row("perceiver_ar", None), "status": "error", "message": "boom"},
        row("maelre", 90.0, 10.0, task="fsdd"),
    ]
    write_json_atomic(tmp_path / "lb.json", {"meta": {}, "results": results})
    page = tmp_path / "docs" / "lb.md"
    assert lb.main(["--report-only", "--out", str(tmp_path / "lb.json"), "--table", str(page)]) == 0
    for task in ("listops", "fsdd"):
        assert (page.parent / f"pareto_{task}.png").stat().st_size > 1000
    assert not (page.parent / "pareto_pathfinder.png").exists()
    text = page.read_text()
    section = text.split("#### ListOps", 1)[1].split("####", 1)[0]
    assert "![ListOps: accuracy against cost](pareto_listops.png)" in section
    cells = table_cells(section)
    assert set(cells) == {"maelre", "transformer", "ecp"}  # the failed run has no accuracy to place
    assert {b: c["front: GPU-s"] for b, c in cells.items()} == {"maelre": "★", "transformer": "", "ecp": "★"}
    assert {b: c["front: memory"] for b, c in cells.items()} == {"maelre": "★", "transformer": "", "ecp": "—"}
    assert cells["maelre"]["GPU-s from"] == "alone step time" and cells["maelre"]["train GPU-s"] == "30"
    assert cells["transformer"]["on the GPU"] == "shared (4 runs)" and cells["transformer"]["GPU-s from"] == "alone step time"


def test_points_by_task_skips_unfinished_rows_and_keeps_order():
    rows = [row("b", 1.0), row("a", 2.0, task="fsdd"), {**row("c", None), "status": "not_run"}, row("a", 3.0)]
    assert {t: [p.backbone for p in ps] for t, ps in points_by_task(rows).items()} == {"listops": ["b", "a"], "fsdd": ["a"]}


@pytest.fixture
def script(benchmark_script):
    return benchmark_script("real_runs_summary")


def test_partial_scifar_summary_draws_its_pareto_view_on_one_kind_of_cost(tmp_path, script):

    def summary_row(name, acc, steps, shared_s, mib):
        calls = [{"steps": [0, steps // 2], "train_seconds": shared_s / 2, "concurrent_runs": 5}, {"steps": [steps // 2, steps], "train_seconds": shared_s / 2, "concurrent_runs": 5}]
        return {"name": name, "epochs_done": 10, "epochs_budget": 100, "steps": steps, "test_accuracy": acc,
                "train_seconds_shared": shared_s, "peak_memory_mib": mib, "calls": calls}  # fmt: skip

    # sCIFAR-10's leaderboard runs (real_runs_summary.LEADERBOARD_RUNS); a row is named by its backbone
    summary = {"rows": [summary_row("maelre_learned_lr2x", 50.0, 1000, 500.0, 3000), summary_row("ecp_learned_lr2x", 52.0, 900, 500.0, 2500)]}
    timed = {"row": "vconv", "pos": "rope", "shape": "task", "status": "ok"}  # the row of the default MAELRE
    costs = [{**timed, "cuda_graph": True, "median_ms": 1.0}, {**timed, "cuda_graph": False, "median_ms": 20.0}, {**timed, "pos": "learned", "cuda_graph": False, "median_ms": 2.0}]
    page = tmp_path / "page.md"
    begin, end = script.markers("scifar10")
    page.write_text(f"# Page\n\n## sCIFAR\n\nbefore\n\n{begin}\nstale\n{end}\n\n## Next\n")
    table = script.write_pareto(summary, costs, tmp_path, page)
    assert (tmp_path / script.plot_name("scifar10")).stat().st_size > 1000
    cells = table_cells(table)  # ecp was never timed alone, so both rows fall back to the shared wall time
    assert (cells["maelre"]["train GPU-s"], cells["maelre"]["GPU-s from"], cells["maelre"]["on the GPU"]) == ("500", "shared wall", "shared (5 runs)")
    assert (cells["ecp"]["train GPU-s"], cells["ecp"]["GPU-s from"], cells["ecp"]["peak MiB"]) == ("500", "shared wall", "2500")
    assert (cells["maelre"]["front: GPU-s"], cells["ecp"]["front: GPU-s"], cells["maelre"]["front: memory"]) == ("", "★", "")
    assert "ecp_learned_lr2x have no step time measured alone yet" in table
    only_timed = script.write_pareto({"rows": summary["rows"][:1]}, costs, tmp_path, None)
    assert table_cells(only_timed)["maelre"]["train GPU-s"] == "20" and "alone step time" in only_timed
    unrecorded = {"rows": [{**summary["rows"][0], "train_seconds_shared": None}, summary["rows"][1]]}  # no wall time for all
    mixed = script.write_pareto(unrecorded, costs, tmp_path, None)  # so the alone time stays and ecp gets none
    assert (table_cells(mixed)["maelre"]["train GPU-s"], table_cells(mixed)["ecp"]["train GPU-s"]) == ("20", "—")
    assert "ecp_learned_lr2x: no step time measured alone in the setting the run trained with" in mixed
    text = page.read_text()
    assert "stale" not in text and text.index("before") < text.index(table) < text.index("## Next") and "\n\n## Next" in text


def test_leaderboard_rows_describe_the_model_each_run_built_not_todays_defaults(script):
    """maelre_noconv started before value_conv became 5: its recipe says nothing of it, its checkpoint does."""
    runs = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "scifar10_partial_h200"
    assert script.built_differently(runs / "maelre_noconv") == {"value_conv": None}
    assert script.built_differently(runs / "maelre") == {}
    # the folder decides what the row says it built; the name only makes it a leaderboard row (maelre's)
    summary = {"rows": [{"name": "maelre_learned_lr2x", "run_dir": str(runs / "maelre_noconv"), "gpu": "NVIDIA H200", "partial": True,
                         "epochs_done": 60, "epochs_budget": 100, "train_seconds_shared": 900.0,
                         "calls": [{"steps": [0, 10], "train_seconds": 900.0, "concurrent_runs": 8}]}]}  # fmt: skip
    (row,) = script.results_rows(summary, [])["results"]
    assert (row["task"], row["data"], row["gpu"], row["backbone_config"]["value_conv"]) == ("scifar10", "real", "NVIDIA H200", None)
    assert row["status"] == "time_limit" and "60 of 100 epochs" in row["message"]
    assert (row["train_seconds"], row["concurrent_runs"], row["alone_step_ms"]) == (900.0, 8, None)


def test_a_step_budget_run_is_summarised_against_its_own_recipe(tmp_path, script):
    """LRA Text counts steps, not epochs: its budget comes from the run's recipe.yaml, and rows say 'steps'."""
    run = tmp_path / "text" / "maelre"
    run.mkdir(parents=True)
    (run / "recipe.yaml").write_text((Path(__file__).resolve().parents[1] / "recipes" / "lra_text.yaml").read_text())
    result = {"global_step": 1500, "epochs": 2, "metrics": {"test/acc": 0.61, "val/best_acc": 0.62},
              "history": [{"epoch": 1, "val/acc": 0.55}, {"epoch": 2, "val/acc": 0.62}],
              "throughput": {"train_seconds": 300.0}, "peak_memory": {"bytes": 3 * 2**30}}  # fmt: skip
    (run / "results.json").write_text(json.dumps(result))
    row = script.summarise_run(run, None, concurrent=10, gpu="NVIDIA H200", key="text")
    assert (row["partial"], row["steps_budget"], row["steps"], row["test_accuracy"]) == (True, 20000, 1500, 61.0)
    assert "epochs_budget" not in row and script.budget_of(row) == (20000, "steps")
    begin, end = script.markers("text")
    assert "--key text" in begin and end == "<!-- text-pareto:end -->" and script.plot_name("text") == "pareto_text_partial.png"


def test_diagnostic_runs_are_summarised_but_never_leaderboard_rows(tmp_path, script):
    """transformer_cls tests a hypothesis about the transformer row: it keeps its curve in the summary,
    is named as the row it tests, and neither becomes a leaderboard row nor moves the task's status."""
    recipe = (Path(__file__).resolve().parents[1] / "recipes" / "lra_image.yaml").read_text()
    for name, epochs in (("transformer_compiled", 200), ("transformer_cls", 105)):  # LRA Image's transformer row is its compiled run
        run = tmp_path / "image" / name
        run.mkdir(parents=True)
        (run / "recipe.yaml").write_text(recipe)
        result = {"global_step": 176 * epochs, "epochs": epochs, "metrics": {"test/acc": 0.36, "val/best_acc": 0.37},
                  "history": [{"epoch": 1, "val/acc": 0.37}], "throughput": {"train_seconds": 300.0}, "peak_memory": {"bytes": 2**30}}  # fmt: skip
        (run / "results.json").write_text(json.dumps(result))
    out = tmp_path / "image.json"
    assert script.main(["--key", "image", "--root", str(tmp_path / "image"), "--out", str(out), "--concurrent", "7"]) == 0
    summary = json.loads(out.read_text())
    by_name = {r["name"]: r for r in summary["rows"]}
    assert (by_name["transformer_cls"]["diagnostic_of"], by_name["transformer_compiled"]["diagnostic_of"]) == ("transformer", None)
    assert by_name["transformer_cls"]["partial"] and summary["status"].startswith("complete")
    assert [e["name"] for e in script.leaderboard_entries(summary, "image")] == ["transformer_compiled"]


def test_calls_whose_results_never_came_back_leave_the_time_unknown_and_untested_calls_no_test_accuracy(tmp_path, script):
    """A call's results.json can be lost (a watchdog stopped the run while it tested) or skipped
    (trainer.test_partial off): the ledger records the steps it cannot time as unknown instead of
    summing what it has into a total that looks whole, and an untested call gives no test accuracy."""
    run = tmp_path / "text" / "maelre"
    run.mkdir(parents=True)
    (run / "recipe.yaml").write_text((Path(__file__).resolve().parents[1] / "recipes" / "lra_text.yaml").read_text())

    def call(step, resumed_from, acc):
        result = {"global_step": step, "epochs": 3, "metrics": {"test/acc": acc, "val/best_acc": 0.8}, "resumed_from": resumed_from,
                  "history": [{"epoch": 1, "val/acc": 0.8}], "throughput": {"train_seconds": 100.0}, "peak_memory": {"bytes": 2**30}}  # fmt: skip
        (run / "results.json").write_text(json.dumps(result))

    call(1000, None, 0.7)
    first = script.summarise_run(run, None, concurrent=5, gpu="NVIDIA H200", key="text")
    assert first["calls"] == [{"steps": [0, 1000], "train_seconds": 100.0, "concurrent_runs": 5}] and first["train_seconds_shared"] == 100.0
    call(3000, str(run / "checkpoints" / "step-0002000"), None)  # the call 1000 -> 2000 was never summarised
    later = script.summarise_run(run, first, concurrent=4, gpu="NVIDIA H200", key="text")
    assert later["calls"][1:] == [{"steps": [1000, 2000], "train_seconds": None, "concurrent_runs": None},
                                  {"steps": [2000, 3000], "train_seconds": 100.0, "concurrent_runs": 4}]  # fmt: skip
    assert later["train_seconds_shared"] is None and later["test_accuracy"] is None and script.concurrent_of(later) == 5
    summary = {"rows": [{**later, "run_dir": str(run), "gpu": "NVIDIA H200"}]}
    with pytest.raises(SystemExit, match="no text run has a test accuracy"):
        script.write_pareto(summary, [], tmp_path, None, key="text")


def test_the_view_is_partial_while_a_run_is_untested_even_when_every_drawn_point_finished(tmp_path, script, monkeypatch):
    titles = []
    monkeypatch.setattr(script, "plot_pareto", lambda points, path, title: titles.append(title))

    def summary_row(name, acc, partial):
        return {"name": name, "epochs_done": 29, "steps": 20000, "steps_budget": 20000, "test_accuracy": acc, "partial": partial,
                "train_seconds_shared": None, "peak_memory_mib": 3000, "calls": []}  # fmt: skip

    done = [summary_row("maelre_compiled", 85.7, False), summary_row("ecp", 65.2, False)]  # LRA Text's rows (LEADERBOARD_RUNS)
    script.write_pareto({"rows": [*done, summary_row("transformer_compiled", None, True)]}, [], tmp_path, None, key="text")
    script.write_pareto({"rows": done}, [], tmp_path, None, key="text")
    assert "PARTIAL (2 of 3 runs tested, 20000-20000 of 20000 steps)" in titles[0] and "complete (20000-20000" in titles[1]


def test_a_call_cut_before_its_first_validation_summarises_without_a_best_validation(tmp_path, script):
    run = tmp_path / "text" / "maelre"
    run.mkdir(parents=True)
    (run / "recipe.yaml").write_text((Path(__file__).resolve().parents[1] / "recipes" / "lra_text.yaml").read_text())
    result = {"global_step": 8, "epochs": 1, "call_ended_early": True, "metrics": {"test/acc": None, "val/best_acc": None},
              "history": [], "throughput": {"train_seconds": 130.0}, "peak_memory": {"bytes": 2**30}}  # fmt: skip
    (run / "results.json").write_text(json.dumps(result))
    row = script.summarise_run(run, None, concurrent=1, gpu="NVIDIA H200", key="text")
    assert (row["val_best"], row["test_accuracy"], row["partial"], row["val_curve"]) == (None, None, True, [])
    assert script.main(["--key", "text", "--root", str(tmp_path / "text"), "--out", str(tmp_path / "s.json"), "--concurrent", "1"]) == 0
