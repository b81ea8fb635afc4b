"""Summarise the resumable real-data leaderboard runs of one task into one JSON (rows with validation curves).

    python benchmarks/real_runs_summary.py --concurrent 5                 # sCIFAR-10 (the default task)
    python benchmarks/real_runs_summary.py --key image --concurrent 15    # LRA Image
    python benchmarks/real_runs_summary.py --key image --pareto docs/benchmarks --page docs/benchmarks/leaderboard.md

``--key`` is one of ``benchmarks/real_runs.sh``'s tasks (scifar10, image, text). Each run folder
(``benchmarks/results/KEY_partial_h200/NAME``) holds the ``results.json``
of its latest device call: test accuracy of the best-validation weights so far, the whole
validation history (restored from the checkpoint), and that call's training seconds. The
summary keeps a ledger of calls per run: a call is added when the run's global step has
moved past the last call recorded, so running this twice after one call changes nothing.

A run's budget (``max_epochs`` or ``max_steps``) is read from its own ``recipe.yaml``.

``--leaderboard-rows OUT`` writes the runs as rows of the leaderboard's results file (task
KEY, data ``real``), for ``maelre lra --merge benchmarks/results/leaderboard.json OUT``;
a run short of its budget is a ``time_limit`` row that says how far it got.

``--pareto DIR`` draws the summary as the leaderboard's accuracy-against-cost view
(``maelre.bench.lra_pareto``) into ``DIR/pareto_KEY_partial.png`` and prints its table;
``--page`` also puts the table between the ``KEY-pareto`` markers of that page. The runs
shared the GPU, so their training seconds are shared wall time; where the merge ablation timed
a backbone's train step alone at this shape (``--alone-costs``; sCIFAR-10 only), steps x that time is used.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from maelre.bench.lra_pareto import MIB, pareto_table, plot_pareto, task_points, trained_step_field  # noqa: E402
from maelre.bench.lra_report import splice_generated  # noqa: E402
from maelre.bench.lra_results import DESCRIPTION, PARTIAL, empty_row, fill_from_recipe, fill_from_results  # noqa: E402
from maelre.bench.lra_tasks import TASKS  # noqa: E402
from maelre.engine.fit_types import TrainerConfig  # noqa: E402
from maelre.fileio import read_json, write_json_atomic, write_text_atomic  # noqa: E402
from maelre.recipe import load_recipe  # noqa: E402
from maelre.registry import make_config  # noqa: E402

RUNS = {
    "scifar10": ("recipes/scifar10.yaml", "sCIFAR-10", "scifar10 (real CIFAR-10, ECP setting, recipes/scifar10.yaml)"),
    "image": ("recipes/lra_image.yaml", "LRA Image", "image (real CIFAR-10, LRA's grayscale model and 200 epochs, recipes/lra_image.yaml)"),
    "text": ("recipes/lra_text.yaml", "LRA Text", "text (real IMDB bytes, LRA's model and 20,000 steps, recipes/lra_text.yaml)"),
}
"""``real_runs.sh`` task -> (recipe, title, description of a new summary file)."""
ALONE_COSTS = [Path("benchmarks/results/merge_ablation_cost_h200_round4.json"), Path("benchmarks/results/merge_ablation_cost_h200.json")]
"""Train-step times measured alone, the first file that has a row winning (round 4 timed every backbone in one call)."""
ALONE_RUNS = "benchmarks/results/alone_cost_{key}_h200.json"
"""Whole runs timed alone (``benchmarks/alone_cost.py``), read first when the file exists."""
ALONE_ROWS = {
    "maelre": ("vconv", "rope"), "maelre_noconv": ("auto1", "rope"), "transformer": ("transformer", "learned"), "transformer_rope": ("transformer", "rope"),
    "ecp": ("ecp", "rope"), "perceiver_ar": ("perceiver_ar", "learned"),
}
"""Run name -> (row, positions) of ``merge_ablation_cost.py`` timed alone at sCIFAR-10's shape (a run without a timing falls back to wall time)."""
LEADERBOARD_RUNS = {
    "scifar10": {"maelre_learned_lr2x": "maelre", "transformer_lr2x": "transformer", "transformer_rope_learned_lr2x": "transformer_rope",
                 "ecp_learned_lr2x": "ecp", "perceiver_ar_lr2x": "perceiver_ar"},
    "image": {"maelre_compiled": "maelre", "transformer_compiled": "transformer", "transformer_rope": "transformer_rope",
              "ecp": "ecp", "perceiver_ar": "perceiver_ar"},
    "text": {"maelre_compiled": "maelre", "transformer_compiled": "transformer", "transformer_rope": "transformer_rope",
             "ecp": "ecp", "perceiver_ar": "perceiver_ar"},
}
"""Task -> run -> the leaderboard row (backbone) it is, for a task whose rows are not the runs named after their
backbone: sCIFAR-10's recipe since session 18 (learned positions, lr 0.002); LRA Image's and LRA Text's MAELRE and
transformer, trained again compiled as the recipes now train (sessions 20-21), whose cost target is judged on that pair. The task's other runs are
diagnostics, its earlier rows among them (of the row of their backbone)."""
COST_TWINS = {"maelre_learned_lr2x": "maelre", "transformer_lr2x": "transformer", "transformer_rope_learned_lr2x": "transformer_rope",
              "ecp_learned_lr2x": "ecp", "perceiver_ar_lr2x": "perceiver_ar",
              **{f"{n}_compiled": n for n in ("maelre", "transformer", "transformer_rope", "ecp", "perceiver_ar")}}
