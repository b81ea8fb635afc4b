"""Eager against compiled training of one recipe, at the same seed and budget (issue 15).

    python benchmarks/compile_ab.py recipes/lra_image.yaml --steps 600 --out runs/compile_ab
    python benchmarks/compile_ab.py recipes/lra_pathfinder.yaml --steps 400 --modes eager,default,reduce-overhead \\
        --set model.backbone=maelre --out runs/compile_ab_pf
    MAELRE_TRITON=0 python benchmarks/compile_ab.py recipes/scifar10.yaml --steps 1000 --modes eager,reduce-overhead \\
        --kernels pytorch,triton --set model.backbone=maelre --out runs/compile_ab_kernels

Each mode trains ``--steps`` optimizer steps from the same seed with ``maelre fit``, one after
the other (alone on the device, so the rates compare), into ``OUT/MODE``; ``eager`` is
``trainer.compile: false``, the others are ``torch.compile`` modes (``reduce-overhead`` records
CUDA graphs). ``OUT/compile_ab.json`` and ``OUT/compile_ab.md`` then give, per mode: the steady
training rate (samples/s after the first 50 steps, where compilation happens), its speed-up
over eager, the call's whole fit time (compilation included), test and best validation
accuracy and their difference from eager, and peak memory. Compiled and eager runs are not
bitwise equal (other kernels, other summation order), so the accuracy columns are the check
that compiling changes nothing that matters at this budget.

``--kernels pytorch,triton`` crosses the modes with MAELRE's two implementations of linear
attention and merging: ``pytorch`` runs the fit with ``MAELRE_TRITON=0``, ``triton`` with
``MAELRE_TRITON=1`` (the fused kernels, CUDA only); a row is then named ``MODE-triton``. The
``eager`` row (PyTorch paths) is the baseline of every speed-up and accuracy difference, so
the same table answers whether the kernels and compiling each keep accuracy.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from maelre.fileio import read_json, write_json_atomic, write_text_atomic  # noqa: E402

MODES = ("eager", "default", "reduce-overhead")
KERNELS = {"pytorch": "0", "triton": "1"}
"""``--kernels`` choices and the ``MAELRE_TRITON`` value each runs with."""


def row_name(mode: str, kernels: str) -> str:
    """A row's name: the mode, with ``-triton`` for the fused kernels (``-``: the name is also a folder that the device returns)."""
    return mode if kernels == "pytorch" else f"{mode}-{kernels}"


def fit_command(recipe: str, mode: str, steps: int, run_dir: Path, extra: list[str]) -> list[str]:
    """The ``maelre fit`` command line of one mode."""
    compile_value = "false" if mode == "eager" else mode
    sets = [f"trainer.max_steps={steps}", "trainer.max_epochs=null", f"trainer.compile={compile_value}",
            "trainer.early_stopping_patience=null", *extra]
    return [sys.executable, "-m", "maelre.cli", "fit", recipe, "--no-progress", "--run-dir", str(run_dir),
            *[arg for item in sets for arg in ("--set", item)]]


def run_fit(command: list[str], seconds: float | None, kernels: str) -> subprocess.CompletedProcess:
    """Run one mode's fit with ``kernels``; past ``seconds`` it is killed and returned with exit -9 and a note in stderr."""
    env = {**os.environ, "MAELRE_TRITON": KERNELS[kernels]}
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=seconds, env=env)
    except subprocess.TimeoutExpired as stopped:
        out, err = (part.decode(errors="replace") if isinstance(part, bytes) else (part or "") for part in (stopped.stdout, stopped.stderr))
        return subprocess.CompletedProcess(command, -9, out, err + f"\nstopped after --mode-seconds {seconds:g}")


def mode_row(mode: str, results: dict | None, error: str | None = None) -> dict:
    """One table row from a mode's ``results.json`` (``None`` with ``error`` when the run failed)."""
    if results is None:
        return {"mode": mode, "status": "error", "error": error}
    throughput = results["throughput"]
    return {
        "mode": mode, "status": "ok", "steps": results["global_step"],
        "steady_samples_per_second": throughput.get("steady_samples_per_second"),
        "samples_per_second": throughput["samples_per_second"],
        "fit_seconds": results["fit_seconds"],
        "test_accuracy": 100 * results["metrics"]["test/acc"],
        "val_best": None if results["metrics"].get("val/best_acc") is None else 100 * results["metrics"]["val/best_acc"],
        "peak_memory_gib": results["peak_memory"]["bytes"] / 2**30,
        "device": results["environment"]["device"],
    }


