"""Paired timing: two train steps built side by side and timed in alternating rounds, for the ratios of issue 15.

``maelre bench efficiency`` times every case on its own, one after another, so a ratio of two
rows (MAELRE over its zero-cost-merge twin, full attention over MAELRE) divides two medians
taken minutes apart. A host-bound eager step drifts more than that ratio's margin between such
moments: at N = 4K the profiler put MAELRE and its twin at 49.3 and 52.8 ms, while the benchmark's
separate runs gave ratios of 1.46-1.55 (docs/benchmarks/efficiency.md). Here both steps of a pair
stay built, and rounds alternate ``A B``, ``B A``, ... (so neither always runs first), each round
timing ``per_round`` steps of one; the ratio is the median over rounds of the two medians' ratio::

    maelre bench paired --seq-lens 4K,16K,64K --rounds 8            # eager; add --cuda-graph for graphs
    python benchmarks/paired_timing.py --seq-lens 4K,16K,64K --out benchmarks/results/paired_h200.json

It takes ``maelre bench efficiency``'s options of shape, dtype, batch policy, backbones,
--backbone-config, --cuda-graph, --warmup and --case-timeout-s (a pair's limit), and times train
steps; each MAELRE backbone gives two pairs: ``NAME / NAME.twin`` (goal <= 1.15) and
``transformer / NAME`` (speed-up; goal >= 5x eager and >= 8x with graphs at 16K, >= 20x at 64K).

``--replay 1,merge`` asks another question, eager only: does replaying the merge sites from CUDA graphs
(``maelre.layers.plan_graphs``) make MAELRE's step faster? Two processes, one per ``MAELRE_PLAN_GRAPHS``
value, cannot tell (session 24: the twin's own step moved by a third between two such runs on one
machine), so each mode's MAELRE (``maelre+mergegraphs``) is timed against MAELRE without merge graphs
(``maelre+nographs``), the same weights' shapes, in one process; a ratio under 1 is a gain.
"""
from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from maelre.bench.efficiency import add_arguments, config_from_args
from maelre.bench.efficiency_case import deadline, is_oom, make_step, ready_step, release_memory, time_step
from maelre.bench.efficiency_config import FULL_ATTENTION, MODES, BenchConfig, Step, is_maelre
from maelre.bench.efficiency_report import plan_graphs_note
from maelre.bench.efficiency_run import collect_meta
from maelre.bench.ideal import TWIN
from maelre.bench.report import write_json_atomic
from maelre.fileio import write_text_atomic
from maelre.layers import plan_graphs
from maelre.stats import paired_rounds

TWIN_GOAL = 1.15
SPEEDUP_GOALS = {(16384, False): 5.0, (16384, True): 8.0, (65536, False): 20.0, (65536, True): 20.0}
"""(N, CUDA graphs) -> full attention's step over MAELRE's, at least (issue 15's done-when)."""


def paired_ratio(a: Step, b: Step, *, rounds: int, per_round: int, warmup: int, device: torch.device) -> dict[str, Any]:
    """Time ``a`` and ``b`` in alternating rounds; ``ratio`` = median over rounds of ``a``'s median / ``b``'s.

    Returns the ratio's median, min and max over rounds and each step's median over rounds (ms),
    with the per-round medians. ``warmup`` untimed steps of each run first.
    """
    for _ in range(warmup):
        a()
        b()
    rounds_ms: dict[str, list[float]] = {"a": [], "b": []}
    for r in range(rounds):
        for key in ("a", "b") if r % 2 == 0 else ("b", "a"):
            step = a if key == "a" else b
            rounds_ms[key].append(statistics.median(time_step(step, warmup=0, repeats=per_round, device=device)))
    ratios = [x / y for x, y in zip(rounds_ms["a"], rounds_ms["b"])]
    return {
        "ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
        "a_ms": statistics.median(rounds_ms["a"]), "b_ms": statistics.median(rounds_ms["b"]),
        "a_round_ms": rounds_ms["a"], "b_round_ms": rounds_ms["b"],
    }  # fmt: skip


REPLAY_TAGS = {"1": "plangraphs", "merge": "mergegraphs", "0": "nographs"}
"""``MAELRE_PLAN_GRAPHS`` value -> the suffix of a model name built with it (``maelre+mergegraphs``)."""


def pairs_of(config: BenchConfig, replay: Sequence[str] = ()) -> list[tuple[str, str, str]]:
    """``(kind, A, B)`` for every MAELRE backbone of ``config``: ``twin`` (A = MAELRE, B = its twin) and ``speedup``
    (A = full attention, B = MAELRE); with ``replay`` modes instead, ``replay`` pairs only (A = MAELRE built with
    that ``MAELRE_PLAN_GRAPHS`` mode, B = MAELRE built without merge graphs)."""
    pairs = []
    for name in config.backbones:
        if not is_maelre(name):
            continue
        if replay:
            pairs += [("replay", f"{name}+{REPLAY_TAGS[mode]}", f"{name}+{REPLAY_TAGS['0']}") for mode in replay]
        else:
            pairs += [("twin", name, f"{name}.{TWIN}"), ("speedup", FULL_ATTENTION, name)]
    return pairs