"""Run -> the run whose step timed alone stands for its own until one times it: the same model and data pipeline.
The learning rate does not change a step; learned positions add one ``[N, D]`` parameter to the input (a single add);
``NAME_compiled`` is run NAME compiled, so NAME's compiled timing (``alone_cost.py --tag compiled``) is its step."""
DIAGNOSTICS = {"transformer_cls": "transformer", "transformer_rope_cls": "transformer_rope", "transformer_mlphead": "transformer",
               "ecp_learned": "ecp", "ecp_learned_lr2x": "ecp", "transformer_rope_lr2x": "transformer_rope",
               "transformer_rope_learned_lr2x": "transformer_rope", "maelre_learned_lr2x": "maelre"}
"""Runs that test a hypothesis about a leaderboard row (CLS pooling, LRA's, instead of the mean; twice the learning
rate; learned positions) -> the row they test: summarised with their curves, never leaderboard rows or Pareto points."""
SHARED_KEYS = ("dim", "depth", "heads", "mlp_ratio", "dropout", "drop_path", "rope")
"""Settings a row already reports under ``model``."""


def plot_name(key: str) -> str:
    return f"pareto_{key}_partial.png"


def markers(key: str) -> tuple[str, str]:
    """The begin and end markers of a page's generated Pareto block for task ``key``."""
    flag = "" if key == "scifar10" else f" --key {key}"
    return (f"<!-- {key}-pareto:begin (generated by `python benchmarks/real_runs_summary.py{flag} --pareto`) -->",
            f"<!-- {key}-pareto:end -->")


def row_of(key: str, name: str) -> str | None:
    """The leaderboard row (backbone) run ``name`` of task ``key`` is, ``None`` for a diagnostic."""
    runs = LEADERBOARD_RUNS.get(key)
    if runs is not None:
        return runs.get(name)
    return None if name in DIAGNOSTICS else name


def diagnostic_of(key: str, name: str) -> str | None:
    """The row a diagnostic run tests (``None``: ``name`` is a leaderboard row)."""
    if row_of(key, name) is not None:
        return None
    return DIAGNOSTICS.get(name) or name.removesuffix("_noconv")


def run_budget(trainer: TrainerConfig) -> tuple[int, str]:
    """(budget, unit) of a run from its recipe's trainer: its ``max_epochs``, else its ``max_steps``."""
    if trainer.max_epochs is not None:
        return trainer.max_epochs, "epochs"
    return trainer.max_steps, "steps"


