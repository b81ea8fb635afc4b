"""Helpers of ``benchmarks/lra_learn.sh`` (GPU runs of issue 14, resumed over many device calls).

    python benchmarks/lra_learn.py data ROOT DIFFICULTY [DIFFICULTY ...]  # Pathfinder-32 folders, LRA's 200,000 images each
    python benchmarks/lra_learn.py listops ROOT                         # ListOps TSVs, LRA's 96,000 / 2,000 / 2,000
    python benchmarks/lra_learn.py status RUN_DIR MAX_STEPS [--committed CURVES]  # prints new | resume | done | lost
    python benchmarks/lra_learn.py prune RUN_DIR [--drop-checkpoints]    # keep what a later call needs, nothing more
    python benchmarks/lra_learn.py curves GROUP_DIR OUT_JSON             # one JSON of every run's curves and results
    python benchmarks/lra_learn.py plot OUT_PNG FILE:RUN=LABEL [...] [--title T] [--from-step N]  # validation accuracy against step
    python benchmarks/lra_learn.py pack OUT_PREFIX PATH [PATH ...] [--base DIR]  # tars under 15 MiB; a bigger folder in parts
    python benchmarks/lra_learn.py rows GROUP_DIR TASK OUT_JSON [--concurrent N] [--gpu NAME] [--name RUN=ROW] [--curves JSON]  # the group's fits as leaderboard rows

A run directory is what ``maelre fit/pretrain --run-dir`` writes. Curves come from the CSV
logs of every call (one ``logs/version_N`` per call), merged by step.
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import math
import os
import shutil
from pathlib import Path

LRA_PATHFINDER_IMAGES = 200_000  # LRA's pathfinder32 folder per difficulty (split 80/10/10 when read)
PACK_LIMIT = 15 * 2**20  # a device call returns at most 8 files of 16 MiB; leave room for the tar headers


def cmd_data(root: Path, difficulties: list[str], n: int, seed: int) -> None:
    from modalities.datasets.pathfinder import DIFFICULTIES, generate_pathfinder, write_pathfinder_folder

    for difficulty in difficulties:
        if (root / difficulty / "metadata").is_dir():
            continue
        samples = generate_pathfinder(n, size=32, seed=(seed, DIFFICULTIES[difficulty]), n_jobs=os.cpu_count() or 1,
                                      contour_length=DIFFICULTIES[difficulty])
        write_pathfinder_folder(root, samples, difficulty=difficulty)
        print(f"wrote {n} images to {root / difficulty}")


def cmd_listops(root: Path, n: int, seed: int) -> None:
    """The examples ``load_listops(seed=seed)`` generates (LRA's settings), written once in LRA's TSV layout."""
    from modalities.datasets.lra import LISTOPS_SPLIT_FILES
    from modalities.datasets.listops import generate_listops, write_listops_tsv

    if all((root / name).is_file() for name in LISTOPS_SPLIT_FILES.values()):
        return
    n_eval = max(1, n // 50)  # LRA: 2,000 of 100,000 each for validation and test
    samples = generate_listops(n, seed)
    parts = {"train": samples[: n - 2 * n_eval], "val": samples[n - 2 * n_eval : n - n_eval], "test": samples[n - n_eval :]}
    for split, name in LISTOPS_SPLIT_FILES.items():
        write_listops_tsv(root / name, parts[split])
    print(f"wrote {n} ListOps examples to {root}")


def _results(run: Path) -> dict | None:
    path = run / "results.json"
    return json.loads(path.read_text()) if path.is_file() else None


def committed_step(curves: Path, run: Path) -> int:
    """The newest step that the committed curves file records for ``run`` (``.../BACKBONE/PHASE``), 0 if none."""
    if not curves.is_file():
        return 0
    entry = json.loads(curves.read_text()).get("runs", {}).get(f"{run.parent.name}/{run.name}") or {}
    return max(entry.get("global_step") or 0, entry.get("checkpoint_step") or 0)


def cmd_status(run: Path, max_steps: int, committed: Path | None = None) -> str:
    """``done``, ``resume`` or ``new``; ``lost`` when the run has no checkpoint here but ``committed`` curves say it trained.

    ``lost`` is what a bare device machine sees when the run folder was not carried in: starting
    the run afresh would waste the call and, once returned, replace the real state with a younger one.
    """
    results = _results(run)
    if results is not None and results.get("global_step", 0) >= max_steps:
        return "done"
    if any((run / "checkpoints").glob("step-*")):
        return "resume"
    if committed is not None and committed_step(committed, run) > 0:
        return "lost"
    return "new"


def cmd_prune(run: Path, drop_checkpoints: bool) -> None:
    """Keep results, CSV logs, the newest step checkpoint and the best weights (no training state).

    Also drops the ``.tmp-*`` folders of a checkpoint write that a kill cut short (the run
    has ended; ``maelre fit`` would delete them at its next start anyway).
    """
    shutil.rmtree(run / "logs" / "tensorboard", ignore_errors=True)
    for tb in (run / "logs").glob("version_*/tensorboard"):
        shutil.rmtree(tb, ignore_errors=True)
    checkpoints = run / "checkpoints"
    for partial in checkpoints.glob(".tmp-*"):
        shutil.rmtree(partial, ignore_errors=True)
    if drop_checkpoints:
        shutil.rmtree(checkpoints, ignore_errors=True)
        return
    steps = sorted(checkpoints.glob("step-*"))
    for old in steps[:-1]:
        shutil.rmtree(old, ignore_errors=True)
    (checkpoints / "best" / "training_state.pt").unlink(missing_ok=True)


def _curve(run: Path) -> list[dict]:
    """Per step: the latest ``train/loss_step`` and any ``val/acc``, ``val/loss`` logged, over all calls."""
    rows: dict[int, dict] = {}
    for metrics in sorted(run.glob("logs/version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1])):
        with metrics.open(newline="") as f:
            for line in csv.DictReader(f):
                step = int(line["step"])
                for key in ("train/loss_step", "val/acc", "val/loss"):
                    value = line.get(key)
                    if value not in (None, "") and math.isfinite(float(value)):
                        rows.setdefault(step, {"step": step})[key.removesuffix("_step")] = float(value)
    return [rows[s] for s in sorted(rows)]


def _checkpoint_step(run: Path) -> int | None:
    """Step of the newest step checkpoint: past ``results.json``'s ``global_step`` when a SIGTERM ended the last call before testing."""
    steps = sorted(run.glob("checkpoints/step-*"))
    return int(steps[-1].name.removeprefix("step-")) if steps else None


def cmd_curves(group: Path, out: Path) -> None:
    runs = {}
    for results_file in sorted(group.glob("*/*/results.json")):
        run = results_file.parent
        results = json.loads(results_file.read_text())
        runs[f"{run.parent.name}/{run.name}"] = {
            "backbone": results.get("backbone"),
            "phase": run.name,
            "global_step": results.get("global_step"),
            "checkpoint_step": _checkpoint_step(run),
            "metrics": results.get("metrics"),
            "throughput": results.get("throughput"),
            "initialised_from": results.get("initialised_from"),
            "curve": _curve(run),
        }
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"group": group.name, "runs": runs}, indent=1) + "\n")
    os.replace(tmp, out)
    for name, run in runs.items():
        metrics = run["metrics"] or {}
        key = "test/acc" if metrics.get("test/acc") is not None else "val/best_masked_acc"
        value = metrics.get(key)
        behind = f" (checkpoint at step {run['checkpoint_step']})" if (run["checkpoint_step"] or 0) > (run["global_step"] or 0) else ""
        print(f"{name}: step {run['global_step']}, {key} {value if value is None else round(value, 4)}{behind}")


