"""Efficiency benchmark: throughput, peak memory and attention FLOPs of every backbone vs N.

For each registered backbone (same width, depth, heads and MLP ratio), each sequence
length N and each mode it measures:

* ``train``: tokens/s of a full step (forward, linear head + cross-entropy on random
  labels, backward, AdamW step) on random tokens ``[B, N, D]`` with ``mask=None``;
* ``infer``: tokens/s of the forward pass under ``torch.inference_mode()``;
* peak ``torch.cuda.max_memory_allocated`` of the case (model, optimizer state,
  inputs and activations), in GiB;
* the backbone's own attention-FLOPs model and its ratio to the full-attention
  transformer at the same N.

The batch comes from a fixed token budget per step (``B = max(1, budget // N)``, the
same for every backbone at a given N) unless ``--batch`` fixes it. Cases run N-major
(every backbone at 1K, then at 2K, ...) so a run cut short by ``--time-budget-s``
still compares all backbones at the lengths it reached. Results are rewritten
atomically after every case; ``--resume`` continues a run that died.

Run ``python benchmarks/efficiency.py --help`` (or ``maelre bench efficiency``).
"""
from __future__ import annotations


import argparse
import shlex
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from maelre.bench.efficiency_case import (  # noqa: F401  (re-exported)
    CaseTimeout,
    bench_autocast,
    build_backbone,
    capture_step,
    deadline,
    is_oom,
    make_step,
    measure_case,
    release_memory,
    time_step,
)
from maelre.bench.efficiency_config import (  # noqa: F401  (re-exported)
    DEFAULT_BACKBONE_CONFIGS,
    DEFAULT_SEQ_LENS,
    DTYPES,
    FULL_ATTENTION,
    MODES,
    RESULT_KEYS,
    RESUME_KEYS,
    SHARED_KEYS,
    STATUSES,
    BenchConfig,
    resolve_backbone_configs,
)
from maelre.bench.efficiency_report import _fmt_n, render_markdown, vs_twin, write_reports  # noqa: F401  (re-exported)
from maelre.bench.efficiency_run import (  # noqa: F401  (re-exported)
    AttentionCost,
    case_key,
    check_resumable,
    collect_meta,
    describe_row,
    empty_row,
    run_benchmark,
    run_case,
)
from maelre.bench.efficiency_targets import evaluate_targets  # noqa: F401  (re-exported)
from maelre.bench.report import read_json
from maelre.bench.targets import TargetCheck  # noqa: F401  (re-exported)


# --------------------------------------------------------------------------- command line

DEFAULT_OUT = "benchmarks/results/efficiency_h100.json"
DEFAULT_TABLE = "docs/benchmarks/efficiency_table.md"


def parse_seq_lens(text: str) -> list[int]:
    """``"1K,2k,4096"`` -> ``[1024, 2048, 4096]`` (K = 1024)."""
    lens = []
    for item in text.split(","):
        item = item.strip()
        scale = 1024 if item[-1:].lower() == "k" else 1
        digits = item[:-1] if scale > 1 else item
        if not digits.isdigit() or int(digits) == 0:
            raise ValueError(f"bad sequence length {item!r} in {text!r}; use positive integers or K-suffixed values, e.g. 1K,2K,4096")
        lens.append(int(digits) * scale)
    return lens


