"""Collect the merge ablation (``merge_ablation.sh``) into one JSON and a markdown table.

    python benchmarks/merge_ablation_report.py RESULTS_DIR [--cost COST_JSON ...] [--out JSON] [--table MD]

``RESULTS_DIR`` holds one leaderboard JSON per run, ``scifar10_ROW_POS_sSEED.json`` (``ROW-LEVER`` for a training
lever of ``ablation_rows.LEVERS``: one table row per row, lever and positions); ``--cost``
is the output of ``merge_ablation_cost.py`` (train-step time and peak memory of every row); give it
once per cost file, a later file's case replacing an earlier one's.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.ablation_rows import LEVERS, ROWS  # noqa: E402
from maelre.bench.report import markdown_table  # noqa: E402
from maelre.fileio import write_json_atomic, write_text_atomic  # noqa: E402

NAME = re.compile(r"scifar10_(?P<row>[a-z0-9_]+?)(?:-(?P<lever>[a-z0-9]+))?_(?P<pos>learned|rope)_s(?P<seed>\d+)\.json$")
ROW_TEXT = {name: row.text for name, row in ROWS.items() if row.ablation}


def row_text(row: str, lever: str) -> str:
    """The report's words for a run's row: the ablation row's description (or the row's name), then the lever's."""
    text = ROW_TEXT.get(row, row)
    return text if lever == "base" else f"{text}; {LEVERS[lever][1] if lever in LEVERS else lever}"


def collect(folder: Path) -> list[dict]:
    runs = []
    for path in sorted(folder.glob("scifar10_*.json")):
        match = NAME.search(path.name)
        if match is None:
            continue
        for row in json.loads(path.read_text())["results"]:
            runs.append({**match.groupdict(), "lever": match["lever"] or "base", "seed": int(match["seed"]), **{k: row.get(k) for k in (
                "status", "message", "accuracy", "val_accuracy", "steps", "epochs", "train_seconds", "gpu", "concurrent_runs")}})
    return runs


def cost_cells(cost: list[dict], row: str, pos: str) -> list[str]:
    cells = []
    for shape in ("task", "bench16k"):
        for graph in (False, True):
            hit = [c for c in cost if c["row"] == row and c["pos"] == pos and c["shape"] == shape and c["cuda_graph"] == graph]
            if not hit or hit[0]["status"] != "ok":
                cells.append("—" if not hit else hit[0]["status"])
            elif graph:
                cells.append(f"{hit[0]['median_ms']:.1f} ms")
            else:
                peak = hit[0]["peak_mem_gib"]
                cells.append(f"{hit[0]['median_ms']:.1f} ms" + ("" if peak is None else f", {peak:.2f} GiB"))
    return cells


def summarise(runs: list[dict], cost: list[dict]) -> tuple[list[dict], str]:
    groups: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for run in runs:
        groups[run["row"], run.get("lever", "base"), run["pos"]].append(run)
    order, levers = list(ROW_TEXT), list(LEVERS)

    def place(key: tuple[str, str, str]) -> tuple:
        row, lever, pos = key
        return (order.index(row) if row in order else 99, row, levers.index(lever) if lever in levers else 99, pos)

    summary, rows = [], []
    for (row, lever, pos), members in sorted(groups.items(), key=lambda kv: place(kv[0])):
        done = [m for m in members if m["accuracy"] is not None]
        accs = [m["accuracy"] for m in done]
        entry = {
            "row": row, "lever": lever, "pos": pos, "seeds": [m["seed"] for m in members],
            "test_accuracy": accs, "mean": statistics.fmean(accs) if accs else None,
            "val_accuracy": [m["val_accuracy"] for m in done], "epochs": [m["epochs"] for m in members],
            "statuses": [m["status"] for m in members],
        }
        summary.append(entry)
        mean = "—" if entry["mean"] is None else f"{entry['mean']:.2f}"
        seeds = ", ".join(f"{a:.2f}" for a in accs) or "—"
        epochs = "/".join(str(e) for e in entry["epochs"])
        if "time_limit" in entry["statuses"]:  # the run stopped before its epoch budget: the cosine schedule had not ended
            epochs += " (time limit)"
        cells = cost_cells(cost, row, pos) if lever == "base" else ["—"] * 4  # the cost rows time the base recipe
        rows.append([row_text(row, lever), pos, mean, seeds, epochs, *cells])
    header = ["row", "positions", "test acc % (mean)", "per seed", "epochs",
              "N=1024 step, peak (eager)", "N=1024 step (graph)", "N=16K step, peak (eager)", "N=16K step (graph)"]
    return summary, markdown_table([dict(zip(header, r)) for r in rows], header, {h: str for h in header})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path)
    parser.add_argument("--cost", type=Path, action="append", default=[], help="merge_ablation_cost.py output (repeatable)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/merge_ablation_h200.json"))
    parser.add_argument("--table", type=Path, default=None, help="markdown file for the table (default: --out with .md)")
    args = parser.parse_args(argv)
    runs = collect(args.results)
    if not runs:
        print(f"no scifar10_ROW_POS_sSEED.json files in {args.results}", file=sys.stderr)
        return 2
    missing = [str(path) for path in args.cost if not path.exists()]
    if missing:
        print(f"cost file(s) not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    cost = [case for path in reversed(args.cost) for case in json.loads(path.read_text())["rows"]]  # latest first: cost_cells takes the first hit
    summary, table = summarise(runs, cost)
    write_json_atomic(args.out, {"runs": runs, "summary": summary, "cost": cost})
    write_text_atomic(args.table or args.out.with_suffix(".md"), table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
