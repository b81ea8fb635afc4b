"""Accuracy leaderboard: every backbone on the Long Range Arena tasks (and FSDD) under one budget.

For each task (a recipe in ``recipes/``) and each backbone, the sweep runs the task's
recipe with ``model.backbone=<name>`` and the same overrides for every backbone: the
recipe fixes width, depth, heads, MLP ratio, optimizer and schedule; ``--budget-steps``
and ``--max-minutes`` fix the training budget. The only per-backbone settings are the
recipe's own ``model.backbone_config.<name>`` entries (ECP segment size, PerceiverAR
latents, ...); the padding multiple follows the backbone (see ``maelre.recipe``).

Each finished run appends a row to the results JSON (rewritten atomically after every
run, so a sweep cut short keeps what it finished). ``--resume`` skips pairs already
done; a failing run is recorded with status ``"error"`` and its message, and the sweep
goes on. The markdown leaderboard puts the published numbers (LRA paper, ECP paper)
beside ours and marks which of our rows ran on generated data or on
stand-in data. Method and reading guide: ``docs/benchmarks/leaderboard.md``.

``--jobs N`` (N > 1) trains up to N pairs at the same time, each in a child process
(``python -m maelre.bench.leaderboard`` for that pair alone, with the same options);
the parent merges each child's row as it ends. Every row records ``concurrent_runs``,
the N it ran under, since its ``train_seconds`` were measured while N runs shared the
device.

Beside the page, ``pareto_<task>.png`` plots each task's test accuracy against training
GPU-seconds and peak memory, and the page gets the matching tables (``lra_pareto``): which
backbones are on the Pareto front, and which costs are shared wall time.

Run ``maelre lra --help`` (or ``python benchmarks/leaderboard.py --help``).
"""
from __future__ import annotations

import argparse
import shlex
import sys

from maelre.bench.efficiency import parse_name_list
from maelre.bench.lra_children import (  # noqa: F401  (re-exported)
    CHILD_FILES,
    ChildRun,
    PlannedRun,
    child_command,
    child_environment,
    describe_exit,
    log_tail,
)
from maelre.bench.lra_config import SweepConfig
from maelre.bench.lra_report import (  # noqa: F401  (re-exported)
    BEGIN_MARKER,
    END_MARKER,
    render_markdown,
    splice_generated,
    write_report,
)
from maelre.bench.lra_results import (  # noqa: F401  (re-exported)
    DONE_STATUSES,
    ROW_KEYS,
    STATUSES,
    data_provenance,
    dataset_label,
    describe_row,
    empty_row,
    fill_from_results,
    merge_documents,
    planned_steps,
    row_key,
)
from maelre.bench.lra_sweep import Sweep, reuse_dataset_loads, run_one, run_sweep  # noqa: F401  (re-exported)
from maelre.bench.lra_targets import TARGETS, AccuracyTarget, evaluate_targets  # noqa: F401  (re-exported)
from maelre.bench.lra_tasks import DEFAULT_BACKBONES, DEFAULT_TASKS, PRESETS, PUBLISHED, TASKS, TaskSpec  # noqa: F401  (re-exported)
from maelre.bench.report import read_json, write_json_atomic
from maelre.engine.runner import run_recipe  # noqa: F401  (re-exported)


# --------------------------------------------------------------------------- command line

