"""Each ``real_runs.sh`` run of a task timed alone on the GPU: the cost axis of its accuracy-against-cost view.

    python benchmarks/alone_cost.py text --steps 300 --out benchmarks/results/alone_cost_text_h200.json
    python benchmarks/alone_cost.py text --names maelre,transformer --steps 300 --out ...   # some now, the rest later

The leaderboard runs share the GPU (five to fourteen processes at once), so their wall time
says little about what one backbone costs. This trains each named run alone, one after the
other, for ``--steps`` optimizer steps from scratch: ``benchmarks/real_runs.sh TASK`` with
``NAMES=name`` and ``ROOT=--root/TASK``, so the recipe, overrides, data pipeline, optimizer and
precision are the leaderboard run's own, with the evaluation sets capped
(``data.max_eval_samples``) so that the test at the end costs little. From the run's
``results.json``:

- ``steady_step_ms``: ``batch_size * 1000 / steady samples/s``, the rate after the first
  ``--steady-after`` steps (50: warm-up, allocator growth), validation excluded. Variable-length
  tasks batch by length (LRA Text), so a step's time depends on its batch; ``--steps`` batches in
  training order sample that mix, and the row says how many it averaged. On CUDA each new
  sequence length also builds cuDNN attention plans once (140-190 ms a call on the H200), a cost
  a 20,000-step run pays once per length but a short timing averages into few steps: time such
  tasks with ``--steps 600 --steady-after 300``, past most of the (at most 32, padded to 128)
  lengths;
- ``peak_memory_bytes``: the CUDA peak of that alone run.

``real_runs_summary.py --key TASK --alone-costs OUT`` turns these into GPU-seconds (steps
times ``steady_step_ms``). ``--tag compiled --set trainer.compile=reduce-overhead`` times a
variant of the runs (rows carry the tag, folders are ``ROOT/TASK@TAG/NAME``); untagged rows
time eager steps (``trainer.compile=false`` unless ``--set`` says otherwise, though the sCIFAR-10
and Image recipes compile since session 15), and the summary reads untagged rows only, the way
the leaderboard runs trained. Rows already in ``--out`` are kept, and names with a finished run
folder are read rather than trained again, so the file can be filled over several calls.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from maelre.engine.callbacks import STEADY_WARMUP_STEPS  # noqa: E402
from maelre.fileio import read_json, write_json_atomic  # noqa: E402
from maelre.recipe import load_recipe  # noqa: E402

NAMES = ("maelre", "maelre_noconv", "transformer", "transformer_rope", "ecp", "perceiver_ar")
"""``real_runs.sh``'s default runs, the ablation included: a task's cost view needs every row timed the same way
(its diagnostics, the CLS-pooled transformers, need no cost)."""


def time_alone(task: str, name: str, steps: int, root: Path, eval_samples: int, seconds: int, extra: list[str],
               steady_after: int = STEADY_WARMUP_STEPS) -> subprocess.CompletedProcess:
    """Train run ``name`` of ``task`` alone for ``steps`` steps into ``root/name`` with ``real_runs.sh`` (``extra``: more overrides),
    its steady rate measured after ``steady_after`` steps."""
    sets = " ".join([f"trainer.max_steps={steps}", "trainer.max_epochs=null", f"data.max_eval_samples={eval_samples}",
                     "trainer.early_stopping_patience=null", f"trainer.steady_warmup_steps={steady_after}",
                     "trainer.compile=false", *extra])
    env = {**os.environ, "ROOT": str(root), "NAMES": name, "SET": sets, "CALL_SECONDS": str(seconds), "MINUTES": str(seconds / 60)}
    return subprocess.run(["bash", "benchmarks/real_runs.sh", task], env=env, capture_output=True, text=True)


def log_tail(path: Path, lines: int = 25, chars: int = 4000) -> str:
    """The last ``lines`` lines of a run's log (at most ``chars`` characters): a run that fails on the device leaves its
    traceback there, and only this file's row comes back."""
    if not path.exists():
        return "(no call.log)"
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])[-chars:]


