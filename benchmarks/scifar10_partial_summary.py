"""Summarise the resumable sCIFAR-10 leaderboard runs into one JSON (rows with validation curves).

    python benchmarks/scifar10_partial_summary.py --concurrent 5

Each run folder (``benchmarks/results/scifar10_partial_h200/NAME``) holds the ``results.json``
of its latest device call: test accuracy of the best-validation weights so far, the whole
validation history (restored from the checkpoint), and that call's training seconds. The
summary keeps a ledger of calls per run: a call is added when the run's global step has
moved past the last call recorded, so running this twice after one call changes nothing.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from maelre.fileio import write_json_atomic  # noqa: E402

ROOT = Path("benchmarks/results/scifar10_partial_h200")
OUT = Path("benchmarks/results/scifar10_partial_h200.json")


def summarise_run(run_dir: Path, previous: dict | None, concurrent: int, budget: int, gpu: str) -> dict:
    """One summary row for a run folder; ``previous`` is its row from the last summary (or None)."""
    result = json.loads((run_dir / "results.json").read_text())
    calls = list((previous or {}).get("calls", []))
    if previous and not calls:  # summaries written before the ledger existed: their one call
        calls = [{"steps": [0, previous["steps"]], "train_seconds": previous["train_seconds_shared"],
                  "concurrent_runs": previous.get("concurrent_runs", concurrent)}]
    start = calls[-1]["steps"][1] if calls else 0
    step = result["global_step"]
    if step > start:
        calls.append({"steps": [start, step], "train_seconds": round(result["throughput"]["train_seconds"], 1),
                      "concurrent_runs": concurrent})
    history = [h for h in result["history"] if h.get("val/acc") is not None]
    return {
        "name": run_dir.name,
        "partial": result["epochs"] < budget,
        "epochs_done": result["epochs"],
        "epochs_budget": budget,
        "steps": step,
        "test_accuracy": round(100 * result["metrics"]["test/acc"], 2),
        "val_best": round(100 * result["metrics"]["val/best_acc"], 2),
        "train_seconds_shared": round(sum(c["train_seconds"] for c in calls), 1),
        "calls": calls,
        "peak_memory_mib": round(result["peak_memory"]["bytes"] / 2**20),
        "val_curve": [[h["epoch"], round(100 * h["val/acc"], 2)] for h in history],
        "gpu": gpu,
        "run_dir": str(run_dir),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=ROOT, help="folder of run folders (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=OUT, help="summary JSON, read first for the call ledger (default: %(default)s)")
    parser.add_argument("--concurrent", type=int, required=True, help="runs that shared the GPU in the latest call")
    parser.add_argument("--budget", type=int, default=100, help="epoch budget of every run (default: %(default)s)")
    parser.add_argument("--gpu", default="NVIDIA H200")
    args = parser.parse_args(argv)
    old = json.loads(args.out.read_text()) if args.out.exists() else {"rows": []}
    previous = {row["name"]: row for row in old["rows"]}
    runs = sorted(p.parent for p in args.root.glob("*/results.json"))
    if not runs:
        print(f"no run folders with results.json under {args.root}", file=sys.stderr)
        return 2
    rows = [summarise_run(run, previous.get(run.name), args.concurrent, args.budget, args.gpu) for run in runs]
    minutes = max(sum(c["train_seconds"] for c in row["calls"]) for row in rows) / 60
    partial = any(row["partial"] for row in rows)
    status = (f"{'partial' if partial else 'complete'}: {minutes:.1f} GPU-minutes so far of a {args.budget}-epoch budget, "
              f"runs sharing one GPU; resume with benchmarks/scifar10_resume.sh")
    write_json_atomic(args.out, {"task": old.get("task", "scifar10 (real CIFAR-10, ECP setting, recipes/scifar10.yaml)"),
                                 "status": status, "rows": rows})
    for row in rows:
        print(f"{row['name']:18s} {row['epochs_done']:3d}/{row['epochs_budget']} epochs  test {row['test_accuracy']:.2f}  "
              f"val best {row['val_best']:.2f}  {row['train_seconds_shared']:.0f} s shared")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