def build_step(name: str, seq_len: int, batch: int, config: BenchConfig) -> Step:
    """The ready train step of a backbone name; ``NAME+TAG`` builds ``NAME`` with the merge graphs of ``TAG``."""
    base, _, tag = name.partition("+")
    modes = {v: k for k, v in REPLAY_TAGS.items()}
    if tag and tag not in modes:
        raise ValueError(f"{name}: unknown merge-graphs tag {tag!r}; use one of {', '.join(modes)}")
    mode = modes.get(tag)
    with plan_graphs.building(mode) if mode is not None else nullcontext():
        return ready_step(make_step(base, seq_len, batch, "train", config), config)


def goal_of(kind: str, seq_len: int, cuda_graph: bool) -> float | None:
    """The bound ``kind``'s ratio must meet at this N: at most (``twin``) or at least (``speedup``); ``None``: no goal."""
    if kind == "replay":
        return None
    return TWIN_GOAL if kind == "twin" else SPEEDUP_GOALS.get((seq_len, cuda_graph))


def goal_text(kind: str, goal: float | None) -> str:
    return "" if goal is None else (f"<= {goal:g}" if kind == "twin" else f">= {goal:g}x")


def verdict(row: dict[str, Any]) -> str:
    """PASS / MISS against the row's goal, ``-`` without one, the status when the pair did not run."""
    if row["status"] != "ok":
        return row["status"]
    if row["goal"] is None:
        return "-"
    met = row["ratio"] <= row["goal"] if row["kind"] == "twin" else row["ratio"] >= row["goal"]
    return "PASS" if met else "MISS"


def run_pairs(config: BenchConfig, out: Path, *, rounds: int, per_round: int, command: str = "", log=print,
              replay: Sequence[str] = ()) -> dict[str, Any]:
    """Time every pair of ``config`` (``pairs_of``) at every N (train steps), rewriting ``out`` atomically after each."""
    device = torch.device(config.device)
    meta = {**collect_meta(config, command), "rounds": rounds, "per_round": per_round, "replay": list(replay)}
    if replay:  # each row's names say the modes it was built with; the process's own MAELRE_PLAN_GRAPHS plays no part
        meta["plan_graphs"] = None
    document: dict[str, Any] = {"meta": meta, "results": []}
    for seq_len in config.seq_lens:
        batch = config.batch_for(seq_len)
        for kind, a_name, b_name in pairs_of(config, replay):
            row: dict[str, Any] = {"kind": kind, "a": a_name, "b": b_name, "seq_len": seq_len, "batch": batch,
                                   "goal": goal_of(kind, seq_len, config.cuda_graph), "status": "ok"}
            t0 = time.perf_counter()
            try:
                with deadline(config.case_timeout_s):
                    a, b = (build_step(name, seq_len, batch, config) for name in (a_name, b_name))
                    row.update(paired_ratio(a, b, rounds=rounds, per_round=per_round, warmup=config.warmup, device=device))
            except Exception as err:  # noqa: BLE001  (a failing pair must not end the run)
                row.update(status="oom" if is_oom(err) else "error", message=f"{type(err).__name__}: {err}"[:800])
                del err
            a = b = None  # noqa: F841  (free both models before the next pair)
            release_memory(device)
            row["wall_s"] = time.perf_counter() - t0
            row["verdict"] = verdict(row)
            document["results"].append(row)
            write_json_atomic(out, document)
            log(describe(row))
    return document


def describe(row: dict[str, Any]) -> str:
    head = f"N={row['seq_len']} {row['a']} / {row['b']}: "
    if row["status"] != "ok":
        return head + f"{row['status']} {row.get('message', '')}"
    return (head + f"{row['ratio']:.3f} (rounds {row['ratio_min']:.3f}-{row['ratio_max']:.3f}; {row['a_ms']:.1f} / {row['b_ms']:.1f} ms)"
            + (f" goal {goal_text(row['kind'], row['goal'])}: {row['verdict']}" if row["goal"] is not None else ""))