def summarise_run(run_dir: Path, previous: dict | None, concurrent: int, gpu: str, key: str) -> dict:
    """One summary row for a run folder; ``previous`` is its row from the last summary (or None)."""
    result = read_json(run_dir / "results.json")
    trainer = load_recipe(run_dir / "recipe.yaml").trainer
    budget, unit = run_budget(trainer)
    done = result["epochs"] if unit == "epochs" else result["global_step"]
    calls = list((previous or {}).get("calls", []))
    start = calls[-1]["steps"][1] if calls else 0
    step = result["global_step"]
    date = (previous or {}).get("date")
    if step > start:
        # results.json just came back from the device: its mtime is the call's (a checkout's is the clone's)
        date = dt.datetime.fromtimestamp((run_dir / "results.json").stat().st_mtime, dt.timezone.utc).isoformat(timespec="seconds")
        resumed = resumed_step(result)
        if resumed > start:  # calls whose results.json never came back (or was never summarised): their time is unknown
            calls.append({"steps": [start, resumed], "train_seconds": None, "concurrent_runs": None})
            start = resumed
        calls.append({"steps": [start, step], "train_seconds": round(result["throughput"]["train_seconds"], 1),
                      "concurrent_runs": concurrent})
    seconds = [c["train_seconds"] for c in calls]
    history = [h for h in result["history"] if h.get("val/acc") is not None]
    return {
        "name": run_dir.name,
        "row": row_of(key, run_dir.name),
        "compile": trainer.compile,
        "diagnostic_of": diagnostic_of(key, run_dir.name),
        "partial": done < budget or result.get("call_ended_early", False),
        "epochs_done": result["epochs"],
        f"{unit}_budget": budget,
        "steps": step,
        # None: the call that wrote results.json ran with trainer.test_partial off (real_runs.sh's default)
        "test_accuracy": None if result["metrics"]["test/acc"] is None else round(100 * result["metrics"]["test/acc"], 2),
        # None: the call's deadline came before the run's first validation
        "val_best": None if result["metrics"]["val/best_acc"] is None else round(100 * result["metrics"]["val/best_acc"], 2),
        # None where a call's time is unknown (see resumed_step): never a sum that looks whole but is not
        "train_seconds_shared": None if None in seconds else round(sum(seconds), 1),
        "calls": calls,
        "peak_memory_mib": round(result["peak_memory"]["bytes"] / 2**20),
        "val_curve": [[h["epoch"], round(100 * h["val/acc"], 2)] for h in history],
        "gpu": gpu,
        "run_dir": str(run_dir),
        "built_differently": (previous or {}).get("built_differently") if (built := built_differently(run_dir)) is None else built,
        "date": date,
    }


def resumed_step(result: dict) -> int:
    """The global step the call that wrote ``result`` resumed from (0 for a fresh run): its checkpoint's ``step-NNNNNNN`` name."""
    resumed = result.get("resumed_from")
    return int(Path(resumed).name.removeprefix("step-")) if resumed and Path(resumed).name.startswith("step-") else 0


def timed_as(cost_rows: list[dict], name: str, key: str, tag: str = "") -> str:
    """The run whose ``alone_cost.py`` timing (``--tag tag``) stands for run ``name``: itself where it was timed, else its
    ``COST_TWINS`` run."""
    timed = {r.get("name") for r in cost_rows if (r.get("task"), r.get("tag") or "", r.get("status")) == (key, tag, "ok")}
    return name if name in timed else COST_TWINS.get(name, name)


def whole_run_ms(cost_rows: list[dict], name: str, key: str, tag: str = "") -> float | None:
    """Steady train-step time (ms) of run ``name`` of task ``key`` timed alone by ``alone_cost.py`` (``--tag tag``; "" untagged).

    A run not timed itself takes its ``COST_TWINS`` run's time (``timed_as``).
    """
    name = timed_as(cost_rows, name, key, tag)
    return next((r["steady_step_ms"] for r in cost_rows
                 if (r.get("task"), r.get("name"), r.get("tag") or "", r.get("status")) == (key, name, tag, "ok")), None)


def compiled_step_ms(cost_rows: list[dict], name: str, key: str) -> float | None:
    """Train-step time (ms) of run ``name`` alone, compiled (``alone_cost.py --tag compiled``); ``None`` if not timed."""
    return whole_run_ms(cost_rows, name, key, tag="compiled")


def alone_step_ms(cost_rows: list[dict], name: str, key: str = "scifar10") -> float | None:
    """Train-step time (ms) of run ``name`` alone on the GPU, eager; ``None`` if nothing timed it.

    Rows of ``benchmarks/alone_cost.py`` (the whole run timed alone: ``task`` and ``name``) come
    first; only where none exists for the task, for sCIFAR-10, the merge ablation's median step of
    the backbone at the task shape. The two measure different things (the whole run against the
    backbone with a linear head), so one task never mixes them: a run that alone_cost.py has not
    timed yet gets ``None`` while another run of its task has a row.
    """
    untagged = [r for r in cost_rows if not r.get("tag")]  # a tagged row timed a variant (compiled)
    whole = whole_run_ms(untagged, name, key)
    name = COST_TWINS.get(name, name)
    if whole is not None or key != "scifar10" or name not in ALONE_ROWS or any(r.get("task") == key for r in untagged):
        return whole
    row, pos = ALONE_ROWS[name]
    fields = ("row", "pos", "shape", "cuda_graph", "status")
    return next((r["median_ms"] for r in cost_rows if tuple(r.get(f) for f in fields) == (row, pos, "task", False, "ok")), None)