def cmd_plot(out: Path, specs: list[str], title: str | None = None, metric: str = "val/acc", from_step: int = 0) -> None:
    """Draw ``metric`` (in percent) against the step for runs of curves files: one line per ``FILE:RUN=LABEL``.

    ``FILE`` is a curves JSON (``cmd_curves``), ``RUN`` a run in it (``transformer/fit``), ``LABEL`` the line's name;
    points before ``from_step`` are left out (the first validations, at chance, squeeze the scale).
    """
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from maelre.bench.report import plot_series_grid

    points = []
    for spec in specs:
        where, sep, label = spec.rpartition("=")
        file, colon, run = where.rpartition(":")
        if not (sep and colon and file and run and label):
            raise SystemExit(f"plot: {spec!r} is not FILE:RUN=LABEL (e.g. curves.json:transformer/fit=transformer)")
        runs = json.loads(Path(file).read_text()).get("runs") or {}
        if run not in runs:
            raise SystemExit(f"plot: {file} has no run {run!r}; it has {', '.join(sorted(runs)) or 'none'}")
        curve = [p for p in runs[run].get("curve") or [] if p.get(metric) is not None and p["step"] >= from_step]
        if not curve:
            raise SystemExit(f"plot: run {run!r} of {file} logged no {metric} from step {from_step}")
        points += [{"step": p["step"], "value": 100 * p[metric], "run": label} for p in curve]
    plot_series_grid(points, out, x="step", metrics=[("value", f"{metric} (%)")], series="run", logx=False, logy=False, title=title)
    print(f"plot: {out} ({len(specs)} runs, {len(points)} points)")