DEFAULT_OUT = "benchmarks/results/leaderboard.json"
DEFAULT_TABLE = "docs/benchmarks/leaderboard.md"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the leaderboard options on ``parser`` (used by ``maelre lra``)."""
    what = parser.add_argument_group("what to run")
    what.add_argument("--tasks", default=",".join(DEFAULT_TASKS), help=f"comma-separated tasks out of {', '.join(TASKS)} (default: %(default)s)")
    what.add_argument("--backbones", default=",".join(DEFAULT_BACKBONES), help="comma-separated registry names (default: %(default)s)")
    what.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="recipe override for every run (YAML value), repeatable")
    what.add_argument("--preset", choices=sorted(PRESETS), default=None, help="named override set for every run, applied before --set")
    what.add_argument("--recipes-dir", default="recipes", help="folder of the task recipes (default: %(default)s)")
    budget = parser.add_argument_group("budget (the same for every backbone)")
    budget.add_argument("--budget-steps", type=int, default=None, help="optimizer steps per run (default: the recipe's budget)")
    budget.add_argument("--max-minutes", type=float, default=None, help="training time limit per run, minutes (trainer.max_time)")
    budget.add_argument("--sweep-minutes", type=float, default=None, help="start a run only if it can end (at --max-minutes) within this many minutes")
    budget.add_argument(
        "--jobs", type=int, default=1, metavar="N",
        help="train up to N pairs at the same time, each in a child process (default: %(default)s, one after another in this process); "
        "their train seconds are then measured while they share the device",
    )  # fmt: skip
    files = parser.add_argument_group("output")
    files.add_argument("--out", default=DEFAULT_OUT, help="results JSON, rewritten after every run (default: %(default)s)")
    files.add_argument(
        "--table", default=DEFAULT_TABLE,
        help="markdown page whose generated part is rewritten, with each task's accuracy against GPU-seconds and peak memory "
        "(Pareto table; plot pareto_<task>.png beside the page) (default: %(default)s)",
    )  # fmt: skip
    files.add_argument("--run-root", default="runs/leaderboard", help="run directories: RUN_ROOT/<task>/<backbone>/version_N (default: %(default)s)")
    files.add_argument("--resume", action="store_true", help="skip (task, backbone) pairs already done in --out")
    files.add_argument("--report-only", action="store_true", help="only re-render --table from --out")
    files.add_argument(
        "--merge", nargs="+", metavar="JSON", default=None,
        help="write these results files merged into --out (a later file's row of a pair replaces an earlier one's), "
        "then re-render --table; runs nothing",
    )  # fmt: skip
    files.add_argument("--progress", action="store_true", help="show training progress bars")


def config_from_args(args: argparse.Namespace) -> SweepConfig:
    """Build a ``SweepConfig`` from parsed options (``ValueError`` on bad values)."""
    return SweepConfig(
        tasks=parse_name_list(args.tasks),
        backbones=parse_name_list(args.backbones),
        overrides=list(args.set),
        preset=args.preset,
        budget_steps=args.budget_steps,
        max_minutes=args.max_minutes,
        sweep_minutes=args.sweep_minutes,
        recipes_dir=args.recipes_dir,
        run_root=args.run_root,
        progress=args.progress,
    )


def _read_results(path: str) -> dict:
    """A leaderboard results file (``ValueError`` for another JSON file)."""
    document = read_json(path)
    if not isinstance(document, dict) or not isinstance(document.get("results"), list):
        raise ValueError(f"{path} is not a leaderboard results file (it has no list of results)")
    return document


def main(argv: list[str] | None = None) -> int:
    """Run the sweep (or ``--report-only``, or ``--merge``), write JSON and markdown; print target verdicts."""
    parser = argparse.ArgumentParser(
        prog="maelre lra",
        description="Accuracy leaderboard: every backbone on the LRA tasks (and FSDD) under the same budget, beside the published numbers.",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    # Recorded in the results; `python -m` is equivalent to benchmarks/leaderboard.py and `maelre lra`.
    command = shlex.join(["python", "-m", "maelre.bench.leaderboard", *sys.argv[1:]] if argv is None else ["maelre", "lra", *argv])
    try:
        if args.merge:
            document = merge_documents([_read_results(path) for path in args.merge], command)
            write_json_atomic(args.out, document)
        elif args.report_only:
            document = read_json(args.out)
        else:
            config = config_from_args(args)
            print(f"leaderboard: {', '.join(config.tasks)} x {', '.join(config.backbones)}", flush=True)
            document = run_sweep(
                config, args.out, command=command, resume=args.resume, jobs=args.jobs,
                on_update=lambda doc: write_report(doc, args.table), log=lambda s: print(s, flush=True),
            )  # fmt: skip
        targets = write_report(document, args.table)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    counts = {s: sum(r["status"] == s for r in document["results"]) for s in STATUSES}
    print("runs: " + (", ".join(f"{n} {s}" for s, n in counts.items() if n) or "none"))
    for t in targets:
        print(f"{t.verdict:>11}  {t.name} (goal {t.goal}): {t.detail}")  # "MISS so far" the longest
    print(f"results: {args.out}\ntable: {args.table}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