def leaderboard_row(key: str, row: dict, cost_rows: list[dict]) -> dict:
    """A summary row as the leaderboard rows ``lra_pareto`` reads, with its steps timed alone (eager and compiled)."""
    return {
        "task": key, "backbone": row_of(key, row["name"]), "status": "ok", "accuracy": row["test_accuracy"], "steps": row["steps"],
        "epochs": row["epochs_done"], "train_seconds": row["train_seconds_shared"],
        "concurrent_runs": concurrent_of(row),
        "peak_memory": {"kind": "cuda_max_allocated", "bytes": row["peak_memory_mib"] * MIB},
        "alone_step_ms": alone_step_ms(cost_rows, row["name"], key),
        "alone_step_ms_compiled": compiled_step_ms(cost_rows, row["name"], key), "compile": row.get("compile"),
    }  # fmt: skip


def built_differently(run_dir: Path) -> dict | None:
    """Backbone settings of the model the run built (its checkpoint's ``model.json``) that today's defaults would not give.

    A run resumes with the model it started with, so when a default changed since (MAELRE's
    ``value_conv``), its recipe alone no longer describes it. ``None`` when the folder has no
    checkpoint (a fresh clone: checkpoints stay out of git); the summary row keeps what an
    earlier summary read.
    """
    found = next(run_dir.glob("checkpoints/*/model.json"), None)
    if found is None:
        return None
    built = read_json(found)
    defaults = dataclasses.asdict(make_config(built["backbone"], **{k: built["backbone_config"][k] for k in ("dim", "depth", "heads")}))
    return {k: v for k, v in built["backbone_config"].items() if k in defaults and defaults[k] != v and k not in SHARED_KEYS}


def concurrent_of(entry: dict) -> int | None:
    """The most runs that shared the GPU in any recorded call of a summary row (``None``: no call recorded it)."""
    return max((c["concurrent_runs"] for c in entry["calls"] if c["concurrent_runs"] is not None), default=None)


def budget_of(entry: dict) -> tuple[int, str]:
    """(budget, unit) of a summary row: epochs, or steps for a run with a step budget."""
    return (entry["epochs_budget"], "epochs") if "epochs_budget" in entry else (entry["steps_budget"], "steps")


def leaderboard_entries(summary: dict, key: str) -> list[dict]:
    """The summary's rows that are leaderboard rows (not diagnostics)."""
    return [r for r in summary["rows"] if row_of(key, r["name"]) is not None]


def results_rows(summary: dict, cost_rows: list[dict], key: str = "scifar10") -> dict:
    """The summary's runs as a leaderboard results document (``maelre.bench.lra_results`` rows)."""
    rows = []
    for entry in leaderboard_entries(summary, key):
        run_dir = Path(entry["run_dir"])
        recipe, results = load_recipe(run_dir / "recipe.yaml"), read_json(run_dir / "results.json")
        known = all(c["train_seconds"] is not None for c in entry["calls"])  # an unrecorded entry can span several calls
        calls = f"{len(entry['calls'])} device calls" if known else f"{len(entry['calls'])} or more device calls"
        row = empty_row(key, row_of(key, entry["name"]), recipe=RUNS[key][0],
                        command=f"bash benchmarks/real_runs.sh {key} (run {entry['name']}, resumed over {calls})")
        fill_from_recipe(row, TASKS[key], recipe)
        fill_from_results(row, recipe, results, gpu=entry["gpu"])
        built = built_differently(run_dir)
        built = entry.get("built_differently") if built is None else built
        if built is None:
            raise SystemExit(f"{run_dir} has no checkpoint and its summary row no 'built_differently': run the summary where "
                             "the run's checkpoints are (device_xfer.py unpack puts them back) before writing leaderboard rows")
        row["backbone_config"] = {**row["backbone_config"], **built}
        if entry["partial"]:
            budget, unit = budget_of(entry)
            done = entry["epochs_done"] if unit == "epochs" else entry["steps"]
            so_far = f"{done} of {budget} {unit}" if done < budget else (
                f"{entry['steps']} of {row['budget']['planned_steps']} steps (a call's deadline cut its last epoch short)")
            row.update(status="time_limit", message=f"{PARTIAL} {so_far} so far; resumes with real_runs.sh")
        row.update(train_seconds=entry["train_seconds_shared"], concurrent_runs=concurrent_of(entry),
                   alone_step_ms=alone_step_ms(cost_rows, entry["name"], key),
                   alone_step_ms_compiled=compiled_step_ms(cost_rows, entry["name"], key), compile=recipe.trainer.compile,
                   run_dir=str(run_dir),
                   date=entry.get("date"))
        rows.append(row)
    flag = "" if key == "scifar10" else f" --key {key}"
    return {"meta": {"description": DESCRIPTION, "commands": [f"python benchmarks/real_runs_summary.py{flag} --leaderboard-rows OUT"]},
            "results": rows}