def _best_validation(run: Path) -> float | None:
    """``val/acc`` of the run's best checkpoint, in percent (``None`` without one).

    Results written before 2026-12-03 (commit 4ce6ce9) give as ``val/best_acc`` the best of the
    validations at epoch ends only; the best checkpoint holds the best of all of them.
    """
    meta = run / "checkpoints" / "best" / "meta.json"
    if not meta.is_file():
        return None
    value = json.loads(meta.read_text()).get("metrics", {}).get("val/acc")
    return None if value is None else 100 * value


def cmd_rows(group: Path, task: str, out: Path, concurrent: int, gpu: str = "NVIDIA H200", data_seed: int = 0,
             names: dict[str, str] | None = None, curves: Path | None = None) -> None:
    """Write the ``fit`` runs of ``group`` as leaderboard rows (``maelre lra --merge`` takes them).

    A run short of its step budget is a ``time_limit`` row that says how far it got; its
    ``train_seconds`` is left empty, since a run resumed over several shared calls records only
    its latest call's. ``gpu`` names the device the runs trained on (their results say only
    ``cuda:0``); ``data_seed`` is the seed ``data``/``listops`` drew the generated folder with.
    ``names`` maps a run's folder name to its row's backbone name: a variant (``maelre`` with its
    value convolution off: ``{"maelre": "maelre_noconv"}``) gets its own row instead of replacing
    the backbone's. The validation accuracy is the best checkpoint's where there is one.

    ``curves`` (the group's ``lra_learn/GROUP_h200.json``, made on the device at the end of each call):
    where it records a run further on than the run folder (a call whose folders did not come back,
    but whose curves did), the row takes that call's step count, status and test metrics, and says so.
    """
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from maelre.bench.lra_results import DESCRIPTION, PARTIAL, empty_row, fill_from_recipe, fill_from_results
    from maelre.bench.lra_tasks import GENERATED_DATASETS, TASKS
    from maelre.fileio import write_json_atomic
    from maelre.recipe import load_recipe

    rows = []
    recorded = _curves_of(curves, group.name)
    for results_file in sorted(group.glob("*/fit/results.json")):
        run = results_file.parent
        recipe, results = load_recipe(run / "recipe.yaml"), json.loads(results_file.read_text())
        later = _later_in_curves(recorded, run, results)
        if later is not None:
            results = {**results, "global_step": later["global_step"], "metrics": later["metrics"], "call_ended_early": False}
        backbone = (names or {}).get(run.parent.name, run.parent.name)
        row = empty_row(task, backbone, recipe=str(run / "recipe.yaml"),
                        command=f"bash benchmarks/lra_learn.sh (group {group.name}, run {run.parent.name}, resumed over device calls)")
        fill_from_recipe(row, TASKS[task], recipe)
        fill_from_results(row, recipe, results, gpu=gpu)
        if recipe.dataset_name() in GENERATED_DATASETS:  # read from a folder that `data`/`listops` above drew with our generator
            row.update(data="generated", dataset=f"{recipe.dataset_name()} (generated by lra_learn.py at LRA's sizes, seed {data_seed})")
        best = _best_validation(run)
        if later is not None and later["metrics"].get("val/best_acc") is not None:  # the curves' run may have found a better one
            best = max(best or 0.0, 100 * later["metrics"]["val/best_acc"])
        if best is not None:
            row["val_accuracy"] = best
        planned = row["budget"]["planned_steps"]
        if planned is not None and row["steps"] < planned:
            row.update(status="time_limit", message=f"{PARTIAL} {row['steps']} of {planned} steps so far; resumes with lra_learn.sh")
        row.update(train_seconds=None, concurrent_runs=concurrent, run_dir=str(run),
                   date=dt.datetime.fromtimestamp(results_file.stat().st_mtime, dt.timezone.utc).date().isoformat())
        if later is not None:
            row["message"] = (f"{row['message']} " if row["message"] else "") + (
                f"steps and test from the device's curves ({curves}): the run folder here stops at step "
                f"{later['folder_step']}, the last call's state did not come back")
        rows.append(row)
    if not rows:
        raise SystemExit(f"no */fit/results.json under {group}")
    command = f"python benchmarks/lra_learn.py rows {group} {task} OUT" + "".join(f" --name {k}={v}" for k, v in (names or {}).items())
    command += f" --curves {curves}" if curves is not None else ""
    write_json_atomic(out, {"meta": {"description": DESCRIPTION, "commands": [command]},
                            "results": rows})
    for row in rows:
        print(f"{row['backbone']}: {row['accuracy']:.2f} % test, {row['steps']} steps, {row['status']}")