def table(document: dict[str, Any]) -> str:
    """Markdown: one line per pair and N."""
    meta = document["meta"]
    lines = [
        f"Paired timing on {meta['gpu_name']} ({meta['dtype']}, {'CUDA graphs' if meta['cuda_graph'] else 'eager'}, "
        + (f"{note}, " if (note := plan_graphs_note(meta)) else "") +
        f"{meta['batch_policy']}), {meta['rounds']} alternating rounds of {meta['per_round']} steps: `{meta['command']}`",
        "",
        "| N | A / B | ratio (median of rounds) | rounds min-max | A faster in | Wilcoxon p | A ms | B ms | goal | verdict |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in document["results"]:
        goal = goal_text(r["kind"], r["goal"])
        if r["status"] != "ok":
            lines.append(f"| {r['seq_len']} | {r['a']} / {r['b']} | {r['status']} | | | | | | {goal} | {r['verdict']} |")
            continue
        faster, rounds, p = paired_rounds(r["a_round_ms"], r["b_round_ms"])
        lines.append(f"| {r['seq_len']} | {r['a']} / {r['b']} | {r['ratio']:.3f} | {r['ratio_min']:.3f}-{r['ratio_max']:.3f} | "
                     f"{faster} of {rounds} rounds | {p:.2g} | {r['a_ms']:.1f} | {r['b_ms']:.1f} | {goal} | {r['verdict']} |")
    notes = ("A faster in: rounds where A's median step was under B's. Wilcoxon p: signed-rank test of the two "
             "steps' per-round times (two-sided); the median ratio says how much, p whether the rounds agree.")
    return "\n".join(lines) + "\n\n" + notes + "\n"


def _check_replay(parser: argparse.ArgumentParser, args: argparse.Namespace, replay: list[str]) -> None:
    """``--replay``'s refusals: what would time nothing, or the same step twice, ends here with what to change."""
    if any(mode not in ("1", "merge") for mode in replay) or len(set(replay)) != len(replay):
        parser.error(f"--replay takes 1 and/or merge, each once; got {args.replay!r}")
    if args.cuda_graph:
        parser.error("--replay times eager steps: a whole-step CUDA graph leaves the merge graphs aside; drop --cuda-graph")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if not device.startswith("cuda"):
        parser.error(f"--replay needs a CUDA device: on {device} nothing is graphed, so both sides of a pair would be the same step")
    if args.warmup < 2:
        parser.error(f"--replay needs --warmup >= 2 (a site captures its graph on its second call, outside the timed rounds); got {args.warmup}")
    if not any(is_maelre(name) for name in args.backbones.split(",")):
        parser.error(f"--replay times MAELRE backbones; --backbones {args.backbones!r} has none")


def _report_only(parser: argparse.ArgumentParser, out: Path) -> int:
    try:
        document = json.loads(out.read_text())
        text = table(document)
    except (OSError, ValueError, KeyError, TypeError) as err:
        parser.error(f"--report-only re-renders the table from a paired timing JSON; {out} could not be read as one "
                     f"({type(err).__name__}: {err}); pass its path as --out")
    write_text_atomic(out.with_suffix(".md"), text)
    print(text + f"table: {out.with_suffix('.md')}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="maelre bench paired", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    parser.add_argument("--rounds", type=int, default=8, help="alternating rounds per pair (default: %(default)s)")
    parser.add_argument("--per-round", type=int, default=5, help="timed steps of one model per round (default: %(default)s)")
    parser.add_argument("--replay", default="", help="comma-separated MAELRE_PLAN_GRAPHS modes (1, merge): time MAELRE built with "
                        "each against MAELRE built without merge graphs, in one process, instead of the twin and speedup pairs")
    parser.set_defaults(backbones="maelre", out="benchmarks/results/paired.json", seq_lens="4K,16K,64K")
    args = parser.parse_args(argv)
    command = shlex.join(["python", *sys.argv] if argv is None else ["maelre", "bench", "paired", *argv])
    if args.rounds < 2 or args.per_round < 1:
        parser.error(f"need --rounds >= 2 (alternation) and --per-round >= 1, got {args.rounds} and {args.per_round}")
    if args.report_only:  # re-render the table (e.g. with columns added since the run) from --out's results
        return _report_only(parser, Path(args.out))
    unused = [flag for flag, given in (("--resume", args.resume), ("--plot", args.plot),
                                       ("--compile", args.compile), ("--no-ideal", args.no_ideal)) if given]
    if unused or args.modes not in (",".join(MODES), "train"):  # the default, or train alone
        parser.error(f"paired timing times train steps and writes --out and its .md only; drop {', '.join(unused) or '--modes'}")
    replay = [mode for mode in args.replay.split(",") if mode]
    if replay:
        _check_replay(parser, args, replay)
    try:
        config = config_from_args(args)
    except ValueError as err:
        parser.error(str(err))
    out = Path(args.out)
    document = run_pairs(config, out, rounds=args.rounds, per_round=args.per_round, command=command, log=lambda s: print(s, flush=True),
                         replay=replay)
    text = table(document)
    write_text_atomic(out.with_suffix(".md"), text)
    print(text + f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