def parse_name_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def parse_backbone_configs(items: Iterable[str]) -> dict[str, dict[str, Any]]:
    """``["ecp:segment_size=128", "masformer:full_layers=[0, 4]"]`` -> per-backbone dicts.

    Values are read as YAML scalars/lists (``128`` -> int, ``true`` -> bool, ``null`` -> None).
    """
    configs: dict[str, dict[str, Any]] = {}
    for item in items:
        name, sep, assignment = item.partition(":")
        key, eq, value = assignment.partition("=")
        if not sep or not eq or not name.strip() or not key.strip():
            raise ValueError(f"bad --backbone-config {item!r}; expected NAME:KEY=VALUE, e.g. ecp:segment_size=256")
        try:
            parsed = yaml.safe_load(value) if value.strip() else value
        except yaml.YAMLError as err:
            raise ValueError(f"bad value in --backbone-config {item!r}: {err}") from err
        configs.setdefault(name.strip(), {})[key.strip()] = parsed
    return configs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the efficiency-benchmark options on ``parser`` (used by ``maelre bench efficiency``)."""
    what = parser.add_argument_group("what to measure")
    what.add_argument("--backbones", default=None, help="comma-separated registry names (default: every registered backbone)")
    what.add_argument("--seq-lens", default=",".join(_fmt_n(n) for n in DEFAULT_SEQ_LENS), help="sequence lengths, K = 1024 (default: %(default)s)")
    what.add_argument("--modes", default=",".join(MODES), help="train and/or infer (default: %(default)s)")
    what.add_argument("--dim", type=int, default=256, help="width shared by every backbone (default: %(default)s)")
    what.add_argument("--depth", type=int, default=8, help="blocks (default: %(default)s)")
    what.add_argument("--heads", type=int, default=8, help="attention heads (default: %(default)s)")
    what.add_argument("--mlp-ratio", type=float, default=4.0, help="MLP width / dim (default: %(default)s)")
    defaults = "; ".join(f"{n}:" + ",".join(f"{k}={v}" for k, v in c.items()) for n, c in DEFAULT_BACKBONE_CONFIGS.items())
    what.add_argument(
        "--backbone-config",
        action="append",
        default=[],
        metavar="NAME:KEY=VALUE",
        help=f"extra config of one backbone, repeatable (defaults: {defaults})",
    )
    how = parser.add_argument_group("how to measure")
    how.add_argument("--tokens-per-batch", type=int, default=65536, help="token budget per step: batch = max(1, budget // N) (default: %(default)s)")
    how.add_argument("--batch", type=int, default=None, help="fixed batch at every N instead of the token budget")
    how.add_argument("--dtype", choices=sorted(DTYPES), default="bf16", help="autocast precision (default: %(default)s)")
    how.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda if available; CPU only checks the harness)")
    how.add_argument("--warmup", type=int, default=3, help="untimed steps per case (default: %(default)s)")
    how.add_argument("--repeats", type=int, default=10, help="timed steps per case (default: %(default)s)")
    how.add_argument("--compile", action="store_true", help="torch.compile the backbone (compile time reported apart)")
    how.add_argument("--cuda-graph", action="store_true", help="capture each step in a CUDA graph and time replays (capture time reported as compile s)")
    how.add_argument("--time-budget-s", type=float, default=420.0, help="start no case after this many seconds, 0 = no limit (default: %(default)s)")
    how.add_argument("--case-timeout-s", type=float, default=180.0, help="abandon a case after this many seconds, 0 = no limit (default: %(default)s)")
    how.add_argument("--num-classes", type=int, default=10, help="classes of the random-label head (default: %(default)s)")
    how.add_argument("--seed", type=int, default=0)
    how.add_argument("--no-ideal", action="store_true", help="skip the zero-cost-merge twin and attention-free floor rows of MAELRE backbones")
    files = parser.add_argument_group("output")
    files.add_argument("--out", default=DEFAULT_OUT, help="results JSON, rewritten after every case (default: %(default)s)")
    files.add_argument("--plot", default=None, help="plot PNG (default: --out with .png)")
    files.add_argument("--table", default=DEFAULT_TABLE, help="markdown table with targets (default: %(default)s)")
    files.add_argument("--resume", action="store_true", help="keep the cases already in --out and run only the rest")
    files.add_argument("--report-only", action="store_true", help="only re-render table and plot from --out")


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    """Build a ``BenchConfig`` from parsed options (``ValueError`` on bad values)."""
    kwargs: dict[str, Any] = {}
    if args.backbones:
        kwargs["backbones"] = parse_name_list(args.backbones)
    if args.device:
        kwargs["device"] = args.device
    return BenchConfig(
        seq_lens=parse_seq_lens(args.seq_lens),
        modes=parse_name_list(args.modes),
        dim=args.dim,
        depth=args.depth,
        heads=args.heads,
        mlp_ratio=args.mlp_ratio,
        backbone_configs=parse_backbone_configs(args.backbone_config),
        tokens_per_batch=args.tokens_per_batch,
        batch=args.batch,
        dtype=args.dtype,
        warmup=args.warmup,
        repeats=args.repeats,
        compile=args.compile,
        cuda_graph=args.cuda_graph,
        time_budget_s=args.time_budget_s if args.time_budget_s > 0 else None,
        case_timeout_s=args.case_timeout_s if args.case_timeout_s > 0 else None,
        num_classes=args.num_classes,
        seed=args.seed,
        ideal=not args.no_ideal,
        **kwargs,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or ``--report-only``), write JSON, table and plot; print target verdicts."""
    parser = argparse.ArgumentParser(
        prog="maelre bench efficiency",
        description="Throughput, peak memory and attention FLOPs of every backbone vs sequence length.",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    command = shlex.join(["python", *sys.argv] if argv is None else ["maelre", "bench", "efficiency", *argv])
    out = Path(args.out)
    plot = Path(args.plot) if args.plot else out.with_suffix(".png")
    try:
        if args.report_only:
            document = read_json(out)
        else:
            config = config_from_args(args)
            print(f"efficiency benchmark on {config.device}: {', '.join(config.backbones)}; {config.batch_policy()}", flush=True)
            document = run_benchmark(config, out, command=command, resume=args.resume, log=lambda s: print(s, flush=True))
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    targets = write_reports(document, args.table, plot)
    counts = {s: sum(r["status"] == s for r in document["results"]) for s in STATUSES}
    print("cases: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
    for t in targets:
        print(f"{t.verdict:>12}  {t.name} (goal {t.goal}): {t.detail}")
    print(f"results: {out}\ntable: {args.table}\nplot: {plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