def cost_row(task: str, name: str, run_dir: Path) -> dict:
    """The cost row of a finished alone run (``status`` says why there is no time)."""
    row = {"task": task, "name": name, "run_dir": str(run_dir)}
    if not (run_dir / "results.json").exists():
        return {**row, "status": "error", "error": f"no results.json in {run_dir}; the end of its call.log:\n{log_tail(run_dir / 'call.log')}"}
    results = read_json(run_dir / "results.json")
    batch = load_recipe(run_dir / "recipe.yaml").data.batch_size
    rate = results["throughput"].get("steady_samples_per_second")
    warmup = results["throughput"].get("steady_warmup_steps", STEADY_WARMUP_STEPS)  # absent in results written before it was configurable
    if results.get("call_ended_early"):
        return {**row, "status": "error", "error": f"the --seconds limit stopped it after {results['global_step']} steps: raise --seconds or lower --steps"}
    if not rate:
        return {**row, "status": "error", "error": f"{results['global_step']} steps: too few past the {warmup} warm-up steps for a steady rate"}
    return {
        **row, "status": "ok", "steps": results["global_step"], "steady_steps": results["global_step"] - warmup, "batch_size": batch,
        "steady_samples_per_second": rate, "steady_step_ms": 1000 * batch / rate, "peak_memory_bytes": results["peak_memory"]["bytes"],
        "device": results["environment"]["device"],
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", choices=("scifar10", "image", "text"), help="real_runs.sh task")
    parser.add_argument("--names", default=",".join(NAMES), help="comma-separated real_runs.sh run names (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps per run, more than --steady-after (default: %(default)s)")
    parser.add_argument("--steady-after", type=int, default=STEADY_WARMUP_STEPS,
                        help="steps left out of the steady rate (trainer.steady_warmup_steps; default: %(default)s). Variable-length "
                             "tasks on CUDA: past most sequence lengths (LRA Text: 300 of 600 steps), since cuDNN builds a plan per new length")
    parser.add_argument("--eval-samples", type=int, default=256, help="data.max_eval_samples of the runs (default: %(default)s)")
    parser.add_argument("--seconds", type=int, default=240, help="wall-clock limit of one run, setup included (default: %(default)s)")
    parser.add_argument("--root", type=Path, default=Path("runs/alone"), help="run folders: ROOT/TASK/NAME (default: %(default)s)")
    parser.add_argument("--out", type=Path, required=True, help="cost JSON, its rows kept and updated")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="another override for every run, repeatable, no spaces (a CPU smoke test: data.max_train_samples=64)")
    parser.add_argument("--tag", default="", help="names a variant timed with --set (e.g. compiled); rows and folders carry it")
    args = parser.parse_args(argv)
    if args.steps <= args.steady_after:
        parser.error(f"--steps must be above the {args.steady_after} warm-up steps that the steady rate leaves out (--steady-after)")
    if args.tag and not args.tag.isidentifier():
        parser.error(f"--tag {args.tag!r}: use letters, digits and underscores (it names folders)")
    names = [n for n in args.names.split(",") if n]
    old = read_json(args.out)["rows"] if args.out.exists() else []
    rows = {(r["task"], r["name"], r.get("tag", "")): r for r in old}
    label = f"{args.task}@{args.tag}" if args.tag else args.task
    for name in names:
        run_dir = args.root / label / name
        done = time_alone(args.task, name, args.steps, run_dir.parent, args.eval_samples, args.seconds, args.sets, args.steady_after)
        row = cost_row(args.task, name, run_dir)
        if args.tag:
            row = {**row, "tag": args.tag, "sets": args.sets}
        rows[args.task, name, args.tag] = row
        if row["status"] != "ok":
            row["error"] += f"; real_runs.sh exit {done.returncode}: {(done.stdout + done.stderr).strip().splitlines()[-1:]}"
        print(f"{label}/{name}: " + (f"{row['steady_step_ms']:.2f} ms/step, peak {row['peak_memory_bytes'] / 2**30:.2f} GiB"
                                         if row["status"] == "ok" else row["error"]), flush=True)
        meta = {"description": "train steps of real_runs.sh runs, each alone on the GPU (benchmarks/alone_cost.py)",
                "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "command": "python benchmarks/alone_cost.py " + " ".join(sys.argv[1:] if argv is None else argv)}
        write_json_atomic(args.out, {"meta": meta, "rows": list(rows.values())})  # after every run: a call's limit may stop the next
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