def _curves_of(curves: Path | None, group: str) -> dict:
    """The runs that the curves JSON of ``group`` records (``{}`` without one); another group's curves are refused."""
    if curves is None:
        return {}
    document = json.loads(curves.read_text())
    if document.get("group") not in (None, group):
        raise SystemExit(f"{curves} holds the curves of group {document['group']!r}, not {group!r}: pass that group's curves")
    return document.get("runs") or {}


def _later_in_curves(recorded: dict, run: Path, results: dict) -> dict | None:
    """The curves' record of ``run`` (``BACKBONE/fit``) where it is further on than ``results`` and tested, else ``None``."""
    record = recorded.get(f"{run.parent.name}/{run.name}") or {}
    metrics = record.get("metrics") or {}
    if (record.get("global_step") or 0) <= (results.get("global_step") or 0) or metrics.get("test/acc") is None:
        return None
    return {**record, "metrics": metrics, "folder_step": results["global_step"]}


def _device_xfer():
    """benchmarks/device_xfer.py, loaded by path (benchmarks/ is no package)."""
    import importlib.util
    import sys

    if "device_xfer" not in sys.modules:
        spec = importlib.util.spec_from_file_location("device_xfer", Path(__file__).with_name("device_xfer.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules["device_xfer"] = module
        spec.loader.exec_module(module)
    return sys.modules["device_xfer"]


def cmd_pack(prefix: Path, paths: list[Path], base: Path | None = None, limit: int = PACK_LIMIT) -> list[Path]:
    """Pack ``paths`` into ``PREFIX_1.tar``, ``PREFIX_2.tar``, ... (``benchmarks/device_xfer.py pack``).

    Members are stored under their path relative to ``base``, else under their own name.
    Folders under ``limit`` share tars, first fit by decreasing size, so that few files come
    back from a device call; a larger folder becomes one tar cut into parts of at most
    ``limit`` (``PREFIX_N.tar.001``, ...) and a manifest of their sizes and sha256
    (``device_xfer.py unpack`` checks and joins them). Returns the files written.
    """
    return [f for s in _device_xfer().pack(prefix, [p for p in paths if p.exists()], base, limit) for f in s.files]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("data")
    p.add_argument("root", type=Path)
    p.add_argument("difficulties", nargs="+")
    p.add_argument("--n", type=int, default=LRA_PATHFINDER_IMAGES)
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("listops")
    p.add_argument("root", type=Path)
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("status")
    p.add_argument("run", type=Path)
    p.add_argument("max_steps", type=int)
    p.add_argument("--committed", type=Path, help="the group's committed curves: a run they record that has no checkpoint here is 'lost'")
    p = sub.add_parser("prune")
    p.add_argument("run", type=Path)
    p.add_argument("--drop-checkpoints", action="store_true")
    p = sub.add_parser("plot")
    p.add_argument("out", type=Path, help="the PNG")
    p.add_argument("specs", nargs="+", metavar="FILE:RUN=LABEL", help="a run of a curves JSON and its line's name")
    p.add_argument("--title", default=None)
    p.add_argument("--metric", default="val/acc", help="a metric the curves logged (default: %(default)s)")
    p.add_argument("--from-step", type=int, default=0, help="leave out the points before this step (default: %(default)s)")
    p = sub.add_parser("curves")
    p.add_argument("group", type=Path)
    p.add_argument("out", type=Path)
    p = sub.add_parser("pack")
    p.add_argument("prefix", type=Path)
    p.add_argument("paths", type=Path, nargs="+")
    p.add_argument("--base", type=Path, default=None, help="store members relative to this folder (default: by their own name)")
    p = sub.add_parser("rows")
    p.add_argument("group", type=Path)
    p.add_argument("task")
    p.add_argument("out", type=Path)
    p.add_argument("--concurrent", type=int, default=4, help="runs that shared the GPU (default: %(default)s)")
    p.add_argument("--gpu", default="NVIDIA H200", help="the device the runs trained on (default: %(default)s)")
    p.add_argument("--data-seed", type=int, default=0, help="the seed of the generated data folder (default: %(default)s, as `data`)")
    p.add_argument("--name", action="append", default=[], metavar="RUN=ROW",
                   help="the row name of a run folder, for a variant (e.g. maelre=maelre_noconv); repeatable")
    p.add_argument("--curves", type=Path, default=None,
                   help="the group's curves JSON (lra_learn/GROUP_h200.json): runs it records further on than their folder take its steps and test")
    args = parser.parse_args()
    if args.command == "data":
        cmd_data(args.root, args.difficulties, args.n, args.seed)
    elif args.command == "listops":
        cmd_listops(args.root, args.n, args.seed)
    elif args.command == "status":
        print(cmd_status(args.run, args.max_steps, args.committed))
    elif args.command == "prune":
        cmd_prune(args.run, args.drop_checkpoints)
    elif args.command == "curves":
        cmd_curves(args.group, args.out)
    elif args.command == "plot":
        cmd_plot(args.out, args.specs, args.title, args.metric, args.from_step)
    elif args.command == "rows":
        names = dict(item.split("=", 1) for item in args.name if "=" in item)
        if len(names) != len(args.name):
            parser.error(f"--name takes RUN=ROW, got {args.name}")
        cmd_rows(args.group, args.task, args.out, args.concurrent, args.gpu, args.data_seed, names, args.curves)
    else:
        cmd_pack(args.prefix, args.paths, args.base)


if __name__ == "__main__":
    main()