def write_pareto(summary: dict, cost_rows: list[dict], folder: Path, page: Path | None, cost_files: Sequence[Path] = tuple(ALONE_COSTS),
                 key: str = "scifar10") -> str:
    """Plot the summary's accuracy against cost into ``folder``; splice its table into ``page``; return the table.

    ``cost_files``: where ``cost_rows`` came from, named in the table's note.
    """
    sources = ", ".join(f"`{p}`" for p in cost_files)
    every = leaderboard_entries(summary, key)
    entries = [r for r in every if r["test_accuracy"] is not None]  # a point needs a test accuracy
    if not entries:
        raise SystemExit(f"no {key} run has a test accuracy yet (real_runs.sh tests a run when it completes its budget)")
    rows = [leaderboard_row(key, r, cost_rows) for r in entries]
    points = task_points(rows)
    budget, unit = budget_of(entries[0])
    done = sorted(r["epochs_done"] if unit == "epochs" else r["steps"] for r in entries)
    # the task, not just the points drawn: a run still training (untested) makes the view partial
    state = "PARTIAL" if len(entries) < len(every) or any(r.get("partial", True) for r in entries) else "complete"
    shown = f"{len(entries)} of {len(every)} runs tested, " if len(entries) < len(every) else ""
    title = RUNS[key][1]
    plot_pareto(points, folder / plot_name(key), f"{title}, {state} ({shown}{done[0]}-{done[-1]} of {budget} {unit}), H200")
    untimed = [r["name"] for r, lb in zip(entries, rows) if lb[trained_step_field(lb)] is None]
    on_alone = any(p.cost_source == "alone step time" for p in points)
    if untimed and not on_alone:
        note = (f"\nGPU-s are wall time while the runs shared one GPU: {', '.join(untimed)} have no step time measured alone yet "
                f"({sources}), and one table never mixes the two kinds of cost.\n")
    elif any(r.get("task") == key for r in cost_rows):
        warmups = sorted({r["steps"] - r["steady_steps"] for r in cost_rows if r.get("task") == key and not r.get("tag") and "steady_steps" in r})
        after = "/".join(str(w) for w in warmups) or "50"
        note = ("\nGPU-s from \"alone step time\": steps x the run's own train step as it trained (compiled where its recipe compiles), "
                "timed alone on the GPU for a few hundred steps "
                f"with its recipe, data pipeline and optimizer (`benchmarks/alone_cost.py`, {sources}; the steady rate after {after} steps, validation excluded).\n")
        stand_ins = [(r["name"], timed_as(cost_rows, r["name"], key, "compiled" if lb["compile"] else ""))
                     for r, lb in zip(entries, rows) if lb[trained_step_field(lb)] is not None]
        twinned = [f"{name} by {twin}" for name, twin in stand_ins if twin != name]
        if twinned:
            note += (f"Not timed themselves, so timed by the run with the same model and step (NAME_compiled: run NAME's compiled "
                     f"timing; otherwise another learning rate, or learned positions, which add one [N, D] parameter): {', '.join(twinned)}.\n")
    else:
        note = ("\nGPU-s from \"alone step time\": steps x the median train step of the backbone with a linear head and AdamW, timed alone "
                f"at this shape ({sources}, eager, the first file that has the row); it leaves out the pixel embedding, augmentation and the trainer (a lower bound).\n")
    if untimed and on_alone:
        note += (f"{', '.join(untimed)}: no step time measured alone in the setting the run trained with, so no GPU-s here "
                 "(a shared wall time would not compare).\n")
    table = pareto_table(points) + note
    if page is not None:
        begin, end = markers(key)
        block = f"{begin}\n\n![{title} {state.lower()}: accuracy against cost]({plot_name(key)})\n\n{table}\n{end}\n\n"
        write_text_atomic(page, splice_generated(page.read_text(encoding="utf-8"), block, begin, end))
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--key", choices=sorted(RUNS), default="scifar10", help="real_runs.sh task (default: %(default)s)")
    parser.add_argument("--root", type=Path, help="folder of run folders (default: benchmarks/results/KEY_partial_h200)")
    parser.add_argument("--out", type=Path, help="summary JSON, read first for the call ledger (default: benchmarks/results/KEY_partial_h200.json)")
    parser.add_argument("--concurrent", type=int, help="runs that shared the GPU in the latest call (needed unless --pareto)")
    parser.add_argument("--gpu", default="NVIDIA H200")
    parser.add_argument("--pareto", type=Path, metavar="DIR", help="draw the summary's accuracy against cost to DIR/pareto_KEY_partial.png instead of summarising")
    parser.add_argument("--page", type=Path, help="with --pareto: the markdown page whose KEY-pareto block takes the table")
    parser.add_argument("--alone-costs", type=Path, action="append", default=None,
                        help="train-step times measured alone, repeatable, the first file with a row wins (default: " + ALONE_RUNS + " where it exists, then "
                             + ", ".join(map(str, ALONE_COSTS)) + ")")
    parser.add_argument("--leaderboard-rows", type=Path, metavar="OUT", help="write the summary's runs as leaderboard result rows to OUT instead of summarising")
    args = parser.parse_args(argv)
    key = args.key
    root = args.root or Path(f"benchmarks/results/{key}_partial_h200")
    out = args.out or Path(f"benchmarks/results/{key}_partial_h200.json")
    runs_alone = Path(ALONE_RUNS.format(key=key))
    cost_files = args.alone_costs or [*([runs_alone] if runs_alone.exists() else []), *ALONE_COSTS]
    cost_rows = [row for path in cost_files for row in read_json(path)["rows"]]
    if args.leaderboard_rows is not None:
        write_json_atomic(args.leaderboard_rows, results_rows(read_json(out), cost_rows, key))
        return 0
    if args.pareto is not None:
        print(write_pareto(read_json(out), cost_rows, args.pareto, args.page, cost_files, key))
        return 0
    if args.concurrent is None:
        parser.error("--concurrent is required to summarise the run folders")
    old = read_json(out) if out.exists() else {"rows": []}
    previous = {row["name"]: row for row in old["rows"]}
    runs = sorted(p.parent for p in root.glob("*/results.json"))
    if not runs:
        print(f"no run folders with results.json under {root}", file=sys.stderr)
        return 2
    rows = [summarise_run(run, previous.get(run.name), args.concurrent, args.gpu, key) for run in runs]
    ranked = [row for row in rows if row["diagnostic_of"] is None] or rows  # the leaderboard rows decide the status
    minutes = max(sum(c["train_seconds"] or 0 for c in row["calls"]) for row in ranked) / 60
    unknown = any(c["train_seconds"] is None for row in ranked for c in row["calls"])
    partial = any(row["partial"] for row in ranked)
    budget, unit = budget_of(ranked[0])
    known = " (at least: some calls' time was not recorded)" if unknown else ""
    status = (f"{'partial' if partial else 'complete'}: {minutes:.1f} GPU-minutes{known} so far of a {budget}-{unit[:-1]} budget, "
              f"runs sharing one GPU; resume with bash benchmarks/real_runs.sh {key}")
    write_json_atomic(out, {"task": old.get("task", RUNS[key][2]), "status": status, "rows": rows})
    for row in rows:
        done = row["epochs_done"] if unit == "epochs" else row["steps"]
        cut = " (cut short)" if row["partial"] and done >= budget_of(row)[0] else ""
        note = f"  (diagnostic of {row['diagnostic_of']})" if row["diagnostic_of"] else ""
        test = "untested" if row["test_accuracy"] is None else f"{row['test_accuracy']:.2f}"
        print(f"{row['name']:20s} {done:5d}/{budget_of(row)[0]} {unit}{cut}  test {test}  "
              f"val best {'none yet' if row['val_best'] is None else format(row['val_best'], '.2f')}  "
              f"{_seconds(row['train_seconds_shared'])} shared{note}")
    return 0


def _seconds(value: float | None) -> str:
    return "unknown s" if value is None else f"{value:.0f} s"


if __name__ == "__main__":
    raise SystemExit(main())