def compare(rows: list[dict]) -> list[dict]:
    """Add each ok row's speed-up and accuracy difference against the baseline row ``eager`` (when it ran)."""
    eager = next((r for r in rows if r["mode"] == "eager" and r["status"] == "ok"), None)
    for row in rows:
        if row["status"] != "ok" or eager is None:
            continue
        rate, base = row["steady_samples_per_second"], eager["steady_samples_per_second"]
        row["speedup"] = None if rate is None or not base else rate / base
        row["test_minus_eager"] = row["test_accuracy"] - eager["test_accuracy"]
    return rows


def table(rows: list[dict], meta: dict) -> str:
    def cell(value, fmt: str) -> str:
        return "—" if value is None else format(value, fmt)

    lines = [
        "# Eager against compiled training",
        "",
        f"Generated by `{meta['command']}` on {meta['date']}; do not edit by hand.",
        "",
        f"Recipe `{meta['recipe']}`, {meta['steps']} steps per mode from the same seed, modes run one after the other"
        f" (device: {meta['device']}). Steady rate: samples/s after the first 50 steps (compilation excluded);"
        " fit s: the whole `trainer.fit`, compilation included.",
        "",
        "| mode | steady samples/s | speed-up | fit s | test % | test - eager | best val % | peak GiB | status |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['mode']} | — | — | — | — | — | — | — | error: {r['error']} |")
            continue
        lines.append(
            f"| {r['mode']} | {cell(r['steady_samples_per_second'], '.0f')} | {cell(r.get('speedup'), '.2f')} | {r['fit_seconds']:.1f} | "
            f"{r['test_accuracy']:.2f} | {cell(r.get('test_minus_eager'), '+.2f')} | {cell(r['val_best'], '.2f')} | {r['peak_memory_gib']:.2f} | ok |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe")
    parser.add_argument("--steps", type=int, default=600, help="optimizer steps per mode (default: %(default)s)")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated, out of " + ", ".join(MODES))
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE", help="recipe override for every mode, repeatable")
    parser.add_argument("--out", type=Path, required=True, help="folder: OUT/MODE run folders, OUT/compile_ab.json and .md")
    parser.add_argument("--mode-seconds", type=float, default=None,
                        help="wall-clock limit of one mode's fit; a mode past it is a row with status error (default: none)")
    parser.add_argument("--kernels", default="pytorch",
                        help="comma-separated, out of " + ", ".join(KERNELS) + ": every mode runs with each (default: %(default)s)")
    args = parser.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        parser.error(f"unknown mode(s) {', '.join(unknown)}; use {', '.join(MODES)}")
    kernels = [k for k in args.kernels.split(",") if k]
    unknown = sorted(set(kernels) - set(KERNELS))
    if unknown or not kernels:
        parser.error(f"unknown kernels {', '.join(unknown) or '(none given)'}; use {', '.join(KERNELS)}")
    rows = []
    for kernel in kernels:
        for mode in modes:
            name = row_name(mode, kernel)
            run_dir = args.out / name
            if (run_dir / "results.json").exists():  # done in an earlier call
                rows.append({**mode_row(name, read_json(run_dir / "results.json")), "kernels": kernel})
                continue
            done = run_fit(fit_command(args.recipe, mode, args.steps, run_dir, args.sets), args.mode_seconds, kernel)
            (args.out / f"{name}.log").parent.mkdir(parents=True, exist_ok=True)
            (args.out / f"{name}.log").write_text(done.stdout + done.stderr)
            if done.returncode != 0 or not (run_dir / "results.json").exists():
                tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
                row = mode_row(name, None, f"exit {done.returncode}: {tail[0][:200]}")
            else:
                row = mode_row(name, read_json(run_dir / "results.json"))
            rows.append({**row, "kernels": kernel})
            print(f"{name}: {rows[-1]}", flush=True)
    compare(rows)
    device = next((r["device"] for r in rows if r["status"] == "ok"), "—")
    meta = {"recipe": args.recipe, "steps": args.steps, "sets": args.sets, "device": device,
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "command": "python benchmarks/compile_ab.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    write_json_atomic(args.out / "compile_ab.json", {"meta": meta, "rows": rows})
    write_text_atomic(args.out / "compile_ab.md", table(rows, meta))
    print(table(rows, meta))
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
